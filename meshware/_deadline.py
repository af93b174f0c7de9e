"""Deadlines shared along a chain of calls: a context variable and one header.

A request's remaining time travels downstream as ``X-Meshware-Timeout-Ms: <milliseconds>``
(relative, like gRPC's ``grpc-timeout``, so hosts need no synchronised clocks). The framework
integrations read it from each incoming request and set the context's deadline; every meshware
client call made while serving that request takes the smaller of its own total timeout and what
is left, and sends on what remains. A service that receives a request whose budget is already
spent answers ``504`` without running the view.

Code outside a request sets a deadline for everything in a block with :func:`deadline`::

    with meshware.deadline(2.0):
        user = client.get("/users/42")       # this and any retries: 2 s in all
        orders = client.get("/orders?user=42")  # shares what is left
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ._errors import ConfigError

__all__ = [
    "DEADLINE_HEADER",
    "current_deadline",
    "deadline",
    "parse_timeout_header",
    "time_left",
]

#: The header carrying the caller's remaining time, in whole milliseconds.
DEADLINE_HEADER = "x-meshware-timeout-ms"

# Absolute deadline on time.monotonic(), or None.
_deadline: ContextVar[float | None] = ContextVar("meshware_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline in force in this context (on ``time.monotonic()``), or ``None``."""
    return _deadline.get()


def time_left() -> float | None:
    """Seconds left before this context's deadline (negative once past), or ``None``."""
    d = _deadline.get()
    return None if d is None else d - time.monotonic()


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Bound every meshware call in the block by ``seconds`` from now (nested blocks only shrink it)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
        raise ConfigError(f"deadline(seconds) must be a number >= 0, not {seconds!r}")
    mine = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(mine if outer is None or mine < outer else outer)
    try:
        yield seconds
    finally:
        _deadline.reset(token)


def parse_timeout_header(value: str | bytes | None) -> float | None:
    """Seconds from an ``X-Meshware-Timeout-Ms`` value; ``None`` when absent or malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        return None
    return int(value) / 1000.0


def enter_from_header(value: str | bytes | None) -> tuple[object | None, float | None]:
    """Set the context's deadline from a request header; ``(token, seconds left)``.

    Used by the framework integrations; pass the token to :func:`leave`.
    """
    seconds = parse_timeout_header(value)
    if seconds is None:
        return None, None
    return _deadline.set(time.monotonic() + seconds), seconds


def leave(token: object | None) -> None:
    """Undo :func:`enter_from_header`."""
    if token is not None:
        _deadline.reset(token)  # type: ignore[arg-type]
