"""gunicorn server hooks, for precise draining under gunicorn.

Use them as a config module, or import them into your own ``gunicorn.conf.py``::

    gunicorn -c python:meshware.integrations.gunicorn -w 4 app:app

Without them meshware still works under gunicorn (each worker registers itself, also with
``--preload``); with them, the SIGTERM handler of every worker (sync, gthread, uvicorn workers)
is wrapped right after gunicorn installs it, so a worker is drained and withdrawn *before* it
stops accepting connections.
"""

from __future__ import annotations

from typing import Any

from meshware._member import _members

__all__ = ["post_worker_init", "worker_exit", "worker_int"]


def post_worker_init(worker: Any) -> None:
    """Wrap the worker's signal handlers (gunicorn has just installed them)."""
    for member in list(_members):
        member.install_signal_handlers()


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT in a worker: drain and withdraw."""
    for member in list(_members):
        member.drain()


def worker_exit(server: Any, worker: Any) -> None:
    """A worker exits: withdraw and revoke its lease."""
    for member in list(_members):
        member.stop()
