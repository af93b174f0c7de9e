"""The async etcd client: the I/O shell around :mod:`._protocol` (twin of :mod:`._sync`).

Runs on asyncio and trio alike (httpx and anyio underneath).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self, TypeVar

import anyio
import httpx

from meshware._errors import EtcdError, LeaseLost, RegistryUnavailable

from . import _protocol as p
from ._config import (
    DEFAULT_WATCH_READ_TIMEOUT,
    ClientSettings,
    StreamEnded,
    TLSConfig,
    describe_failure,
    shutdown_socket,
)

__all__ = ["AsyncEtcdClient", "AsyncWatch"]

T = TypeVar("T")


class AsyncEtcdClient:
    """The async twin of :class:`~meshware.etcd.EtcdClient`: same arguments, same methods,
    awaited. Use it from one event loop.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 5.0,
        tls: TLSConfig | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._settings = ClientSettings(
            endpoints, timeout=timeout, tls=tls, username=username, password=password
        )
        self._http = self._new_http()
        self._keepalive_http: httpx.AsyncClient | None = None

    def _new_http(
        self, *, stream: bool = False, read_timeout: float | None = None
    ) -> httpx.AsyncClient:
        s = self._settings
        transport = httpx.AsyncHTTPTransport(**s.transport_options(stream=stream))
        options = s.client_options(read_timeout=read_timeout if stream else s.timeout)
        return httpx.AsyncClient(transport=transport, **options)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The configured endpoints."""
        return self._settings.failover.urls

    @property
    def current_endpoint(self) -> str:
        """The endpoint calls go to first (the one that last answered)."""
        return self._settings.failover.current

    # -- I/O -------------------------------------------------------------------------------

    async def _send(
        self, http: httpx.AsyncClient, request: p.Request[Any], *, stream: bool = False
    ) -> httpx.Response:
        """POST ``request`` to the first endpoint that answers (other than with a 503)."""
        failover = self._settings.failover
        failures: list[tuple[str, str]] = []
        for url in failover.order():
            headers = self._settings.auth_headers()
            try:
                r = http.build_request(
                    "POST", url + request.path, json=request.body, headers=headers
                )
                response = await http.send(r, stream=stream)
            except httpx.TransportError as exc:
                failures.append((url, describe_failure(exc)))
                continue
            if response.status_code == 503:
                await response.aread()
                await response.aclose()
                failures.append((url, describe_failure(response)))
                continue
            failover.succeeded(url)
            return response
        raise failover.unavailable(failures)

    async def _login(self) -> None:
        response = await self._send(self._http, self._settings.login_request())
        self._settings.logged_in(response.status_code, response.content)

    async def _call(self, request: p.Request[T], http: httpx.AsyncClient | None = None) -> T:
        http = http or self._http
        for attempt in (1, 2):
            if self._settings.login_needed:
                await self._login()
            response = await self._send(http, request)
            try:
                return p.parse_answer(request, response.status_code, response.content)
            except EtcdError as exc:
                if attempt == 2 or not self._settings.retry_after_login(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- keys ------------------------------------------------------------------------------

    async def get(self, key: str) -> p.KeyValue | None:
        """The key's value and metadata, or ``None`` when it does not exist."""
        kvs = (await self._call(p.range_request(key))).kvs
        return kvs[0] if kvs else None

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> p.RangeResult:
        """Every key starting with ``prefix`` (sorted), and the revision they were read at."""
        return await self._call(p.range_request(prefix, prefix=True, keys_only=keys_only))

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> p.PutResult:
        """Write ``value`` at ``key``, under ``lease`` if not 0 (:class:`LeaseLost` if gone)."""
        return await self._call(p.put_request(key, value, lease=lease))

    async def create(self, key: str, value: bytes | str, *, lease: int = 0) -> p.CreateResult:
        """Write ``value`` at ``key`` only if the key does not exist yet (a transaction).

        ``created`` tells whether it did; if not, ``existing`` is the key as it is.
        """
        return await self._call(p.create_request(key, value, lease=lease))

    async def delete(self, key: str) -> p.DeleteResult:
        """Delete ``key`` (a missing key is fine: ``deleted`` is then 0)."""
        return await self._call(p.delete_request(key))

    async def delete_prefix(self, prefix: str) -> p.DeleteResult:
        """Delete every key starting with ``prefix``."""
        return await self._call(p.delete_request(prefix, prefix=True))

    # -- leases ----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> p.LeaseGrant:
        """A new lease of ``ttl`` seconds."""
        return await self._call(p.lease_grant_request(ttl))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease; its TTL (:class:`~meshware.LeaseLost` when it is gone).

        Keep-alives use a connection of their own, so slow calls never delay them.
        """
        if self._keepalive_http is None:
            self._keepalive_http = self._new_http()
        return await self._call(p.lease_keepalive_request(lease_id), self._keepalive_http)

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now, deleting its keys; a lease already gone is fine."""
        with contextlib.suppress(LeaseLost):
            await self._call(p.lease_revoke_request(lease_id))

    async def lease_time_to_live(self, lease_id: int) -> p.LeaseInfo:
        """The lease's remaining TTL and its keys; :class:`~meshware.LeaseLost` if gone."""
        return await self._call(p.lease_time_to_live_request(lease_id))

    # -- cluster ---------------------------------------------------------------------------

    async def status(self) -> p.Status:
        """The status of the member that answers (version, leader, revision, ...)."""
        return await self._call(p.status_request())

    # -- watch -----------------------------------------------------------------------------

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int | None = None,
        prev_kv: bool = False,
        read_timeout: float | None = DEFAULT_WATCH_READ_TIMEOUT,
    ) -> AsyncWatch:
        """Watch every key starting with ``prefix``: an :class:`AsyncWatch` to ``async for``.

        Same semantics as :meth:`EtcdClient.watch_prefix
        <meshware.etcd.EtcdClient.watch_prefix>`. Stop it by cancelling the task iterating
        it, or with ``await watch.aclose()`` (also from another task), or ``async with``.
        """
        return AsyncWatch(
            self, prefix, start_revision=start_revision, prev_kv=prev_kv, read_timeout=read_timeout
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connections (watches have their own: close them too)."""
        await self._http.aclose()
        if self._keepalive_http is not None:
            await self._keepalive_http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncEtcdClient {', '.join(self.endpoints)}>"


class AsyncWatch:
    """A running watch: an async iterator of :class:`WatchResponse` (see
    :class:`~meshware.etcd.Watch`, its blocking twin).
    """

    def __init__(
        self,
        client: AsyncEtcdClient,
        prefix: str,
        *,
        start_revision: int | None,
        prev_kv: bool,
        read_timeout: float | None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._prev_kv = prev_kv
        self._read_timeout = read_timeout
        self.next_revision: int = start_revision or 0
        """The revision to watch from to miss nothing seen so far (0: from now)."""
        self._closed = False
        self._over = False
        self._busy = False
        self._http: httpx.AsyncClient | None = None
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._socket: Any = None
        self._relogged = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> p.WatchResponse:
        if self._closed or self._over:
            raise StopAsyncIteration
        self._busy = True
        try:
            return await self._next()
        except BaseException:
            self._over = True
            raise
        finally:
            self._busy = False
            if self._closed or self._over:
                await self._release()

    async def _next(self) -> p.WatchResponse:
        while True:
            try:
                if self._lines is None:
                    await self._open()
                line = await self._read_line()
            except (httpx.TransportError, StreamEnded) as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                raise RegistryUnavailable(
                    f"the watch on {self._prefix!r} lost etcd: {describe_failure(exc)}; "
                    f"watch again from revision {self.next_revision}"
                ) from exc
            try:
                response = p.parse_watch_line(line)
            except EtcdError as exc:
                if self._relogged or not self._client._settings.retry_after_login(exc, watch=True):
                    raise
                self._relogged = True  # the token may have expired: log in, watch again
                await self._release()
                continue
            self.next_revision = p.next_watch_revision(self.next_revision, response)
            return response

    async def _open(self) -> None:
        client = self._client
        if client._settings.login_needed:
            await client._login()
        request = p.watch_request(
            self._prefix, start_revision=self.next_revision or None, prev_kv=self._prev_kv
        )
        self._http = http = client._new_http(stream=True, read_timeout=self._read_timeout)
        response = await client._send(http, request, stream=True)
        self._response = response
        if response.status_code != 200:
            await response.aread()
            p.parse_answer(request, response.status_code, response.content)  # raises
            raise EtcdError(f"etcd answered the watch with HTTP {response.status_code}")
        stream = response.extensions.get("network_stream")
        self._socket = stream.get_extra_info("socket") if stream is not None else None
        if self._closed:
            raise StreamEnded("closed")
        self._lines = response.aiter_lines()

    async def _read_line(self) -> str:
        assert self._lines is not None
        async for line in self._lines:
            if line.strip():
                return line
        raise StreamEnded("etcd closed the stream")

    async def _release(self) -> None:
        response, http = self._response, self._http
        self._response = self._http = self._lines = self._socket = None
        with anyio.CancelScope(shield=True):  # close even while being cancelled
            if response is not None:
                await response.aclose()
            if http is not None:
                await http.aclose()

    async def aclose(self) -> None:
        """Stop the watch and close its connection; idempotent, also from another task."""
        if self._closed:
            return
        self._closed = True
        if self._busy:
            if self._socket is not None:
                shutdown_socket(self._socket)  # the iterating task wakes up and releases
        else:
            await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()
