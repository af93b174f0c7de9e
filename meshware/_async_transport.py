"""The async mesh transport: ``httpx.AsyncClient(transport=meshware.AsyncMeshTransport())``.

The twin of :mod:`meshware._transport`; keep the two in step."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx

from ._core.balance import InstanceStats
from ._core.call import Call, Observer
from ._core.policy import ClientPolicy
from ._core.retry import RESPONSE, UNSENT
from ._core.table import Instance, RoutingTable
from ._pool import install_async
from ._transport_base import (
    MESH_SCHEME,
    MeshSource,
    TransportBase,
    classify,
    default_limits,
    describe,
    retryable_error,
    undialable,
)

__all__ = ["AsyncMeshTransport"]


class _Releasing(httpx.AsyncByteStream):
    """A response body that tells the balancer when the request is over (the body closed)."""

    __slots__ = ("_done", "_owner", "_stats", "_stream")

    def __init__(
        self, stream: httpx.AsyncByteStream, owner: AsyncMeshTransport, stats: InstanceStats
    ) -> None:
        self._stream = stream
        self._owner = owner
        self._stats = stats
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            try:
                await self._stream.aclose()
            finally:
                self._stats.released()


class AsyncMeshTransport(TransportBase[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport):
    """The async twin of :class:`MeshTransport` (same arguments; ``sleep`` is a coroutine function).

    One event loop drives it, so balancer updates need no lock. What follows is the sync docs.

    An httpx transport that routes ``mesh://`` requests through the mesh.

    ``mesh:///users/42`` is resolved by path through the routing table; ``mesh://users/users/42``
    goes to the service ``users``. Each attempt is sent with an ordinary httpx transport per
    instance (``transport_factory(instance)``, by default an :class:`httpx.HTTPTransport` with
    ``verify``, ``cert``, ``http2``, ``trust_env`` and ``limits`` — limits per instance).
    Other URLs go through a plain :class:`httpx.HTTPTransport`.

    ``mesh`` is a :class:`~meshware.MeshView`, a :class:`~meshware.RoutingTable`, or ``None`` for
    the process's shared view of the mesh configured by ``MESHWARE_*`` settings. ``policy`` is a
    :class:`~meshware.ClientPolicy`. ``observer`` replaces the default logging of decisions;
    ``metrics`` (a :class:`meshware.metrics.PrometheusObserver`) observes alongside it.
    ``clock``, ``rng`` and ``sleep`` can be replaced for tests.
    """

    def __init__(
        self,
        mesh: MeshSource | RoutingTable | None = None,
        *,
        policy: ClientPolicy | None = None,
        verify: bool | str | object = True,
        cert: object = None,
        http2: bool = False,
        trust_env: bool = True,
        limits: httpx.Limits | None = None,
        transport_factory: Callable[[Instance], httpx.AsyncBaseTransport] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        metrics: Observer | None = None,
    ) -> None:
        super().__init__(
            mesh,
            policy=policy,
            transport_factory=transport_factory,
            clock=clock,
            rng=rng,
            observer=observer,
            metrics=metrics,
        )
        self._http = {
            "verify": verify,
            "cert": cert,
            "http2": http2,
            "trust_env": trust_env,
            "limits": limits or default_limits(),
        }
        if self.hooks is not None:
            sleep = sleep or self.hooks.asleep
            self._factory = self._factory or self.hooks.async_transport
        self._sleep = sleep or anyio.sleep
        self._plain: httpx.AsyncBaseTransport | None = None

    def _make_transport(self, instance: Instance) -> httpx.AsyncBaseTransport:
        return install_async(httpx.AsyncHTTPTransport(**self._transport_args()))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a live instance of the service that serves it (with retries)."""
        if request.url.scheme != MESH_SCHEME:
            if self._plain is None:
                with self._lock:  # one pass-through transport, even when threads race here
                    if self._plain is None:
                        self._plain = httpx.AsyncHTTPTransport(**self._http)
            return await self._plain.handle_async_request(request)
        table = self.mesh.table
        if table is not self._table:
            for t in self._sync_table(table):
                await t.aclose()
        call = self._begin(request, self.clock(), table)
        try:
            replayable = self._replayable(request)
            if replayable is None:
                await request.aread()
                replayable = True
            call.replayable = replayable
            response = await self._send_async(request, call)
        except BaseException as exc:
            self._finished(call, type(exc).__name__)
            raise
        self._finished(call, f"{response.status_code // 100}xx")
        return response

    async def _send_async(self, request: httpx.Request, call: Call) -> httpx.Response:
        clock = self.clock
        now = clock()
        while True:
            if call.deadline is not None and call.deadline - now <= 0:
                raise self._deadline_passed(call, request)
            stats = call.pick(now)
            call.start(stats, now)
            try:
                try:
                    pool = self._pool(stats)
                    attempt = self._attempt(request, pool, call, self.clock())
                except Exception as exc:  # the instance cannot be dialed: its failure
                    raise undialable(stats.url, exc) from exc
                response = await pool.transport.handle_async_request(attempt)
            except httpx.TransportError as exc:
                stats.released()
                if not retryable_error(exc):
                    stats.aborted()
                    raise
                end = clock()
                outcome = classify(exc)
                if outcome == UNSENT and self._refused is not None:
                    self._refused(stats.url)  # a held instance (see MeshView.refused) leaves
                delay = call.finish(stats, outcome, end, now, error=describe(exc))
                if delay is None:
                    raise self._failure(call, request, exc, end) from exc
                if delay:
                    await self._sleep(delay)
                now = clock()
                continue
            except BaseException:
                stats.released()
                stats.aborted()
                raise
            status = response.status_code
            end = clock()
            retry_after = (
                self._retry_after(response)
                if status == 429 or status in self.policy.retry_statuses
                else None
            )
            delay = call.finish(stats, RESPONSE, end, now, status=status, retry_after=retry_after)
            if delay is None:
                if response.is_closed:  # the body is already in memory (mock transports)
                    stats.released()
                    return response
                response.stream = _Releasing(response.stream, self, stats)  # type: ignore[arg-type]
                return response
            try:
                await response.aread()  # a short error body: read it so the connection is reused
            except httpx.TransportError:
                pass  # the retry goes on: this instance's failure is already counted
            finally:
                await response.aclose()
                stats.released()
            if delay:
                await self._sleep(delay)
            now = clock()

    async def aclose(self) -> None:
        """Close every instance's pool (and the pass-through transport)."""
        with self._lock:
            transports = [p.transport for p in self.pools.values()]
            transports += [t for _, t in self._retired]
            self.pools.clear()
            self._retired.clear()
        if self._plain is not None:
            transports.append(self._plain)
            self._plain = None
        for t in transports:
            await t.aclose()
