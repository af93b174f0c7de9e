"""Flask integration: ``Mesh(app, service="users")`` and the app is a member of the mesh.

Publishes every route of ``app.url_map`` (blueprints, converters, methods) when the server
starts serving, keeps the registration alive, and withdraws it on SIGTERM/SIGINT (draining
first) or at exit. Settings come from the arguments, then ``app.config["MESHWARE_..."]``, then
the environment (see :mod:`meshware._config`).

Deadlines: a request carrying ``X-Meshware-Timeout-Ms`` sets the deadline of the meshware calls
its view makes (they share the caller's budget); one whose budget is already spent is answered
``504`` without running the view.

WSGI has no "server started" hook, so registration starts in a background thread that waits
for the server's listening socket (or uses ``MESHWARE_ADVERTISE_URL``). Under gunicorn with
``--preload``, each worker registers itself after the fork.

``flask run --debug`` (werkzeug's reloader): only the serving child registers. The reloader
parent exits on SIGTERM or Ctrl-C from inside ``subprocess.call``, whose clean-up SIGKILLs the
child, so the child's record would stay until its lease expired; meshware makes that parent send
the child SIGTERM first and wait for it (up to 10 s) so that it withdraws at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, Response, g, request

from meshware._deadline import DEADLINE_HEADER, enter_from_header, leave
from meshware._enforce import Enforcer, LimitWSGI
from meshware._member import Member, RegistryFactory

from ._flask_routes import flask_published
from ._options import load_settings
from ._select import RouteOptions

__all__ = ["Mesh"]


class Mesh:
    """Make a Flask app a member of the mesh.

    ``Mesh(app, service="users")`` or, with the application-factory pattern,
    ``mesh = Mesh(service="users")`` then ``mesh.init_app(app)``. ``include`` / ``exclude``
    are fnmatch patterns on route templates or endpoint names; ``public`` patterns mark routes
    public and ``policies`` maps patterns to a client policy (``{"/users/*": {"idempotent":
    True, "timeout": 2.0, "retries": 1}}``) and ``rate_limits`` maps patterns to a rate
    (``{"/login": "20/s"}``, or ``{"rate": "20/s", "burst": 10, "per": "route",
    "concurrency": 8}``), where the views' own marks do not say otherwise.
    ``autostart=False`` leaves :meth:`start` to you (tests, scripts).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        service: str | None = None,
        advertise_url: str | None = None,
        etcd_endpoints: str | Sequence[str] | None = None,
        prefix: str | None = None,
        lease_ttl: int | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        include_static: bool = False,
        public: Sequence[str] = (),
        policies: Mapping[str, Mapping[str, Any]] | None = None,
        rate_limits: Mapping[str, str | Mapping[str, Any]] | None = None,
        strict: bool | None = None,
        autostart: bool = True,
        socket_wait: float = 30.0,
        registry_factory: RegistryFactory | None = None,
        **settings: Any,
    ) -> None:
        self.options: dict[str, Any] = dict(
            settings,
            service=service,
            advertise_url=advertise_url,
            etcd_endpoints=etcd_endpoints,
            prefix=prefix,
            lease_ttl=lease_ttl,
            strict=strict,
        )
        self.include = include
        self.exclude = tuple(exclude)
        self.include_static = include_static
        self.route_options = RouteOptions(public, policies, rate_limits)
        self.autostart = autostart
        self.socket_wait = socket_wait
        self.registry_factory = registry_factory
        self.member: Member | None = None
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Attach to ``app``; reads ``app.config`` and fails now if a setting is wrong."""
        settings = load_settings(self.options, app.config)
        self.app = app
        self.member = Member(
            settings,
            routes=lambda: self.route_options.apply_published(
                flask_published(
                    app,
                    include=self.include,
                    exclude=self.exclude,
                    include_static=self.include_static,
                )
            ),
            routing="specificity",
            framework="flask",
            registry_factory=self.registry_factory,
        )
        app.extensions["meshware"] = self
        self.enforcer = Enforcer(settings.service, self.member._routes, routing="specificity")
        app.wsgi_app = LimitWSGI(app.wsgi_app, self.enforcer)  # type: ignore[method-assign]
        app.before_request(self._before_request)
        app.teardown_request(self._teardown_request)
        if self.autostart:
            self.start(_automatic=True)

    def start(self, *, _automatic: bool = False) -> None:
        """Register in the background (waits for the listening socket) and withdraw at exit."""
        member = self._require_member()
        if member.start(socket_wait=self.socket_wait, background=True, automatic=_automatic):
            member.install_signal_handlers()
            member.stop_at_exit()
            _graceful_reloader_parent()

    def stop(self) -> None:
        """Drain and withdraw now."""
        self._require_member().stop()

    def _before_request(self) -> Response | None:
        token, left = enter_from_header(request.headers.get(DEADLINE_HEADER))
        if token is not None:
            g._meshware_deadline = token
            if left is not None and left <= 0:
                return Response(
                    "the caller's deadline passed before the request was handled\n",
                    status=504,
                    mimetype="text/plain",
                )
        # Servers such as gunicorn install their signal handlers after importing the app; the
        # first request (handled on the main thread by sync workers) lets us wrap them.
        member = self.member
        if member is not None and not member._signals_wrapped:
            member.install_signal_handlers()
        return None

    @staticmethod
    def _teardown_request(exc: BaseException | None) -> None:
        token = g.pop("_meshware_deadline", None)
        if token is not None:
            # a reset from another context (a streamed response) is harmless
            with contextlib.suppress(ValueError):
                leave(token)

    def _require_member(self) -> Member:
        if self.member is None:
            raise RuntimeError("Mesh.init_app(app) has not been called")
        return self.member


#: How long werkzeug's reloader parent waits for its child to withdraw before killing it.
RELOADER_CHILD_STOP_WAIT = 10.0


class _GracefulSubprocess:
    """``subprocess`` as werkzeug's reloader sees it, with a ``call`` that stops its child
    with SIGTERM (the child withdraws from the mesh) instead of SIGKILL."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def call(self, *args: Any, **kwargs: Any) -> int:
        with self._module.Popen(*args, **kwargs) as child:
            try:
                return int(child.wait())
            except BaseException:  # werkzeug's SIGTERM handler (sys.exit), or Ctrl-C
                child.terminate()
                try:
                    child.wait(timeout=RELOADER_CHILD_STOP_WAIT)
                except BaseException:  # too slow, or interrupted again: as werkzeug does
                    child.kill()
                raise


def _graceful_reloader_parent() -> None:
    """In a process that may become werkzeug's reloader parent, stop the child gracefully."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return  # the serving child itself
    try:
        from werkzeug import _reloader
    except ImportError:  # pragma: no cover - werkzeug without its reloader module
        return
    current = getattr(_reloader, "subprocess", None)
    if current is None or isinstance(current, _GracefulSubprocess):
        return
    setattr(_reloader, "subprocess", _GracefulSubprocess(current))  # noqa: B010 (not exported)
