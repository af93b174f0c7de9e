"""A fake mesh: real apps in process, an in-memory registry, a fake clock, fault injection.

Design notes
------------
The fake falls out of meshware's seams (DESIGN §1), so tests exercise the real code paths:

* **Registry**: records go into a :class:`~meshware.registry.MemoryRegistry` (same semantics as
  etcd, checked by one conformance suite) and the routing table is rebuilt from it, synchronously
  and without threads, whenever its revision moves. A registry outage freezes the last-known
  table, as a real view does.
* **Routes**: apps are introspected by the integrations' own code (with the options of the
  app's ``Mesh(...)`` if it has one, whose etcd registration is then disabled).
* **Transport seam**: every instance gets its own in-process httpx transport (WSGI or ASGI; a
  respx router for stubbed services), handed to the real :class:`~meshware.MeshTransport` through
  the fake's ``client_hooks``, together with the fake clock, a seeded RNG and the policy. Faults
  are applied in that per-instance transport, so retries, failover and ejection run for real.
* **Where apps run**: ASGI apps run on one event loop in a helper thread (an anyio blocking
  portal), where their lifespans also run; sync and async clients both reach them there. WSGI
  apps run in the calling thread (from async clients: in a worker thread). Response bodies are
  buffered.
* **An app that raises** answers ``500`` as a real server would (Flask and Starlette/FastAPI
  alike: httpx's in-process transports would otherwise raise the app's exception into the
  *caller*, and a caller's client would take a downstream ``RetriesExhausted`` for its own), and
  the exception is logged on ``meshware.testing``. ``raise_app_exceptions=True`` re-raises it
  in the test instead (for Flask, through its ``got_request_exception`` signal).
* **Limits**: the limits the apps' routes declare (``@meshware.rate_limit``,
  ``concurrency_limit``) are enforced per replica as a member enforces them (per calling service
  from ``X-Meshware-Caller``, the rate shared by the service's live replicas, ``429`` with
  ``Retry-After``), on the fake clock; an app's own limit middleware is switched off.
* **Calls inside apps**: while a fake mesh is open, ``meshware.Client()`` / ``AsyncClient()``
  created without ``mesh=`` (as a service's own code does) use it, so a service's outgoing calls
  go through the fake mesh too.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from .._core.limits import retry_after_header
from .._core.policy import ClientPolicy
from .._core.records import (
    InstanceRecord,
    Published,
    RouteSpec,
    Routing,
    instance_key,
    validate_service_name,
)
from .._core.table import Instance, RoutingTable
from .._core.templates import parse_template
from .._enforce import CALLER_HEADER
from .._errors import ConfigError, RegistryUnavailable
from ..registry.memory import MemoryRegistry

__all__ = ["FakeMesh", "Fault", "MeshCall", "MeshClock", "ServiceStub"]

FAKE_DOMAIN = "fake-mesh.invalid"

log = logging.getLogger("meshware.testing")


class MeshClock:
    """A clock that moves only when told: :meth:`advance`, or a client's (fake) sleep."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """What clients on this clock call instead of ``time.sleep``: time moves, nobody waits."""
        self.slept.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """The async twin of :meth:`sleep` (yields to the event loop once)."""
        self.sleep(seconds)
        await anyio.sleep(0)


@dataclass(frozen=True, slots=True)
class MeshCall:
    """One attempt that reached (or tried to reach) an instance of the fake mesh."""

    service: str
    instance: str
    replica: int
    method: str
    path: str
    status: int | None
    error: str | None = None


@dataclass(eq=False)
class Fault:
    """An injected fault; :meth:`clear` ends it (or it ends by itself after ``times`` calls)."""

    service: str
    replica: int | None
    kind: str  # "error" | "status" | "delay"
    value: Any
    times: int | None = None
    hits: int = 0
    _mesh: FakeMesh | None = field(default=None, repr=False)

    def clear(self) -> None:
        """Stop injecting this fault."""
        if self._mesh is not None and self in self._mesh._faults:
            self._mesh._faults.remove(self)

    def _applies(self, service: str, replica: int) -> bool:
        return self.service == service and (self.replica is None or self.replica == replica)


@dataclass(eq=False)
class _Replica:
    service: str
    index: int
    url: str
    kind: str  # "wsgi" | "asgi" | "stub"
    target: Any
    record: InstanceRecord
    key: str
    alive: bool = True
    enforcer: Any = None  # the limits its routes declare, on the mesh's clock (made lazily)


class ServiceStub:
    """A service that is not present, answered by a respx router scoped to it.

    ``stub.route("GET", "/invoices/{id:int}")`` publishes the route in the mesh and returns the
    respx route, to set answers (``.respond(200, json=...)``, ``.mock(side_effect=...)``) and
    read its calls (``.called``, ``.calls``). ``stub.router`` is the respx router itself.
    """

    def __init__(self, mesh: FakeMesh, service: str) -> None:
        import respx

        self.mesh = mesh
        self.service = service
        self.router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
        self.specs: list[RouteSpec] = []

    def route(
        self, method: str, template: str, *, public: bool = False, idempotent: bool | None = None
    ) -> Any:
        """Publish ``METHOD template`` for this service and return its respx route."""
        parsed = parse_template(template)
        method = method.upper()
        self.specs.append(RouteSpec(parsed.text, (method,), public=public, idempotent=idempotent))
        self.mesh._publish_stub(self)
        return self.router.route(method=method, path__regex=parsed.regex.pattern)


class _Hooks:
    """What :class:`~meshware.MeshTransport` takes from the fake mesh it is given."""

    def __init__(self, mesh: FakeMesh) -> None:
        self._mesh = mesh
        self.clock = mesh.clock
        self.sleep = mesh.clock.sleep
        self.asleep = mesh.clock.asleep

    @property
    def policy(self) -> ClientPolicy | None:
        return self._mesh.policy

    def rng(self) -> random.Random:
        return random.Random(self._mesh._seeds.random())

    def sync_transport(self, instance: Instance) -> httpx.BaseTransport:
        return _SyncInstance(self._mesh, self._mesh._replica(instance.url))

    def async_transport(self, instance: Instance) -> httpx.AsyncBaseTransport:
        return _AsyncInstance(self._mesh, self._mesh._replica(instance.url))


class FakeMesh:
    """A mesh of in-process apps for tests (see the module docstring).

    ``clock`` (a :class:`MeshClock`) and ``seed`` make balancing, retries, backoff and ejection
    deterministic; ``policy`` is the default :class:`~meshware.ClientPolicy` of every client on
    this mesh. ``raise_app_exceptions`` re-raises an exception an app raised into the test,
    instead of answering ``500`` as a real server does. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        *,
        clock: MeshClock | None = None,
        seed: int = 0,
        policy: ClientPolicy | None = None,
        prefix: str = "/meshware",
        lease_ttl: int = 5,
        raise_app_exceptions: bool = False,
    ) -> None:
        from .._view import override_shared_view, shared_view_override

        self.clock = clock or MeshClock()
        self.policy = policy
        self.prefix = prefix.rstrip("/")
        self.lease_ttl = lease_ttl
        self.raise_app_exceptions = raise_app_exceptions
        self.registry = MemoryRegistry(clock=self.clock)
        self.calls: list[MeshCall] = []
        self.client_hooks = _Hooks(self)
        self._seeds = random.Random(seed)
        self._table = RoutingTable.empty(self.prefix)
        self._revision = -1
        self._replicas: dict[str, _Replica] = {}
        self._stubs: dict[str, ServiceStub] = {}
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._portal_thread: threading.Thread | None = None
        self._closed = False
        self._previous_shared = shared_view_override()
        override_shared_view(self)

    # ------------------------------------------------------------------ the table

    @property
    def table(self) -> RoutingTable:
        """The routing table as of the registry's current contents (last-known during an outage)."""
        with self._lock:
            try:
                self.registry.expire_leases()
                revision = self.registry.revision
                if revision != self._revision:
                    snapshot = self.registry.snapshot(self.prefix + "/")
                    self._table = self._table.apply(snapshot)
                    self._revision = revision
            except RegistryUnavailable:
                pass
            return self._table

    # ------------------------------------------------------------------ members

    def add(
        self,
        service: str,
        app: Any,
        *,
        replicas: int = 1,
        version: str | None = None,
        zone: str | None = None,
        weight: int = 100,
    ) -> list[str]:
        """Serve ``app`` (Flask, Starlette or FastAPI) as ``replicas`` instances of ``service``.

        Its routes are read as the framework integrations read them; ASGI lifespans run now.
        ``zone`` and ``weight`` are published in their records. Returns the instances' URLs.
        """
        kind, routes, routing, framework = _introspect(app)  # first: disables its registration
        validate_service_name(service)
        if not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"replicas must be a whole number >= 1, not {replicas!r}")
        target = app
        if kind == "asgi":
            target = self._start_asgi(app, service)
        elif self.raise_app_exceptions:
            self._watch_flask_exceptions(app)
        urls = []
        for _ in range(replicas):
            index = sum(1 for r in self._replicas.values() if r.service == service)
            url = f"http://{service}-{index}.{FAKE_DOMAIN}"
            record = InstanceRecord(
                service,
                f"fake-{service}-{index}",
                url,
                routes.routes,
                routing=routing,
                shadows=routes.shadows,
                version=version,
                zone=zone,
                weight=weight,
                framework=framework,
            )
            replica = _Replica(
                service,
                index,
                url,
                kind,
                httpx.WSGITransport(app=app) if kind == "wsgi" else target,
                record,
                instance_key(self.prefix, service, record.instance_id),
            )
            self._replicas[url] = replica
            self.registry.put(replica.key, record.encode())
            urls.append(url)
        return urls

    def stub(self, service: str) -> ServiceStub:
        """A stand-in for ``service``, answered by respx (see :class:`ServiceStub`)."""
        validate_service_name(service)
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = ServiceStub(self, service)
        return stub

    def _publish_stub(self, stub: ServiceStub) -> None:
        url = f"http://{stub.service}-stub.{FAKE_DOMAIN}"
        record = InstanceRecord(
            stub.service, f"stub-{stub.service}", url, tuple(stub.specs), framework="respx"
        )
        replica = self._replicas.get(url)
        if replica is None:
            replica = _Replica(
                stub.service,
                0,
                url,
                "stub",
                stub.router,
                record,
                instance_key(self.prefix, stub.service, record.instance_id),
            )
            self._replicas[url] = replica
        replica.record = record
        self.registry.put(replica.key, record.encode())

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        service: str,
        *,
        replica: int | None = None,
        with_: type[Exception] | Exception | int = httpx.ConnectError,
        times: int | None = None,
    ) -> Fault:
        """Make calls to ``service`` (or one replica) fail: an httpx error class or instance, or
        a status code; for ``times`` calls, or until cleared."""
        self._known(service, replica)
        if isinstance(with_, int) and not isinstance(with_, bool):
            return self._fault(Fault(service, replica, "status", with_, times))
        if isinstance(with_, type) and issubclass(with_, Exception):
            return self._fault(Fault(service, replica, "error", with_, times))
        if isinstance(with_, Exception):
            return self._fault(Fault(service, replica, "error", with_, times))
        raise ConfigError(f"with_ must be an exception (class) or a status code, not {with_!r}")

    def delay(
        self, service: str, seconds: float, *, replica: int | None = None, times: int | None = None
    ) -> Fault:
        """Make ``service`` answer ``seconds`` later on the fake clock (an attempt whose read
        timeout is shorter times out instead)."""
        self._known(service, replica)
        if not seconds >= 0:
            raise ConfigError(f"delay must be >= 0 seconds, not {seconds!r}")
        return self._fault(Fault(service, replica, "delay", float(seconds), times))

    def clear_faults(self) -> None:
        """End every injected fault."""
        self._faults.clear()

    def kill(self, service: str, *, replica: int | None = None) -> None:
        """Kill instances: connections are refused; their records stay until the lease expires
        (advance the clock by the lease TTL, or call :meth:`expire`)."""
        for r in self._select(service, replica):
            r.alive = False
            lease = self.registry.grant(self.lease_ttl)
            self.registry.put(r.key, r.record.encode(), lease=lease)

    def revive(self, service: str, *, replica: int | None = None) -> None:
        """Bring killed or withdrawn instances back (serving, registered again)."""
        for r in self._select(service, replica):
            r.alive = True
            r.record = r.record.with_state("serving")
            self.registry.put(r.key, r.record.encode())

    def drain(self, service: str, *, replica: int | None = None) -> None:
        """Mark instances draining: clients send them no new requests."""
        for r in self._select(service, replica):
            r.record = r.record.with_state("draining")
            self.registry.put(r.key, r.record.encode())

    def expire(self, service: str, *, replica: int | None = None) -> None:
        """Their leases expire: the records leave the table (the processes may still answer)."""
        for r in self._select(service, replica):
            self.registry.delete(r.key)

    def outage(self, down: bool = True) -> None:
        """The registry becomes unreachable (``down=False``: back); tables keep the last-known state."""
        _ = self.table  # what clients know when it goes down
        self.registry.outage(down)

    # ------------------------------------------------------------------ clients

    def client(self, **kwargs: Any) -> Any:
        """A :class:`meshware.Client` on this mesh (its clock, RNG and policy)."""
        import meshware

        return meshware.Client(self, **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """A :class:`meshware.AsyncClient` on this mesh."""
        import meshware

        return meshware.AsyncClient(self, **kwargs)

    def calls_to(self, service: str) -> list[MeshCall]:
        """The recorded calls to ``service``."""
        return [c for c in self.calls if c.service == service]

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Run ASGI lifespans' shutdown, stop the app loop, stop standing in for the real mesh."""
        if self._closed:
            return
        self._closed = True
        from .._view import override_shared_view

        try:
            self._stack.close()
        finally:
            override_shared_view(self._previous_shared)

    def __enter__(self) -> FakeMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _fault(self, fault: Fault) -> Fault:
        fault._mesh = self
        self._faults.append(fault)
        return fault

    def _known(self, service: str, replica: int | None) -> None:
        if not self._select(service, replica):
            which = service if replica is None else f"{service} replica {replica}"
            raise ConfigError(f"no instance of {which} in the fake mesh (add() it first)")

    def _select(self, service: str, replica: int | None) -> list[_Replica]:
        return [
            r
            for r in self._replicas.values()
            if r.service == service and (replica is None or r.index == replica)
        ]

    def _replica(self, url: str) -> _Replica:
        found = self._replicas.get(url)
        if found is None:
            raise ConfigError(f"{url} is not an instance of this fake mesh")
        return found

    def _faults_for(self, replica: _Replica) -> list[Fault]:
        out = []
        for fault in list(self._faults):
            if fault._applies(replica.service, replica.index):
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    fault.clear()
                out.append(fault)
        return out

    def _portal_for_asgi(self) -> anyio.from_thread.BlockingPortal:
        if self._portal is None:
            self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
            self._portal_thread = self._portal.call(_current_thread)
        return self._portal

    def _watch_flask_exceptions(self, app: Any) -> None:
        """Flask answers 500 itself; its signal tells us what it caught, to re-raise it."""
        from flask import got_request_exception

        def caught(sender: Any, exception: BaseException, **extra: Any) -> None:
            stack = getattr(_caught, "stack", None)
            if stack:
                stack[-1].append(exception)

        got_request_exception.connect(caught, app, weak=False)
        self._stack.callback(got_request_exception.disconnect, caught, app)

    def _app_raised(
        self, replica: _Replica, request: httpx.Request, exc: Exception
    ) -> httpx.Response:
        """What a caller gets when an app raised: 500, as from a server (or the exception)."""
        if self.raise_app_exceptions:
            raise exc
        log.error(
            "%s (replica %s) raised %s on %s %s: answered 500, as a server would "
            "(FakeMesh(raise_app_exceptions=True) re-raises it in the test)",
            replica.service,
            replica.index,
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return httpx.Response(500, text="Internal Server Error\n")

    def _start_asgi(self, app: Any, service: str) -> Any:
        portal = self._portal_for_asgi()
        state: dict[str, Any] = {}
        lifespan = _Lifespan(app, state)
        future, failure = portal.start_task(lifespan.serve)
        if failure is not None:
            future.result()
            raise ConfigError(f"the app's lifespan startup failed: {failure}")
        self._stack.callback(future.result, 15)
        self._stack.callback(portal.call, lifespan.stop)

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope = {**scope, "state": dict(state)}
            try:
                await app(scope, receive, send)
            except Exception as exc:
                if not self.raise_app_exceptions:  # the transport answers what the app sent: 500
                    log.error(
                        "%s raised %s on %s %s: answered 500, as a server would "
                        "(FakeMesh(raise_app_exceptions=True) re-raises it in the test)",
                        service,
                        type(exc).__name__,
                        scope.get("method", ""),
                        scope.get("path", ""),
                        exc_info=exc,
                    )
                raise

        return httpx.ASGITransport(app=with_state, raise_app_exceptions=self.raise_app_exceptions)

    def _record(
        self, replica: _Replica, request: httpx.Request, status: int | None, error: str | None
    ) -> None:
        self.calls.append(
            MeshCall(
                replica.service,
                replica.url,
                replica.index,
                request.method,
                request.url.raw_path.decode("ascii").split("?", 1)[0],
                status,
                error,
            )
        )

    def _limit(
        self, replica: _Replica, request: httpx.Request
    ) -> tuple[httpx.Response | None, Any]:
        """The limits the replica's routes declare, as a member enforces them (per calling
        service, the rate shared by the service's live replicas), on the mesh's clock:
        ``(429 response, None)``, or ``(None, gate to release when the call is over)``."""
        if replica.kind == "stub":
            return None, None
        enforcer = replica.enforcer
        if enforcer is None:
            from .._enforce import Enforcer

            service = replica.service

            def live() -> int:
                return sum(len(i.records) for i in self.table.instances(service) if i.serving)

            record = replica.record
            enforcer = replica.enforcer = Enforcer(
                service, lambda: record.routes, routing=record.routing, instances=live,
                clock=self.clock,
            )  # fmt: skip
        wait, gate = enforcer.admit(
            request.method,
            request.url.raw_path.decode("latin-1").split("?", 1)[0],
            request.headers.get(CALLER_HEADER),
            "fake-client",
        )
        if wait > 0.0:
            self._record(replica, request, 429, None)
            return httpx.Response(
                429,
                headers={"retry-after": retry_after_header(wait)},
                text="too many requests: this route's limit is reached (fake mesh)\n",
            ), None
        return None, gate

    def _before(self, replica: _Replica, request: httpx.Request) -> httpx.Response | None:
        """Apply faults; a canned response, None to go on, or raise the injected error."""
        if not replica.alive:
            err = "ConnectError: connection refused (killed in the fake mesh)"
            self._record(replica, request, None, err)
            raise httpx.ConnectError(err.split(": ", 1)[1], request=request)
        for fault in self._faults_for(replica):
            if fault.kind == "delay":
                timeout = (request.extensions.get("timeout") or {}).get("read")
                if timeout is not None and fault.value > timeout:
                    self.clock.advance(timeout)
                    self._record(replica, request, None, "ReadTimeout")
                    raise httpx.ReadTimeout("timed out (delayed by the fake mesh)", request=request)
                self.clock.advance(fault.value)
            elif fault.kind == "status":
                self._record(replica, request, fault.value, None)
                return httpx.Response(fault.value, text="injected by the fake mesh\n")
            else:
                exc = (
                    fault.value("injected by the fake mesh")
                    if isinstance(fault.value, type)
                    else fault.value
                )
                if isinstance(exc, httpx.RequestError):
                    exc.request = request
                self._record(replica, request, None, f"{type(exc).__name__}: {exc}")
                raise exc
        return None


def _current_thread() -> threading.Thread:
    return threading.current_thread()


class _Lifespan:
    """Drives an ASGI app's lifespan protocol: one task on the portal's loop, start to close."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self._stop: anyio.Event | None = None

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        send_in, receive_out = anyio.create_memory_object_stream[dict[str, Any]](4)
        started, done, self._stop = anyio.Event(), anyio.Event(), anyio.Event()
        outcome: dict[str, Any] = {"failure": None, "supported": True}

        async def receive() -> dict[str, Any]:
            return await receive_out.receive()

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind.endswith(".failed"):
                outcome["failure"] = message.get("message", "") or kind
            if kind.startswith("lifespan.startup"):
                started.set()
            elif kind.startswith("lifespan.shutdown"):
                done.set()

        async def run_app() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
            try:
                await self.app(scope, receive, send)
            except Exception:
                if not started.is_set():
                    outcome["supported"] = False  # an app without lifespan support
                else:
                    raise
            finally:
                started.set()
                done.set()

        async with send_in, receive_out, anyio.create_task_group() as tg:
            tg.start_soon(run_app)
            await send_in.send({"type": "lifespan.startup"})
            await started.wait()
            task_status.started(outcome["failure"])
            if outcome["failure"] is None:
                await self._stop.wait()
                if outcome["supported"] and not done.is_set():
                    await send_in.send({"type": "lifespan.shutdown"})
                    with anyio.move_on_after(10):
                        await done.wait()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


class _SyncInstance(httpx.BaseTransport):
    """One fake instance, reached from a sync client."""

    def __init__(self, mesh: FakeMesh, replica: _Replica) -> None:
        self.mesh = mesh
        self.replica = replica

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        mesh, replica = self.mesh, self.replica
        canned = mesh._before(replica, request)
        if canned is not None:
            return canned
        refused, gate = mesh._limit(replica, request)
        if refused is not None:
            return refused
        try:
            response = self._dispatch(request)
        except Exception as exc:  # a stub's side effect, an app that raised: still a call
            mesh._record(replica, request, None, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if gate is not None:
                gate.release()
        mesh._record(replica, request, response.status_code, None)
        return response

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        mesh, replica = self.mesh, self.replica
        request.read()
        response: httpx.Response
        if replica.kind == "wsgi":
            status, headers, content = _wsgi_roundtrip(mesh, replica, request)
            response = httpx.Response(status, headers=headers, content=content)
        elif replica.kind == "stub":
            response = replica.target.handler(request)
            response.read()
        else:
            if threading.current_thread() is mesh._portal_thread:
                raise RuntimeError(
                    "a sync meshware.Client was used inside an async view of the fake mesh; "
                    "use meshware.AsyncClient there"
                )
            portal = mesh._portal_for_asgi()
            status, headers, content = portal.call(_asgi_roundtrip, replica.target, request)
            response = httpx.Response(status, headers=headers, content=content)
        return response


class _AsyncInstance(httpx.AsyncBaseTransport):
    """One fake instance, reached from an async client."""

    def __init__(self, mesh: FakeMesh, replica: _Replica) -> None:
        self.mesh = mesh
        self.replica = replica

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        mesh, replica = self.mesh, self.replica
        canned = mesh._before(replica, request)
        if canned is not None:
            return canned
        refused, gate = mesh._limit(replica, request)
        if refused is not None:
            return refused
        try:
            status, headers, content = await self._dispatch(request)
        except Exception as exc:  # a stub's side effect, an app that raised: still a call
            mesh._record(replica, request, None, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if gate is not None:
                gate.release()
        mesh._record(replica, request, status, None)
        return httpx.Response(status, headers=headers, content=content)

    async def _dispatch(self, request: httpx.Request) -> Raw:
        mesh, replica = self.mesh, self.replica
        await request.aread()
        if replica.kind == "wsgi":
            status, headers, content = await anyio.to_thread.run_sync(
                _wsgi_roundtrip, mesh, replica, request
            )
        elif replica.kind == "stub":
            response = await replica.target.async_handler(request)
            await response.aread()
            status, headers, content = response.status_code, response.headers.raw, response.content
        elif threading.current_thread() is mesh._portal_thread:
            status, headers, content = await _asgi_roundtrip(replica.target, request)
        else:
            portal = mesh._portal_for_asgi()
            status, headers, content = await anyio.to_thread.run_sync(
                portal.call, _asgi_roundtrip, replica.target, request
            )
        return status, headers, content


Raw = tuple[int, list[tuple[bytes, bytes]], bytes]


_caught = threading.local()  # per thread, a stack of the exceptions Flask caught per request


def _wsgi_roundtrip(mesh: FakeMesh, replica: _Replica, request: httpx.Request) -> Raw:
    """Run a WSGI app in this thread: 500 when it raised (or the exception, if asked)."""
    stack = _caught.__dict__.setdefault("stack", [])
    caught: list[BaseException] = []
    stack.append(caught)
    try:
        response = replica.target.handle_request(request)
        content = response.read()
    except Exception as exc:  # PROPAGATE_EXCEPTIONS (app.testing), or a bare WSGI app
        response = mesh._app_raised(replica, request, exc)
        content = response.read()
    finally:
        stack.pop()
    if caught and mesh.raise_app_exceptions:
        error = caught[0]
        raise error
    return response.status_code, response.headers.raw, content


async def _asgi_roundtrip(transport: httpx.ASGITransport, request: httpx.Request) -> Raw:
    response = await transport.handle_async_request(request)
    content = await response.aread()
    return response.status_code, response.headers.raw, content


# --------------------------------------------------------------------------- introspection


def _published(got: Any) -> Published:
    return got if isinstance(got, Published) else Published(tuple(got))


def _disable_enforcer(mesh: Any) -> None:
    """The fake mesh enforces the app's limits itself, on its clock: not the app's middleware."""
    enforcer = getattr(mesh, "enforcer", None)
    if enforcer is not None:
        enforcer.disable()


def _introspect(app: Any) -> tuple[str, Published, Routing, str]:
    """``(kind, routes and shadows, routing, framework)`` of an app, as the integrations read it."""
    flask = sys.modules.get("flask")
    if flask is not None and isinstance(app, flask.Flask):
        mesh = app.extensions.get("meshware")
        if mesh is not None and mesh.member is not None:
            mesh.member.disable()
            _disable_enforcer(mesh)
            return "wsgi", _published(mesh.member._routes()), "specificity", "flask"
        from ..integrations._flask_routes import flask_published

        return "wsgi", flask_published(app), "specificity", "flask"
    starlette = sys.modules.get("starlette.routing")
    if starlette is not None:
        from starlette.applications import Starlette
        from starlette.routing import Router

        if isinstance(app, Starlette | Router):
            state = getattr(app, "state", None)
            mesh = getattr(state, "meshware", None) if state is not None else None
            if mesh is not None and mesh.member is not None:
                mesh.member.disable()
                _disable_enforcer(mesh)
                return "asgi", _published(mesh.member._routes()), "ordered", "starlette"
            from ..integrations._starlette_routes import starlette_published

            return "asgi", starlette_published(app), "ordered", "starlette"
    raise ConfigError(
        f"FakeMesh.add() takes a Flask, Starlette or FastAPI app, not {type(app).__name__}; "
        "for a service you do not have, use fake_mesh.stub(service)"
    )
