"""Starlette and FastAPI integration: ``Mesh(app, service="orders")``.

Wraps the app's lifespan so that it composes with the app's own: the app's startup runs first,
then meshware registers (from a worker thread, in the background until the server's listening
socket exists); on shutdown meshware withdraws first, then the app's own shutdown runs. On
SIGTERM/SIGINT the record is marked draining and withdrawn before uvicorn starts closing, so
callers stop picking this instance while in-flight requests finish.

Deadlines: a pure ASGI middleware reads ``X-Meshware-Timeout-Ms`` from each request and sets
the deadline of the meshware calls made while serving it (sync endpoints too: anyio copies the
context into its worker threads); a request whose budget is already spent is answered ``504``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.routing import Router

from meshware._deadline import DEADLINE_HEADER, enter_from_header, leave
from meshware._enforce import Enforcer, LimitMiddleware
from meshware._member import Member, RegistryFactory

from ._options import load_settings
from ._select import RouteOptions
from ._starlette_routes import starlette_published

__all__ = ["Mesh"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


class Mesh:
    """Make a Starlette or FastAPI app a member of the mesh (see the module docstring).

    ``include`` / ``exclude`` are fnmatch patterns on templates or route names; the API-docs
    routes and static files are left out unless ``include_docs`` / ``include_static``.
    ``public`` patterns, ``policies`` and ``rate_limits`` work as for the Flask ``Mesh``.
    """

    def __init__(
        self,
        app: Starlette | Router | None = None,
        *,
        service: str | None = None,
        advertise_url: str | None = None,
        etcd_endpoints: str | Sequence[str] | None = None,
        prefix: str | None = None,
        lease_ttl: int | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        include_static: bool = False,
        include_docs: bool = False,
        public: Sequence[str] = (),
        policies: Mapping[str, Mapping[str, Any]] | None = None,
        rate_limits: Mapping[str, str | Mapping[str, Any]] | None = None,
        strict: bool | None = None,
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
        self.include_docs = include_docs
        self.route_options = RouteOptions(public, policies, rate_limits)
        self.socket_wait = socket_wait
        self.registry_factory = registry_factory
        self.member: Member | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Starlette | Router) -> None:
        """Wrap ``app``'s lifespan; fails now if a setting is wrong."""
        settings = load_settings(self.options)
        self.member = member = Member(
            settings,
            routes=lambda: self.route_options.apply_published(
                starlette_published(
                    app,
                    include=self.include,
                    exclude=self.exclude,
                    include_static=self.include_static,
                    include_docs=self.include_docs,
                )
            ),
            routing="ordered",
            framework="starlette",
            registry_factory=self.registry_factory,
        )
        router: Router = app.router if isinstance(app, Starlette) else app
        original: Lifespan = router.lifespan_context
        socket_wait = self.socket_wait

        @asynccontextmanager
        async def lifespan(scope_app: Any) -> AsyncIterator[Any]:
            async with original(scope_app) as state:
                member.install_signal_handlers()
                await anyio.to_thread.run_sync(
                    lambda: member.start(socket_wait=socket_wait, background=True, automatic=True)
                )
                try:
                    yield state
                finally:
                    await anyio.to_thread.run_sync(member.stop)

        router.lifespan_context = lifespan
        if isinstance(app, Starlette):
            app.add_middleware(DeadlineMiddleware)
            self.enforcer = Enforcer(settings.service, member._routes, routing="ordered")
            app.add_middleware(LimitMiddleware, enforcer=self.enforcer)
        state = getattr(app, "state", None)
        if state is not None:
            state.meshware = self


_HEADER = DEADLINE_HEADER.encode("latin-1")


class DeadlineMiddleware:
    """Pure ASGI middleware: the caller's ``X-Meshware-Timeout-Ms`` becomes this request's deadline."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for key, raw in scope["headers"]:
            if key == _HEADER:
                value = raw
                break
        token, left = enter_from_header(value)
        if token is None:
            await self.app(scope, receive, send)
            return
        try:
            if left is not None and left <= 0:
                body = b"the caller's deadline passed before the request was handled\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 504,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send)
        finally:
            leave(token)
