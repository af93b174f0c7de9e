"""One instance's connections: a free list instead of httpcore's scanning pool.

Design notes
------------
httpcore's ``ConnectionPool`` keeps requests and connections in two lists and, on every request
*and* again when every response closes, rescans both under a lock: it asks each connection
whether it expired (a ``poll`` system call per idle socket), counts the idle ones once per
connection (quadratic), and assigns queued requests in order. With one connection that costs a
few microseconds a request; with 32 requests in flight on one pool it is most of the client's
time, and it serialises the tasks (the bench of issue 14: one sized httpx pool was slower than
httpx's default). A mesh client talks to a handful of known instances, one origin each, so it
needs much less: :class:`FastPool` keeps the idle connections of its one origin on a stack,
takes the most recently used one (checking only *that* one for expiry: one ``poll``), and puts
it back when its response closes. Costs are O(1) whatever the number of connections.

It *is* an ``httpcore.ConnectionPool`` (built from the one an ``httpx.HTTPTransport`` made, so
TLS, HTTP/1.1, socket options and timeouts are httpx's), and the httpx transport around it is
untouched: exceptions are mapped by httpx, and OpenTelemetry's httpx instrumentation sees the
request. When something has patched ``ConnectionPool.handle_request`` (respx does, to mock
requests), the patch is called instead, so ``respx.mock`` keeps working. HTTP/2 and proxies keep
httpcore's own pool (:func:`install`).

``max_connections`` still holds (requests beyond it wait for a connection to come back, up to
the ``pool`` timeout, then ``PoolTimeout``) and ``max_keepalive_connections`` bounds the stack.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpcore
import httpx

__all__ = ["AsyncFastPool", "FastPool", "install", "install_async"]

_SYNC_HANDLE = httpcore.ConnectionPool.handle_request
_ASYNC_HANDLE = httpcore.AsyncConnectionPool.handle_async_request


class FastPool(httpcore.ConnectionPool):
    """A free-list ``httpcore.ConnectionPool`` for one origin (see the module docstring)."""

    _idle: list[httpcore.HTTPConnection]
    _open: int
    _cond: threading.Condition
    _origin: httpcore.Origin | None

    def _init_fast(self) -> None:
        self._idle = []
        self._open = 0  # connections made and not yet known to be closed
        self._cond = threading.Condition(threading.Lock())
        self._origin = None

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        if httpcore.ConnectionPool.handle_request is not _SYNC_HANDLE:  # patched (respx)
            return httpcore.ConnectionPool.handle_request(self, request)
        origin = request.url.origin
        if self._origin is None:
            if request.url.scheme not in (b"http", b"https"):
                return _SYNC_HANDLE(self, request)
            self._origin = origin
        elif origin != self._origin:  # never for a mesh instance: one origin per pool
            return _SYNC_HANDLE(self, request)
        while True:
            conn = self._take(request)
            try:
                response = conn.handle_request(request)
            except httpcore.ConnectionNotAvailable:
                self._put_back(conn)  # it closed meanwhile: take another
                continue
            except BaseException:
                self._put_back(conn)
                raise
            return httpcore.Response(
                status=response.status,
                headers=response.headers,
                content=_Returning(response.stream, self, conn),
                extensions=response.extensions,
            )

    def _take(self, request: httpcore.Request) -> httpcore.HTTPConnection:
        idle = self._idle
        end: float | None = None
        while True:
            while idle:
                try:
                    conn = idle.pop()
                except IndexError:  # another thread took the last one
                    break
                if conn.is_available() and not conn.has_expired():
                    return conn
                self._discard(conn)
            with self._cond:
                if self._open < self._max_connections:
                    self._open += 1
                    break
                if not idle:  # at the limit: wait for a connection to come back or close
                    if end is None:
                        timeout = request.extensions.get("timeout", {}).get("pool")
                        end = float("inf") if timeout is None else time.monotonic() + timeout
                    left = end - time.monotonic()
                    if left <= 0:
                        raise httpcore.PoolTimeout("no connection came free in time")
                    self._cond.wait(None if left == float("inf") else left)
        return self.create_connection(request.url.origin)  # type: ignore[return-value]

    def _put_back(self, conn: httpcore.HTTPConnection) -> None:
        keep = len(self._idle) < self._max_keepalive_connections
        if keep and conn.is_idle() and not conn.is_closed():
            self._idle.append(conn)
            if self._open >= self._max_connections:
                with self._cond:
                    self._cond.notify()
            return
        self._discard(conn)

    def _discard(self, conn: httpcore.HTTPConnection) -> None:
        conn.close()
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
        super().close()


class _Returning:
    """A response body that gives its connection back to the pool when it closes."""

    __slots__ = ("_closed", "_conn", "_pool", "_stream")

    def __init__(self, stream: Any, pool: FastPool, conn: httpcore.HTTPConnection) -> None:
        self._stream = stream
        self._pool = pool
        self._conn = conn
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                if hasattr(self._stream, "close"):
                    self._stream.close()
            finally:
                self._pool._put_back(self._conn)


class AsyncFastPool(httpcore.AsyncConnectionPool):
    """The async twin of :class:`FastPool` (one event loop: no thread lock on the fast path)."""

    _idle: list[httpcore.AsyncHTTPConnection]
    _open: int
    _waiters: deque[anyio.Event]
    _origin: httpcore.Origin | None

    def _init_fast(self) -> None:
        self._idle = []
        self._open = 0
        self._waiters = deque()
        self._origin = None

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if httpcore.AsyncConnectionPool.handle_async_request is not _ASYNC_HANDLE:  # respx
            return await httpcore.AsyncConnectionPool.handle_async_request(self, request)
        origin = request.url.origin
        if self._origin is None:
            if request.url.scheme not in (b"http", b"https"):
                return await _ASYNC_HANDLE(self, request)
            self._origin = origin
        elif origin != self._origin:
            return await _ASYNC_HANDLE(self, request)
        while True:
            conn = await self._take(request)
            try:
                response = await conn.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await self._put_back(conn)
                continue
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._put_back(conn)
                raise
            return httpcore.Response(
                status=response.status,
                headers=response.headers,
                content=_AsyncReturning(response.stream, self, conn),
                extensions=response.extensions,
            )

    async def _take(self, request: httpcore.Request) -> httpcore.AsyncHTTPConnection:
        idle = self._idle
        while True:
            while idle:
                conn = idle.pop()
                if conn.is_available() and not conn.has_expired():
                    return conn
                await self._discard(conn)
            if self._open < self._max_connections:
                self._open += 1
                return self.create_connection(request.url.origin)  # type: ignore[return-value]
            timeout = request.extensions.get("timeout", {}).get("pool")
            event = anyio.Event()
            self._waiters.append(event)
            try:
                with anyio.fail_after(timeout):
                    await event.wait()
            except TimeoutError:
                raise httpcore.PoolTimeout("no connection came free in time") from None
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)

    def _wake_one(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()

    async def _put_back(self, conn: httpcore.AsyncHTTPConnection) -> None:
        keep = len(self._idle) < self._max_keepalive_connections
        if keep and conn.is_idle() and not conn.is_closed():
            self._idle.append(conn)
            self._wake_one()
            return
        await self._discard(conn)

    async def _discard(self, conn: httpcore.AsyncHTTPConnection) -> None:
        self._open -= 1
        self._wake_one()
        await conn.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
        await super().aclose()


class _AsyncReturning:
    __slots__ = ("_closed", "_conn", "_pool", "_stream")

    def __init__(
        self, stream: Any, pool: AsyncFastPool, conn: httpcore.AsyncHTTPConnection
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._conn = conn
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                try:
                    if hasattr(self._stream, "aclose"):
                        await self._stream.aclose()
                finally:
                    await self._pool._put_back(self._conn)


def install(transport: httpx.HTTPTransport) -> httpx.HTTPTransport:
    """Give ``transport`` a :class:`FastPool` in place of its httpcore pool (HTTP/1.1 only)."""
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.ConnectionPool and not pool._http2:
        fast = FastPool.__new__(FastPool)
        fast.__dict__.update(pool.__dict__)
        fast._init_fast()
        transport._pool = fast
    return transport


def install_async(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncHTTPTransport:
    """Give ``transport`` an :class:`AsyncFastPool` (HTTP/1.1 only)."""
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool and not pool._http2:
        fast = AsyncFastPool.__new__(AsyncFastPool)
        fast.__dict__.update(pool.__dict__)
        fast._init_fast()
        transport._pool = fast
    return transport
