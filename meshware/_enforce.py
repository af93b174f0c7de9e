"""A member enforces the limits its routes declare, where mesh requests enter it.

Design notes
------------
* **Who is calling.** Every meshware client sends its own service name in
  ``X-Meshware-Caller`` (``MESHWARE_SERVICE``, or the service of a member in the same process).
  A route limited ``per="client"`` keeps one bucket per calling service; a request without the
  header is keyed by its peer address. The header is trusted because only mesh callers can set
  it: the nginx edge and the public-only proxy *overwrite* it with ``edge`` on every request they
  forward (a public client cannot choose it), and the mesh's own network is the trust boundary
  (as for every other ``X-Meshware-*`` header).
* **Checked once, where the request enters.** Requests forwarded by an edge (``edge``) were
  rate-checked there, per public client; the member does not count them again (it cannot tell
  the public clients apart). Concurrency limits protect the process itself and apply to every
  request.
* **A share of a mesh-wide rate.** A route's rate is for the whole service: each process takes
  ``1/N`` of it (and of the burst, rounded up), N being the live, serving records of its service
  in the mesh's table (each worker of a server registers its own record), re-read whenever the
  table changes; N is 1 while the table is unknown (lenient, never refusing wrongly).
* **Cheap.** The route a request path maps to is remembered (a dict of at most 4,096 recent
  ``METHOD path`` strings, emptied when full): a repeated path costs a dict lookup instead of a
  route match. A service whose routes declare no limit is not checked at all.
* **Answer.** ``429 Too Many Requests`` with ``Retry-After`` (whole seconds until a token is
  there, at least 1), a short text body, and the app never sees the request.

The decisions are :mod:`meshware._core.limits` (pure); this module adds the clock, one lock
(WSGI threads share the buckets), the route match (the member's own routes, so the route the
app itself would pick), and the ASGI middleware / WSGI wrapper the integrations install.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._core.limits import RateLimiter, RouteLimits, retry_after_header
from ._core.records import InstanceRecord, RouteSpec, Routing, validate_service_name
from ._core.table import Resolution, RoutingTable
from ._errors import ConfigError

__all__ = [
    "CALLER_HEADER",
    "EDGE_CALLER",
    "Enforcer",
    "LimitMiddleware",
    "LimitWSGI",
    "caller_name",
]

CALLER_HEADER = "X-Meshware-Caller"
EDGE_CALLER = "edge"
_MAX_PATHS = 4096
_BODY = b"too many requests: this route's limit is reached, retry later\n"


def caller_name() -> str | None:
    """This process's service name, sent to callees: ``MESHWARE_SERVICE``, else the service of
    a member in this process, else None (callees then key by address)."""
    name = os.environ.get("MESHWARE_SERVICE", "").strip()
    if not name:
        from ._member import _members

        name = next((m.settings.service for m in list(_members) if m.enabled), "")
    try:
        return validate_service_name(name) if name else None
    except ConfigError:
        return None  # the member refuses it at startup, saying why


class _Gate:
    """The concurrency count of one route."""

    __slots__ = ("inflight", "limit", "lock")

    def __init__(self, limit: int, lock: threading.Lock) -> None:
        self.limit = limit
        self.inflight = 0
        self.lock = lock

    def release(self) -> None:
        with self.lock:
            self.inflight -= 1


class _RouteState:
    __slots__ = ("gate", "limiter", "limits", "shared_by")

    def __init__(self, limits: RouteLimits, lock: threading.Lock) -> None:
        self.limits = limits
        self.limiter = RateLimiter(*limits.share(1)) if limits.rate is not None else None
        self.gate = _Gate(limits.concurrency, lock) if limits.concurrency else None
        self.shared_by = 1


class Enforcer:
    """The limits of one member's routes (see the module notes).

    ``routes`` returns the member's routes (called once, on the first request); ``instances``
    returns how many processes of the service share its rates (default: counted in the
    process's view of the mesh).
    """

    def __init__(
        self,
        service: str,
        routes: Callable[[], Sequence[RouteSpec]],
        *,
        routing: Routing = "specificity",
        instances: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._routes = routes
        self._routing: Routing = routing
        self._instances = instances or _ViewCount(service)
        self.clock = clock
        self._lock = threading.Lock()
        self._table: RoutingTable | None = None
        self._states: dict[str, _RouteState] = {}
        self._paths: dict[str, _RouteState | None] = {}  # "METHOD path" -> its route's state
        self.active = True  # False once the routes are known to declare no limit
        self._disabled = False

    def _load(self) -> RoutingTable:
        with self._lock:
            if self._table is None:
                got = self._routes()
                record = InstanceRecord(
                    self.service,
                    "self",
                    "http://127.0.0.1:1",
                    tuple(got),
                    routing=self._routing,
                    shadows=tuple(getattr(got, "shadows", ())),  # the app's unpublished routes
                )
                table = RoutingTable.from_records([record])
                for route, _ in table.routes():
                    if route.spec.limits is not None:
                        self._states[route.key] = _RouteState(route.spec.limits, self._lock)
                self.active = bool(self._states) and not self._disabled
                self._table = table
            return self._table

    def disable(self) -> None:
        """Check nothing (the fake mesh enforces the limits itself, on its own clock)."""
        self._disabled = True
        self.active = False

    def admit(
        self, method: str, path: str, caller: str | None, address: str | None
    ) -> tuple[float, _Gate | None]:
        """``(0.0, gate)`` to let the request in (``gate.release()`` when it is over, if not
        None), or ``(seconds, None)`` to refuse it with that ``Retry-After``."""
        table = self._table or self._load()
        if not self.active:
            return 0.0, None
        paths = self._paths
        cache_key = method + " " + path
        try:
            state = paths[cache_key]
        except KeyError:
            found = table.match(method, path)
            state = self._states.get(found[0].key) if isinstance(found, Resolution) else None
            if len(paths) >= _MAX_PATHS:
                paths.clear()  # bounded: paths come from clients
            paths[cache_key] = state
        if state is None:
            return 0.0, None
        limiter = state.limiter
        if limiter is not None and caller != EDGE_CALLER:
            n = self._instances()
            limits = state.limits
            key = "" if limits.per == "route" else (caller or f"@{address}")
            with self._lock:
                if n != state.shared_by:
                    state.shared_by = n
                    limiter.reconfigure(*limits.share(n))
                wait = limiter.take(key, self.clock())
            if wait > 0.0:
                return wait, None
        gate = state.gate
        if gate is None:
            return 0.0, None
        with self._lock:
            if gate.inflight >= gate.limit:
                return 1.0, None
            gate.inflight += 1
        return 0.0, gate


class _ViewCount:
    """Live serving records of ``service`` in the process's view (1 until it is known)."""

    __slots__ = ("_count", "_service", "_table", "_view")

    def __init__(self, service: str) -> None:
        self._service = service
        self._view: Any = None
        self._table: object = None
        self._count = 1

    def __call__(self) -> int:
        view = self._view
        if view is None:
            try:
                from ._view import shared_view

                view = self._view = shared_view()
            except Exception:  # no etcd settings: enforce the whole rate here
                self._view = False
                return 1
        if view is False:
            return 1
        table = view.table
        if table is not self._table:
            self._table = table
            n = sum(len(i.records) for i in table.instances(self._service) if i.state == "serving")
            self._count = max(1, n)
        return self._count


def _refusal_headers(wait: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"retry-after", retry_after_header(wait).encode()),
    ]


_CALLER = CALLER_HEADER.lower().encode("latin-1")


class LimitMiddleware:
    """Pure ASGI middleware: the member's route limits (:class:`Enforcer`)."""

    def __init__(self, app: Any, enforcer: Enforcer) -> None:
        self.app = app
        self.enforcer = enforcer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        enforcer = self.enforcer
        if scope["type"] != "http" or not enforcer.active:
            await self.app(scope, receive, send)
            return
        caller = None
        for key, value in scope["headers"]:
            if key == _CALLER:
                caller = value.decode("latin-1")
                break
        client = scope.get("client")
        path = scope.get("raw_path") or scope["path"].encode()
        wait, gate = enforcer.admit(
            scope["method"],
            path.decode("latin-1").split("?", 1)[0],
            caller,
            client[0] if client else None,
        )
        if wait > 0.0:
            await send(
                {"type": "http.response.start", "status": 429, "headers": _refusal_headers(wait)}
            )
            await send({"type": "http.response.body", "body": _BODY})
            return
        if gate is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release()


class LimitWSGI:
    """WSGI wrapper: the member's route limits (:class:`Enforcer`)."""

    def __init__(self, app: Any, enforcer: Enforcer) -> None:
        self.app = app
        self.enforcer = enforcer

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        enforcer = self.enforcer
        if not enforcer.active:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        wait, gate = enforcer.admit(
            environ.get("REQUEST_METHOD", "GET"),
            (environ.get("RAW_URI") or environ.get("REQUEST_URI") or _path(environ)).split("?", 1)[
                0
            ],
            environ.get("HTTP_X_MESHWARE_CALLER"),
            environ.get("REMOTE_ADDR"),
        )
        if wait > 0.0:
            start_response(
                "429 Too Many Requests",
                [(k.decode(), v.decode()) for k, v in _refusal_headers(wait)],
            )
            return [_BODY]
        if gate is None:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        try:
            body = self.app(environ, start_response)
        except BaseException:
            gate.release()
            raise
        return _Closing(body, gate)


def _path(environ: dict[str, Any]) -> str:
    from urllib.parse import quote

    script = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "")
    return quote((script + path).encode("latin-1")) or "/"


class _Closing:
    """A WSGI body that releases the concurrency slot when the server closes it."""

    def __init__(self, body: Iterable[bytes], gate: _Gate) -> None:
        self._body = body
        self._gate = gate
        self._done = False

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._gate.release()
