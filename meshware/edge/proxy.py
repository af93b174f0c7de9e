"""``meshware proxy``: a local mesh router for callers that are not Python.

Any process on the node calls ``http://127.0.0.1:PORT/users/42`` and reaches a live instance of
the service that serves ``/users/42``, with the mesh client's policies (balancing, retries,
ejection, deadlines: an incoming ``X-Meshware-Timeout-Ms`` bounds the request, retries
included, unless public-only).
Bodies stream both ways. With ``public_only=True`` it is an edge of its own: only public routes
(and their rewrites) are reachable, hostile targets are refused, forwarding headers are set from
the connection rather than trusted.

It is a plain ASGI app (:class:`MeshProxy`) served by uvicorn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any, NamedTuple

import httpx

from .._core.limits import RateLimiter, RouteLimits, retry_after_header
from .._core.table import Resolution, Route, RoutingTable
from .._deadline import DEADLINE_HEADER, enter_from_header, leave
from .._enforce import EDGE_CALLER
from .._errors import (
    DeadlineExceeded,
    MeshError,
    NoEndpointAvailable,
    NoRouteError,
    TableNotLoaded,
    Throttled,
)
from .public import Rewrite, refuse_target

__all__ = ["MeshProxy"]

log = logging.getLogger("meshware.proxy")

_DEADLINE = DEADLINE_HEADER.encode("latin-1")
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
_UNTRUSTED = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"forwarded",
        b"x-meshware-timeout-ms",
        b"x-meshware-caller",
    }
)


class _EdgeLimits:
    """The public routes' limits at this edge: a token bucket per route and client address
    (or one per route) with ``1/N`` of the rate for N live edges, and concurrency gates.
    Used from the event loop's thread only."""

    def __init__(self) -> None:
        self._rates: dict[str, tuple[RateLimiter, int, RouteLimits]] = {}
        self._inflight: dict[str, int] = {}

    def take(self, route: Route, client: str, edges: int, now: float) -> float:
        limits = route.spec.limits
        if limits is None or limits.rate is None:
            return 0.0
        held = self._rates.get(route.key)
        if held is None:
            held = self._rates[route.key] = (RateLimiter(*limits.share(edges)), edges, limits)
        elif held[1] != edges or held[2] != limits:  # buckets keep their tokens
            held[0].reconfigure(*limits.share(edges))
            held = self._rates[route.key] = (held[0], edges, limits)
        return held[0].take(client if limits.per == "client" else "", now)

    def enter(self, route: Route) -> bool | None:
        """None: no concurrency limit; True: entered (call :meth:`leave`); False: refused."""
        limits = route.spec.limits
        if limits is None or limits.concurrency is None:
            return None
        n = self._inflight.get(route.key, 0)
        if n >= limits.concurrency:
            return False
        self._inflight[route.key] = n + 1
        return True

    def leave(self, route: Route) -> None:
        self._inflight[route.key] -= 1


class PublicTarget(NamedTuple):
    """Where a public request goes: the mesh path and the public route the table chose."""

    path: str
    route: Route


def exposed(route: Route) -> bool:
    """Whether the edge may expose a route the table dispatched a path to."""
    spec = route.spec
    return (
        spec.public
        and spec.kind == "http"
        and spec.host is None
        and not getattr(route, "shadow", False)  # shadows (issue 10) are never public
    )


def public_target(
    table: RoutingTable, rewrites: tuple[Rewrite, ...], method: str, path: str
) -> PublicTarget | tuple[str, ...]:
    """Where a public ``method path`` goes, or the methods public routes allow on it (maybe none).

    One lookup in the table per candidate (the path under each rewrite whose public prefix it
    has, then the path itself): it goes out only when the table, which dispatches as the app
    does, resolves it to a public route exposed that way. A path the app would dispatch to a
    private route, or serves itself unpublished (a shadow), never goes out, whatever public
    route also matches it.
    """
    candidates: list[tuple[Rewrite | None, str]] = [
        (r, i) for r in rewrites if (i := r.to_internal(path)) is not None
    ]
    candidates.append((None, path))
    allowed: set[str] = set()
    for rewrite, internal in candidates:
        found = table.match(method, internal)
        if isinstance(found, Resolution):
            if _exposed_by(found.route, rewrite, rewrites):
                return PublicTarget(internal, found.route)
            continue
        for other in found:  # 405 only for methods a public route would take
            hit = table.match(other, internal)
            if isinstance(hit, Resolution) and _exposed_by(hit.route, rewrite, rewrites):
                allowed.update(hit.route.methods)
    return tuple(sorted(allowed))


def _exposed_by(route: Route, rewrite: Rewrite | None, rewrites: tuple[Rewrite, ...]) -> bool:
    if not exposed(route):
        return False
    applies = next((r for r in rewrites if r.applies(route)), None)
    return applies is rewrite


class MeshProxy:
    """An ASGI app forwarding every request through ``client`` (a :class:`meshware.AsyncClient`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        mesh: Any,
        *,
        public_only: bool = False,
        rewrites: tuple[Rewrite, ...] = (),
        max_body: int | None = 8 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.mesh = mesh
        self.public_only = public_only
        self.rewrites = rewrites
        self.max_body = max_body  # bytes a request body may have (413 above); None: no limit
        self._limits = _EdgeLimits()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not proxied
            await send({"type": "websocket.close", "code": 1003})
            return
        await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        path = raw_path.decode("latin-1")
        target = path + ("?" + query.decode("latin-1") if query else "")
        method: str = scope["method"]
        problem = refuse_target(target)
        if problem is not None:
            await _answer(send, 400, f"bad request target: {problem}")
            return
        if self.public_only:
            found = public_target(self.mesh.table, self.rewrites, method, path)
            if not isinstance(found, PublicTarget):
                if found:
                    await _answer(send, 405, "method not allowed", allow=", ".join(found))
                else:
                    await _answer(send, 404, "not found")
                return
            client = scope.get("client")
            wait = self._limits.take(
                found.route, client[0] if client else "", self._edges(), time.monotonic()
            )
            if wait > 0.0:
                await _answer(send, 429, "too many requests", retry_after=retry_after_header(wait))
                return
            gate = self._limits.enter(found.route)
            if gate is False:
                await _answer(send, 429, "too many requests", retry_after="1")
                return
            try:
                await self._forward(scope, receive, send, method, found.path, query)
            finally:
                if gate is True:
                    self._limits.leave(found.route)
            return
        await self._forward(scope, receive, send, method, path, query)

    def _edges(self) -> int:
        traffic = getattr(self.mesh, "traffic", None)
        return traffic.edges if traffic is not None else 1

    async def _forward(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        method: str,
        path: str,
        query: bytes,
    ) -> None:
        framing = {k for k, _ in scope["headers"] if k in (b"content-length", b"transfer-encoding")}
        if len(framing) == 2:  # both: a request smuggling attempt, or a broken client
            await _answer(send, 400, "Content-Length together with Transfer-Encoding")
            return
        if self.max_body is not None and b"content-length" in framing:
            declared = next(v for k, v in scope["headers"] if k == b"content-length")
            if not declared.isdigit() or int(declared) > self.max_body:
                await _answer(send, 413, f"the body may have at most {self.max_body} bytes")
                return
        headers = self._headers(scope)
        has_body = bool(framing)
        request = self.client.build_request(
            method,
            "mesh://" + path + ("?" + query.decode("latin-1") if query else ""),
            headers=headers,
            content=_body(receive, self.max_body) if has_body else None,
        )
        token = None
        if not self.public_only:  # a trusted local caller's budget bounds our retries too
            raw_deadline = next((v for k, v in scope["headers"] if k == _DEADLINE), None)
            token, _ = enter_from_header(raw_deadline)
        try:
            response = await self.client.send(request, stream=True)
        except _ClientGone:
            return  # nobody to answer
        except _TooLarge:
            await _answer(send, 413, f"the body may have at most {self.max_body} bytes")
            return
        except NoRouteError as exc:
            if exc.allowed:
                await _answer(send, 405, "method not allowed", allow=", ".join(exc.allowed))
            else:
                await _answer(send, 404, "not found")
            return
        except NoEndpointAvailable as exc:
            await _answer(send, 503, f"no instance available: {exc}")
            return
        except TableNotLoaded:
            await _answer(
                send, 503, "the mesh's routing table is not loaded yet (etcd unreachable)"
            )
            return
        except DeadlineExceeded:
            await _answer(send, 504, "deadline exceeded")
            return
        except Throttled:  # the service sheds load: say so, the caller should back off too
            await _answer(send, 503, "service overloaded, retry later", retry_after="1")
            return
        except (httpx.TransportError, MeshError) as exc:
            log.warning("proxy %s %s failed: %s", method, path, exc)
            await _answer(send, 502, "bad gateway")
            return
        except Exception:
            log.exception("proxy %s %s failed unexpectedly", method, path)
            await _answer(send, 502, "bad gateway")
            return
        finally:
            leave(token)
        try:
            # raw bytes are relayed as they came: Content-Length and Content-Encoding still hold
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            if response.is_stream_consumed:  # already in memory (an in-process fake mesh)
                await send(
                    {"type": "http.response.body", "body": response.content, "more_body": True}
                )
            else:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def _headers(self, scope: Any) -> list[tuple[bytes, bytes]]:
        out = []
        connection_tokens: set[bytes] = set()
        for k, v in scope["headers"]:
            if k == b"connection":
                connection_tokens.update(t.strip().lower() for t in v.split(b","))
        for k, v in scope["headers"]:
            if k in _HOP_BY_HOP or k in connection_tokens:
                continue
            if self.public_only and k in _UNTRUSTED:
                continue
            out.append((k, v))
        client = scope.get("client")
        if self.public_only:  # members do not rate-limit again what an edge let in
            out.append((b"x-meshware-caller", EDGE_CALLER.encode()))
        if self.public_only or not any(k == b"x-forwarded-for" for k, _ in out):
            if client:
                out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
            out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
        return out


class _ClientGone(Exception):
    """The caller disconnected before its request body was complete."""


class _TooLarge(Exception):
    """The request body passed ``max_body`` (a chunked one: its size is known only then)."""


async def _body(receive: Any, limit: int | None = None) -> AsyncIterator[bytes]:
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone  # never pass a truncated body on as if it were complete
        chunk = message.get("body", b"")
        seen += len(chunk)
        if limit is not None and seen > limit:
            raise _TooLarge  # the upstream gets a truncated request it never completes
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _answer(
    send: Any, status: int, text: str, *, allow: str | None = None, retry_after: str | None = None
) -> None:
    body = (text + "\n").encode("utf-8", "replace")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"date", formatdate(usegmt=True).encode("latin-1")),  # the server adds none
    ]
    if allow is not None:
        headers.append((b"allow", allow.encode("latin-1")))
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
