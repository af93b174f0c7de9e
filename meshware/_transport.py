"""The sync mesh transport: ``httpx.Client(transport=meshware.MeshTransport())``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import httpx

from ._core.balance import InstanceStats
from ._core.call import Call, Observer
from ._core.policy import ClientPolicy
from ._core.retry import RESPONSE, UNSENT
from ._core.table import Instance, RoutingTable
from ._pool import install
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

__all__ = ["MeshTransport"]


class _Releasing(httpx.SyncByteStream):
    """A response body that tells the balancer when the request is over (the body closed)."""

    __slots__ = ("_done", "_owner", "_stats", "_stream")

    def __init__(
        self, stream: httpx.SyncByteStream, owner: MeshTransport, stats: InstanceStats
    ) -> None:
        self._stream = stream
        self._owner = owner
        self._stats = stats
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def close(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._stream.close()
            finally:
                with self._owner._lock:
                    self._stats.released()


class MeshTransport(TransportBase[httpx.BaseTransport], httpx.BaseTransport):
    """An httpx transport that routes ``mesh://`` requests through the mesh.

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
        transport_factory: Callable[[Instance], httpx.BaseTransport] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
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
            sleep = sleep or self.hooks.sleep
            self._factory = self._factory or self.hooks.sync_transport
        self._sleep = sleep or time.sleep
        self._plain: httpx.BaseTransport | None = None

    def _make_transport(self, instance: Instance) -> httpx.BaseTransport:
        return install(httpx.HTTPTransport(**self._transport_args()))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a live instance of the service that serves it (with retries)."""
        if request.url.scheme != MESH_SCHEME:
            if self._plain is None:
                with self._lock:  # one pass-through transport, even when threads race here
                    if self._plain is None:
                        self._plain = httpx.HTTPTransport(**self._http)
            return self._plain.handle_request(request)
        table = self.mesh.table
        if table is not self._table:
            for t in self._sync_table(table):
                t.close()
        call = self._begin(request, self.clock(), table)
        try:
            replayable = self._replayable(request)
            if replayable is None:
                request.read()
                replayable = True
            call.replayable = replayable
            response = self._send(request, call)
        except BaseException as exc:
            self._finished(call, type(exc).__name__)
            raise
        self._finished(call, f"{response.status_code // 100}xx")
        return response

    def _send(self, request: httpx.Request, call: Call) -> httpx.Response:
        clock = self.clock
        lock = self._lock
        now = clock()
        while True:
            if call.deadline is not None and call.deadline - now <= 0:
                raise self._deadline_passed(call, request)
            with lock:
                stats = call.pick(now)
                call.start(stats, now)
            try:
                try:
                    pool = self._pool(stats)
                    attempt = self._attempt(request, pool, call, self.clock())
                except Exception as exc:  # the instance cannot be dialed: its failure
                    raise undialable(stats.url, exc) from exc
                response = pool.transport.handle_request(attempt)
            except httpx.TransportError as exc:
                with lock:
                    stats.released()
                    if not retryable_error(exc):
                        stats.aborted()
                if not retryable_error(exc):
                    raise
                end = clock()
                with lock:
                    outcome = classify(exc)
                    if outcome == UNSENT and self._refused is not None:
                        self._refused(stats.url)  # a held instance (see MeshView.refused) leaves
                    delay = call.finish(stats, outcome, end, now, error=describe(exc))
                if delay is None:
                    raise self._failure(call, request, exc, end) from exc
                if delay:
                    self._sleep(delay)
                now = clock()
                continue
            except BaseException:
                with lock:
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
            with lock:
                delay = call.finish(
                    stats, RESPONSE, end, now, status=status, retry_after=retry_after
                )
            if delay is None:
                if response.is_closed:  # the body is already in memory (mock transports)
                    with lock:
                        stats.released()
                    return response
                response.stream = _Releasing(response.stream, self, stats)  # type: ignore[arg-type]
                return response
            try:
                response.read()  # a short error body: read it so the connection is reused
            except httpx.TransportError:
                pass  # the retry goes on: this instance's failure is already counted
            finally:
                response.close()
                with lock:
                    stats.released()
            if delay:
                self._sleep(delay)
            now = clock()

    def close(self) -> None:
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
            t.close()
