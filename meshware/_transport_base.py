"""What the sync and async mesh transports share: routing a request, building attempts, pools.

Design notes
------------
The transports are thin twins (httpx's own shape): everything that does not wait on I/O lives
here or in the pure core (:mod:`meshware._core.call`), and each twin only adds its
``handle_request`` loop, its sleep and its pool closing.

Per request, on the hot path: one read of the table reference (swapped by the view's thread; no
lock), one trie lookup, one pick. Per attempt: an ordinary :class:`httpx.Request` to the chosen
instance, sent through that instance's own small transport (one pool per instance, DESIGN §5),
so respx, OpenTelemetry's httpx instrumentation and the user's TLS settings see every attempt.

Requests whose URL is not ``mesh://`` (``client.get("https://example.com")``) pass through to a
plain httpx transport untouched.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import httpx

from ._core.balance import InstanceStats
from ._core.call import Call, Engine, Observer
from ._core.policy import ClientPolicy, read_overrides
from ._core.records import RouteSpec
from ._core.retry import FAILED, TIMEOUT, UNSENT, parse_retry_after
from ._core.table import Instance, Resolution, RoutingTable
from ._deadline import DEADLINE_HEADER, current_deadline
from ._enforce import CALLER_HEADER, caller_name
from ._errors import (
    ConfigError,
    DeadlineExceeded,
    MeshError,
    NoEndpointAvailable,
    NoRouteError,
    RetriesExhausted,
    Throttled,
)
from ._observe import Fanout, LogObserver
from ._urls import InstanceURL

__all__ = ["MESH_SCHEME", "MeshSource", "TransportBase", "default_limits", "undialable"]

MESH_SCHEME = "mesh"

T = TypeVar("T")


class MeshSource(Protocol):
    """Anything with a current :class:`RoutingTable` in ``table`` (a MeshView, a FakeMesh)."""

    @property
    def table(self) -> RoutingTable: ...


class _Static:
    def __init__(self, table: RoutingTable) -> None:
        self.table = table


def default_limits() -> httpx.Limits:
    """Per-instance connection limits (one :class:`~meshware._pool.FastPool` per instance)."""
    return httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=5.0)


class Pool(Generic[T]):
    """One instance's URL, its statistics and its transport.

    The default transports keep an instance's connections in a :class:`~meshware._pool.FastPool`
    (a free list: O(1) per request however many connections are open), so one transport per
    instance serves any load; ``limits`` hold for the whole instance.
    """

    __slots__ = ("stats", "transport", "url")

    def __init__(self, url: InstanceURL, transport: T, stats: InstanceStats) -> None:
        self.url = url
        self.stats = stats  # its in-flight count says when a retired pool may be closed
        self.transport = transport


def classify(exc: httpx.TransportError) -> int:
    """The attempt outcome an httpx transport error stands for."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return UNSENT
    if isinstance(exc, httpx.TimeoutException):
        return TIMEOUT
    return FAILED


def retryable_error(exc: BaseException) -> bool:
    """An httpx transport error that says something about the instance (not about the request)."""
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (MeshError, httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)
    )


def undialable(url: str, exc: Exception) -> httpx.ConnectError:
    """An error building an attempt to ``url`` (its URL does not parse, its pool cannot be made),
    as a connection error: it counts against that instance (ejection) and the request goes on
    to another one, as for a refused connection."""
    return httpx.ConnectError(f"cannot dial instance {url!r}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _request_by_init(
    method: str, url: httpx.URL, headers: httpx.Headers, stream: Any, extensions: dict[str, Any]
) -> httpx.Request:
    return httpx.Request(method, url, headers=headers, stream=stream, extensions=extensions)


def _request_by_fields(
    method: str, url: httpx.URL, headers: httpx.Headers, stream: Any, extensions: dict[str, Any]
) -> httpx.Request:
    # What Request.__init__ stores when given a URL, Headers and a stream, without copying the
    # headers again or re-wrapping the URL (a few microseconds per attempt).
    request = _NEW(httpx.Request)
    request.method = method
    request.url = url
    request.headers = headers
    request.extensions = extensions
    request.stream = stream
    return request


_NEW = object.__new__


def _fields_match() -> bool:
    """Does :func:`_request_by_fields` build what ``httpx.Request`` builds? (checked at import)"""
    try:
        url = httpx.URL("http://127.0.0.1:1/x?y=1")
        headers = httpx.Headers({"host": "127.0.0.1:1", "a": "b"})
        stream = httpx.ByteStream(b"body")
        a = httpx.Request("GET", url, headers=headers, stream=stream, extensions={"k": 1})
        b = _request_by_fields("GET", url, headers, stream, {"k": 1})
        return vars(a).keys() == vars(b).keys() and all(
            vars(a)[k] == vars(b)[k] or k == "stream" for k in vars(a)
        )
    except Exception:  # pragma: no cover - a future httpx
        return False


new_request = _request_by_fields if _fields_match() else _request_by_init


def _headers_for(headers: httpx.Headers, host: bytes, host_text: str) -> httpx.Headers:
    """A copy of ``headers`` with ``Host: host`` (httpx puts Host first: no search needed)."""
    out = _NEW(httpx.Headers)
    items = headers._list.copy()
    out._list = items
    out._encoding = headers._encoding
    if items and items[0][1] == b"host":
        items[0] = (items[0][0], b"host", host)
    else:
        out["host"] = host_text
    return out


def _headers_by_copy(headers: httpx.Headers, host: bytes, host_text: str) -> httpx.Headers:
    out = headers.copy()
    out["host"] = host_text
    return out


def _headers_match() -> bool:
    """Does :func:`_headers_for` build what ``copy()`` and ``["host"] = ...`` build? (at import)"""
    try:
        src = httpx.Request("GET", "mesh:///x", headers={"a": "b", "Host": "y"}).headers
        fast = _headers_for(src, b"h:1", "h:1")
        slow = _headers_by_copy(src, b"h:1", "h:1")
        return (
            vars(httpx.Headers()).keys() == {"_list", "_encoding"}
            and fast.raw == slow.raw
            and fast.encoding == slow.encoding
            and src["host"] == "y"
        )
    except Exception:  # pragma: no cover - a future httpx
        return False


headers_for = _headers_for if _headers_match() else _headers_by_copy


def _add_caller(headers: httpx.Headers, caller: tuple[bytes, bytes, bytes]) -> None:
    """Add ``X-Meshware-Caller`` unless the request carries one (no lower-casing, no copy)."""
    items = headers._list
    lower = caller[1]
    for item in items:
        if item[1] == lower:
            return
    items.append(caller)


def _add_caller_slow(headers: httpx.Headers, caller: tuple[bytes, bytes, bytes]) -> None:
    if CALLER_HEADER not in headers:
        headers[CALLER_HEADER] = caller[2].decode("latin-1")


add_caller = _add_caller if headers_for is _headers_for else _add_caller_slow


def _cap_timeouts(current: object, cap: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    src = current if isinstance(current, dict) else {}
    for key in ("connect", "read", "write", "pool"):
        value = src.get(key)
        out[key] = cap if value is None or value > cap else value
    return out


class TransportBase(Generic[T]):
    """Routing, policy and pool bookkeeping shared by :class:`MeshTransport` and its async twin."""

    def __init__(
        self,
        mesh: MeshSource | RoutingTable | None,
        *,
        policy: ClientPolicy | None,
        transport_factory: Callable[[Instance], T] | None,
        clock: Callable[[], float] | None,
        rng: random.Random | None,
        observer: Observer | None,
        metrics: Observer | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if mesh is None:
            from ._view import shared_view

            mesh = shared_view()
        elif isinstance(mesh, RoutingTable):
            mesh = _Static(mesh)
        elif not hasattr(mesh, "table"):
            raise ConfigError(
                f"mesh must be a MeshView (meshware.connect()), a RoutingTable or None, not {mesh!r}",
                setting="mesh",
            )
        self.mesh: MeshSource = mesh  # type: ignore[assignment]  # checked just above
        # a fake mesh (meshware.testing) brings its own instance transports, clock, RNG, policy
        self.hooks: Any = getattr(mesh, "client_hooks", None)
        # told of attempts that never reached an instance (a MeshView drops held instances)
        self._refused: Callable[[str], None] | None = getattr(mesh, "refused", None)
        if self.hooks is not None:
            policy = policy or self.hooks.policy
            clock = clock or self.hooks.clock
            rng = rng or self.hooks.rng()
        self.policy = policy if policy is not None else ClientPolicy()
        if not isinstance(self.policy, ClientPolicy):
            raise ConfigError(
                f"policy must be a meshware.ClientPolicy, not {self.policy!r}", setting="policy"
            )
        chosen: Observer = observer or LogObserver()
        if metrics is not None:
            chosen = Fanout([chosen, metrics])
            bind = getattr(metrics, "bind", None)
            if bind is not None:
                bind(self.mesh)
        zone = self.policy.zone
        if zone is None:
            zone = os.environ.get("MESHWARE_ZONE", "").strip()
        self.engine = Engine(
            self.policy, rng=rng or random.Random(), observer=chosen, zone=zone or None
        )
        self.clock = clock or time.monotonic
        self._wall = wall_clock
        self._factory = transport_factory
        self.pools: dict[str, Pool[T]] = {}
        self._retired: list[tuple[InstanceStats, T]] = []
        self._table: RoutingTable | None = None
        self._by_service: tuple[RoutingTable | None, dict[str, tuple[Instance, ...]]] = (None, {})
        self._lock = threading.Lock()
        self._http: dict[str, Any] = {}  # httpx transport arguments (set by the twins)
        # sent to callees, who key their per-client limits by it (meshware._enforce)
        name = caller_name()
        self._caller = (
            None
            if name is None
            else (CALLER_HEADER.encode(), CALLER_HEADER.lower().encode(), name.encode("latin-1"))
        )
        self._ssl: Any = None

    # ------------------------------------------------------------------ hooks for the twins

    def _make_transport(self, instance: Instance) -> T:  # pragma: no cover - overridden
        raise NotImplementedError

    def _transport_args(self) -> dict[str, Any]:
        """Arguments for an instance's httpx transport, all sharing one SSL context.

        Building an SSL context loads the CA bundle (20-40 ms): once per client, not once per
        instance inside the first attempt to it (where it overran the attempt's timeout).
        """
        http = self._http
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(
                verify=http["verify"], cert=http["cert"], trust_env=http["trust_env"]
            )
        return {**http, "verify": self._ssl, "cert": None}

    # ------------------------------------------------------------------ routing

    def _sync_table(self, table: RoutingTable) -> list[T]:
        """Adopt a new table; the transports of vanished instances that can be closed now."""
        with self._lock:
            if table is self._table:
                return []
            urls = {i.url for i in table.instances()}
            self.engine.forget_except(urls)
            for url in [u for u in self.pools if u not in urls]:
                pool = self.pools.pop(url)
                self._retired.append((pool.stats, pool.transport))
            self._table = table
            closable = [t for s, t in self._retired if s.inflight == 0]
            self._retired = [(s, t) for s, t in self._retired if s.inflight > 0]
            return closable

    def _begin(self, request: httpx.Request, now: float, table: RoutingTable) -> Call:
        """Resolve ``request`` in ``table`` and start its :class:`Call` (raises routing errors)."""
        url = request.url
        method = request.method
        ref: Any = getattr(url, "_uri_reference", None)
        path = ref.path if ref is not None else url.path
        path = path or "/"
        service = url.host
        spec: RouteSpec | None = None
        try:
            overrides = read_overrides(request.extensions.get("meshware"))
            if not service:
                found = table.resolve(method, path)
                route = found[0]
                endpoints = found[2]
                instances = endpoints.serving
                if not instances:
                    found.require_instances()
                service = route.service
                spec = route.spec
                key: Any = endpoints
            else:
                instances = self._service_instances(table, service)
                if not instances:
                    reason = (
                        "all instances are draining"
                        if table.instances(service)
                        else (
                            "no instance of this service is in the mesh (see `meshware instances`)"
                        )
                    )
                    raise NoEndpointAvailable(service, path, reason=reason)
                match = table.match(method, path)
                if isinstance(match, Resolution) and match.service == service:
                    spec = match.route.spec
                key = instances
        except (NoRouteError, NoEndpointAvailable) as exc:
            not_loaded = getattr(self.mesh, "not_loaded_error", None)
            error = not_loaded(method, path) if not_loaded is not None else None
            if error is not None:  # an empty table because etcd never answered: say so
                error.request = request
                raise error from None  # the empty table says nothing more
            exc.request = request
            raise
        inherited = current_deadline()
        deadline = None if inherited is None else now + (inherited - time.monotonic())
        with self._lock:  # the stats cache and the retry budget are shared by threads
            traffic = getattr(self.mesh, "traffic", None)  # operator weight overrides
            stats = self.engine.stats_list(
                key, instances, now, traffic.weight_of if traffic is not None else None
            )
            call = self.engine.call(
                method, service, f"{method} {path}", stats, spec, overrides, now, deadline
            )
            admitted = call.admit(now)
        if not admitted:
            t = call.throttle
            err = Throttled(
                f"{method} {path}: not sent, {call.reason} (client-side throttling)",
                service=service,
                probability=t.probability(now) if t is not None else 0.0,
            )
            err.request = request
            raise err
        return call

    def _service_instances(self, table: RoutingTable, service: str) -> tuple[Instance, ...]:
        cache = self._by_service
        if cache[0] is not table:  # one cache per table, replaced with it
            cache = self._by_service = (table, {})
        found = cache[1].get(service)
        if found is None:
            found = tuple(i for i in table.instances(service) if i.serving)
            cache[1][service] = found
        return found

    def _pool(self, stats: InstanceStats) -> Pool[T]:
        pool = self.pools.get(stats.url)
        if pool is None:
            with self._lock:
                pool = self.pools.get(stats.url)
                if pool is None:
                    instance = Instance(stats.service, stats.url, "serving", ())
                    factory = self._factory
                    made = self._make_transport(instance) if factory is None else factory(instance)
                    pool = Pool(InstanceURL(stats.url), made, stats)
                    self.pools[stats.url] = pool
        return pool

    # ------------------------------------------------------------------ attempts

    def _attempt(
        self, request: httpx.Request, pool: Pool[T], call: Call, now: float
    ) -> httpx.Request:
        """The request for one attempt: the instance's URL, Host, timeouts, deadline header."""
        timeout = call.attempt_timeout(now)
        url = pool.url
        headers = headers_for(request.headers, url.host_raw, url.host_header)
        if self._caller is not None:
            add_caller(headers, self._caller)  # unless the request says (an edge: \"edge\")
        extensions = request.extensions
        if call.deadline is not None and self.policy.propagate_deadline:
            left = call.deadline - now
            headers[DEADLINE_HEADER] = str(int(left * 1000)) if left > 0 else "0"
        if timeout is not None or "meshware" in extensions:
            extensions = dict(extensions)
            extensions.pop("meshware", None)
            if timeout is not None:
                extensions["timeout"] = _cap_timeouts(extensions.get("timeout"), timeout)
        return new_request(
            request.method, url.join(request.url), headers, request.stream, extensions
        )

    def _finished(self, call: Call, outcome: str) -> None:
        observer = self.engine.observer
        if observer is not None:
            observer.finished(call, outcome, self.clock() - call.started_at)

    def _retry_after(self, response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("retry-after"), wall_now=self._wall())

    def _replayable(self, request: httpx.Request) -> bool | None:
        """True if the body is in memory; None if it can be read into memory first; else False."""
        if isinstance(request.stream, httpx.ByteStream):
            return True
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= self.policy.max_replay_bytes:
            return None
        return False

    def _failure(
        self, call: Call, request: httpx.Request, exc: BaseException, now: float
    ) -> BaseException:
        """The exception to raise when a call stops on an error."""
        attempts = call.attempts
        if (
            call.deadline is not None
            and now >= call.deadline
            and isinstance(exc, httpx.TimeoutException)
        ):
            err: BaseException = DeadlineExceeded(
                f"{call.target} to service {call.service!r}: the deadline passed after "
                f"{len(attempts)} attempt(s): " + "; ".join(str(a) for a in attempts),
                attempts=attempts,
            )
        elif (
            len(attempts) == 1
            and not call.idempotent
            and call.reason.endswith("reached the server")
        ):
            return exc  # nothing was retried: the caller sees httpx's own error
        else:
            cls = RetriesExhausted.like(exc)
            err = cls(
                f"{call.target} to service {call.service!r} failed, no further attempt "
                f"({call.reason}): " + "; ".join(str(a) for a in attempts),
                attempts=attempts,
                reason=call.reason,
            )
        if isinstance(err, httpx.RequestError):
            err.request = request
        return err

    def _deadline_passed(self, call: Call, request: httpx.Request) -> DeadlineExceeded:
        err = DeadlineExceeded(
            f"{call.target} to service {call.service!r}: no time left before the deadline"
            + (f" after {len(call.attempts)} attempt(s)" if call.attempts else ", nothing sent"),
            attempts=call.attempts,
        )
        err.request = request
        return err
