"""Mesh membership for one app in one process: the lifecycle the framework adapters hook into.

Design notes
------------
The framework adapters (``meshware.integrations.*``) only introspect routes and call
``start()`` / ``stop()`` at the right moments; everything else is here, once:

* **The record** is built at ``start()`` from the adapter's routes, the settings, and the
  advertised URL (``MESHWARE_ADVERTISE_URL``, else the process's listening socket, waited for
  when the server has not bound it yet: Flask's dev server binds after importing the app).
* **Shutdown order** (no request lost in a deploy): on SIGTERM/SIGINT the record is marked
  ``draining`` and, after ``drain_delay``, deleted, *before* the server's own handler starts
  closing its listener; the server then finishes in-flight requests; the lease is revoked when
  the app shuts down (lifespan shutdown, or ``atexit`` for WSGI servers).
* **Processes**: every serving process holds its own record and lease (the instance id holds
  the pid); clients dedupe by URL. Under gunicorn with ``--preload`` the app is imported in the
  master, which never serves: registration is deferred to each forked worker. A child forked by
  anything else (a ``multiprocessing`` pool) silently drops the inherited state, touching
  neither its parent's lease nor the registry.
* **Strict mode** refuses to start when another service already wins one of this service's
  routes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from ._config import EtcdSettings, MemberSettings
from ._core.records import InstanceRecord, Published, RouteSpec, Routing, instance_key
from ._core.table import Entry, RoutingTable, Upsert
from ._errors import ConfigError, MeshError, RegistryError, RouteConflictError
from ._listen import listening_urls
from ._registrar import Registrar
from .registry.base import Registry

__all__ = ["Member", "default_registry"]

log = logging.getLogger("meshware")

RegistryFactory = Callable[[EtcdSettings], Registry]

_members: weakref.WeakSet[Member] = weakref.WeakSet()
_fork_hook_installed = False


def default_registry(settings: EtcdSettings) -> Registry:
    """The etcd registry described by ``settings``."""
    from .registry.etcd import EtcdRegistry

    return EtcdRegistry.from_settings(settings)


class Member:
    """One app's membership in the mesh, for this process."""

    def __init__(
        self,
        settings: MemberSettings,
        *,
        routes: Callable[[], Sequence[RouteSpec] | Published],
        routing: Routing,
        framework: str,
        registry_factory: RegistryFactory | None = None,
    ) -> None:
        self.settings = settings
        self._routes = routes
        self.routing: Routing = routing
        self.framework = framework
        self._registry_factory = registry_factory or default_registry
        self.registry: Registry | None = None
        self.registrar: Registrar | None = None
        self.record: InstanceRecord | None = None
        self._deferred_to_children = False
        self._stopping = False
        self._signals_wrapped: set[int] = set()
        self._starter: threading.Thread | None = None
        self.enabled = True
        _members.add(self)
        _install_fork_hook()

    # ------------------------------------------------------------------ lifecycle

    @property
    def instance_id(self) -> str | None:
        return self.record.instance_id if self.record is not None else None

    def start(
        self, *, socket_wait: float = 0.0, background: bool = False, automatic: bool = False
    ) -> bool:
        """Publish this instance and keep it registered.

        ``socket_wait`` is how long to wait for the server's listening socket when no
        advertise URL is set; with ``background=True`` that wait happens in a thread and
        ``start()`` returns at once (WSGI apps, whose server binds after importing them).
        ``automatic`` starts (a Flask ``Mesh`` created with ``autostart``, a Starlette lifespan)
        are skipped inside a pytest session, where apps are imported and run in process.
        Returns False when it does not register (skipped, or disabled by a fake mesh).
        """
        if not self.enabled:
            return False
        if automatic and _suppressed_by:
            log.debug(
                "not registering %s: imported by %s", self.settings.service, _suppressed_by[-1]
            )
            return False
        if automatic and _automatic_registration_suppressed():
            log.info(
                "meshware: not registering %s automatically inside a pytest session "
                "(set meshware_register = true in the pytest ini to allow it)",
                self.settings.service,
            )
            return False
        if self.settings.strict:
            # before the app serves, in the caller's thread: a conflict stops the server's start
            # (uvicorn's lifespan, gunicorn's worker boot or app load, flask run's app import)
            # with the conflict named, and the process exits non-zero
            self.check_strict()
        if _gunicorn_role() == "master":
            log.info("gunicorn master (--preload); each worker registers itself")
            self._deferred_to_children = True
            return True
        self._launch(socket_wait, background)
        return True

    def _launch(self, socket_wait: float, background: bool) -> None:
        self._stopping = False
        if background:
            self._starter = threading.Thread(
                target=self._start_logged, args=(socket_wait,), name="meshware-start", daemon=True
            )
            self._starter.start()
        else:
            self._start(socket_wait)

    def _start_logged(self, socket_wait: float) -> None:
        try:
            self._start(socket_wait)
        except MeshError as exc:
            log.error("meshware could not register %s: %s", self.settings.service, exc)

    def disable(self) -> None:
        """Never register (the app is served by ``meshware.testing.FakeMesh`` instead).

        A registration already waiting for the server's socket gives up quietly.
        """
        self.enabled = False

    def _start(self, socket_wait: float) -> None:
        show_logs()
        url = self._advertise_url(socket_wait)
        if not self.enabled:
            return
        # werkzeug sets WERKZEUG_SERVER_FD in `flask run` with and without the reloader: only
        # its main thread's stack tells a reloader parent (which never serves) apart
        if (
            os.environ.get("WERKZEUG_SERVER_FD")
            and os.environ.get("WERKZEUG_RUN_MAIN") != "true"
            and _werkzeug_role(wait=5.0) == "reloader"
        ):
            log.info("werkzeug reloader parent; the serving child registers itself")
            return
        introspected = self._routes()
        if isinstance(introspected, Published):
            routes, shadows = introspected.routes, introspected.shadows
        else:
            routes, shadows = tuple(introspected), ()
        pid = os.getpid()
        hostname = socket.gethostname()
        instance_id = f"{_safe(hostname)}-{pid}-{uuid.uuid4().hex[:8]}"
        record = InstanceRecord(
            service=self.settings.service,
            instance_id=instance_id,
            url=url,
            routes=routes,
            shadows=shadows,
            routing=self.routing,
            zone=self.settings.zone,
            weight=self.settings.weight,
            version=self.settings.version,
            labels=self.settings.labels,
            framework=self.framework,
            pid=pid,
            hostname=hostname,
            started_at=time.time(),
        )
        registry = self._registry_factory(self.settings.etcd)
        try:
            lost = self._lost_routes(registry, record)
        except RegistryError as exc:
            if self.settings.strict:
                raise RouteConflictError(f"strict mode: cannot check for conflicts: {exc}") from exc
            lost = []  # etcd is down: the registrar will keep trying; don't block the app
        if lost and self.settings.strict:
            registry.close()
            raise RouteConflictError(
                f"strict mode: service {record.service!r} cannot claim routes already served by "
                f"other services: {'; '.join(lost)}"
            )
        if lost:
            log.warning(
                "routes of %s are already served by other services, which keep them: %s "
                "(MESHWARE_STRICT=true refuses to start instead)",
                record.service,
                "; ".join(lost),
            )
        self.registry = registry
        self.record = record
        self.registrar = Registrar(
            registry,
            record,
            prefix=self.settings.etcd.prefix,
            ttl=self.settings.lease_ttl,
            schema=self.settings.record_schema,
        )
        self.registrar.start()
        if self.settings.strict:
            log.info(
                "meshware strict mode: no route of %s is claimed by another service", record.service
            )

    def drain(self) -> None:
        """Mark this instance draining, wait ``drain_delay``, then withdraw its record.

        In-flight requests go on; clients stop sending new ones. The lease stays until
        :meth:`stop`.
        """
        registrar = self.registrar
        if registrar is None or self._stopping:
            return
        self._stopping = True
        registrar.drain()
        if self.settings.drain_delay:
            time.sleep(self.settings.drain_delay)
        try:
            registrar.retract()  # deleted for good: no longer defended
        except MeshError as exc:
            log.warning("could not withdraw %s: %s", registrar.key, exc)

    def stop(self) -> None:
        """Drain (if not done yet), delete the record, revoke the lease. Idempotent."""
        self.drain()
        registrar, self.registrar = self.registrar, None
        if registrar is not None:
            registered = bool(registrar.lease)
            registrar.withdraw()
            if registered:
                log.info("withdrew %s", registrar.key)
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.close()

    def wait_registered(self, timeout: float = 10.0) -> bool:
        """Block until the first registration succeeded (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            registrar = self.registrar
            if registrar is not None:
                return registrar.registered.wait(max(0.0, deadline - time.monotonic()))
            starter = self._starter
            if starter is not None:
                starter.join(min(0.05, max(0.0, deadline - time.monotonic())))
            else:
                return False
        return False

    # ------------------------------------------------------------------ signals and exit

    def install_signal_handlers(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Drain before the server's own handler runs (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in signals:
            previous = signal.getsignal(signum)
            if getattr(previous, "_meshware_member", None) is not None:
                continue
            handler = _chained_handler(self, signum, previous)
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):
                continue
            self._signals_wrapped.add(signum)

    def stop_at_exit(self) -> None:
        """Withdraw at interpreter exit (for WSGI servers, which have no shutdown hook)."""
        atexit.register(_stop_quietly, weakref.ref(self))

    # ------------------------------------------------------------------ internals

    def _advertise_url(self, socket_wait: float) -> str:
        if self.settings.advertise_url:
            return self.settings.advertise_url
        deadline = time.monotonic() + socket_wait
        while True:
            urls = listening_urls()
            if len(urls) == 1:
                return urls[0]
            if len(urls) > 1:
                raise ConfigError(
                    f"this process listens on several addresses ({', '.join(urls)}): set "
                    "MESHWARE_ADVERTISE_URL (or advertise_url=) to the one peers should call",
                    setting="advertise_url",
                )
            if not self.enabled:
                return ""
            if time.monotonic() >= deadline:
                raise ConfigError(
                    "cannot tell which URL this instance serves: no listening socket found in this "
                    "process. Set MESHWARE_ADVERTISE_URL (or advertise_url=), e.g. http://10.0.0.5:8000",
                    setting="advertise_url",
                )
            time.sleep(0.02)

    def _lost_routes(self, registry: Registry, record: InstanceRecord) -> list[str]:
        """The conflicts this record would take part in, as "METHOD shape (held by X)".

        Whatever the table reports as a conflict between services counts: an identical claim
        another service already wins, and (once the table tracks it) a route of another
        service that this one would shadow, or that shadows this one's. A conflict that
        already existed with this service winning it (an older instance of the same service)
        is not new and does not count.
        """
        from ._core.routesets import Assembler

        prefix = self.settings.etcd.prefix
        snapshot = registry.snapshot(prefix + "/")
        table = RoutingTable.empty(prefix)
        for change in Assembler(prefix).feed(snapshot):  # schema-2 records joined with their sets
            table = table.apply(change)
        before = {_conflict_key(c) for c in table.conflicts()}
        rev = snapshot.revision + 1
        key = instance_key(prefix, record.service, record.instance_id)
        table = table.apply(Upsert(Entry(key, record.encode(), rev, rev), rev))
        if key in table.rejected:
            log.warning("cannot check this instance's routes: %s", table.rejected[key])
            return []
        lost = []
        for c in table.conflicts():
            losers = {r.service for r in c.losers}
            overlap = getattr(c, "kind", "same") == "overlap"
            if record.service in losers:
                how = f"paths taken by {c.winner.service}'s" if overlap else "held by"
                held = (
                    f"{how} {c.winner.template.text}" if overlap else f"held by {c.winner.service}"
                )
                lost.append(f"{c.method} {c.shape} ({held})")
            elif c.winner.service == record.service and _conflict_key(c) not in before:
                others = ", ".join(sorted(losers - {record.service}))
                what = "would take paths of" if overlap else "would take it from"
                lost.append(f"{c.method} {c.winner.template.text} ({what} {others})")
        return lost

    def check_strict(self) -> None:
        """Strict mode, before the app serves: raise :class:`RouteConflictError` naming every
        conflict this service would take part in (or when etcd cannot tell)."""
        record = InstanceRecord(
            service=self.settings.service,
            instance_id=f"strict-check-{os.getpid()}",
            url=self.settings.advertise_url or "http://127.0.0.1:1",
            routes=tuple(self._routes()),
            routing=self.routing,
        )
        registry = self._registry_factory(self.settings.etcd)
        try:
            lost = self._lost_routes(registry, record)
        except RegistryError as exc:
            raise RouteConflictError(f"strict mode: cannot check for conflicts: {exc}") from exc
        finally:
            registry.close()
        if lost:
            raise RouteConflictError(
                f"strict mode: service {record.service!r} refuses to start: its routes conflict "
                f"with other services': {'; '.join(lost)}"
            )

    def _after_fork_in_child(self) -> None:
        registrar = self.registrar
        if registrar is not None:
            registrar.forget()
        self.registrar = None
        self.registry = None  # the parent's connections are not ours to use or close
        self.record = None
        self._starter = None
        if self._deferred_to_children:
            # a worker forked by gunicorn's master: register (the master's frames are still on
            # this stack, so don't ask start() to detect the role again)
            self._deferred_to_children = False
            self._launch(30.0, background=True)
            self.stop_at_exit()


def _chained_handler(
    member: Member, signum: int, previous: Any
) -> Callable[[int, FrameType | None], Any]:
    state = {"draining": False, "handed_over": False}

    def handler(sig: int, frame: FrameType | None) -> Any:
        if callable(previous):
            if state["handed_over"]:  # delivered again after the drain: the server's turn
                return previous(sig, frame)
            if member.settings.drain_delay:
                if state["draining"]:
                    return None  # a repeated signal while draining: the hand-over is coming
                state["draining"] = True

                # Don't block the server's loop for the delay: drain in a thread, then deliver
                # the signal again so that the server's own handler runs in the main thread
                # and wakes its loop as a real signal does (gunicorn's workers sleep in select).
                def drain_then_continue() -> None:
                    _drain_quietly(member, sig)
                    state["handed_over"] = True
                    os.kill(os.getpid(), sig)

                threading.Thread(
                    target=drain_then_continue, name="meshware-drain", daemon=True
                ).start()
                return None
            _drain_quietly(member, sig)
            return previous(sig, frame)
        _drain_quietly(member, sig)
        if previous == signal.SIG_DFL:
            _stop_quietly(weakref.ref(member))
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        return None

    handler._meshware_member = member  # type: ignore[attr-defined]
    return handler


def show_logs() -> None:
    """Make meshware's INFO lines visible when the process configured no logging at all.

    Servers configure their own loggers only (gunicorn's ``gunicorn.error``, uvicorn's
    ``uvicorn.*``), so a member's lines (registered, re-registered, recovered) would reach
    Python's last-resort handler, which drops everything below WARNING. When neither the
    ``meshware`` logger nor any ancestor has a handler, one writing to stderr is added; a
    process that configures logging (``logging.basicConfig``, ``dictConfig`` on the root, a
    server's ``--log-config``) decides alone.
    """
    root = logging.getLogger("meshware")
    with _show_logs_lock:
        if root.hasHandlers():
            return
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [meshware] %(levelname)s %(message)s")
        )
        root.addHandler(handler)
        if root.level == logging.NOTSET:
            root.setLevel(logging.INFO)


_show_logs_lock = threading.Lock()


_suppressed_by: list[str] = []


@contextlib.contextmanager
def registration_suppressed(reason: str) -> Iterator[None]:
    """Apps imported inside this block do not register by themselves (``meshware doctor``)."""
    _suppressed_by.append(reason)
    try:
        yield
    finally:
        _suppressed_by.pop()


def _automatic_registration_suppressed() -> bool:
    """True inside a pytest session with meshware's plugin, unless it allows registration."""
    plugin = sys.modules.get("pytest_meshware")
    return bool(getattr(plugin, "SUPPRESS_AUTOMATIC_REGISTRATION", False))


def _drain_quietly(member: Member, sig: int) -> None:
    try:
        member.drain()
    except Exception:  # never let meshware break the server's shutdown
        log.exception("meshware drain on signal %s failed", sig)


def _stop_quietly(ref: weakref.ref[Member]) -> None:
    member = ref()
    if member is not None:
        try:
            member.stop()
        except Exception:
            log.exception("meshware could not withdraw at exit")


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def _after_fork_in_child() -> None:
    for member in list(_members):
        member._after_fork_in_child()


def _gunicorn_role() -> str | None:
    """``"master"`` when called while gunicorn's arbiter loads the app (``--preload``)."""
    if "gunicorn.arbiter" not in sys.modules:
        return None
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

    role = None
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Worker):
            return "worker"
        if isinstance(owner, Arbiter):
            role = "master"
        frame = frame.f_back
    return role


def _werkzeug_role(wait: float) -> str | None:
    """``"reloader"`` in werkzeug's reloader parent, ``"server"`` where werkzeug serves.

    Read from the main thread's stack (``restart_with_reloader`` or ``serve_forever`` in
    werkzeug), polled for up to ``wait`` seconds while the main thread gets there; ``None``
    if it never does (then the process registers: better than never registering).
    """
    deadline = time.monotonic() + wait
    main = threading.main_thread().ident
    while True:
        frame = sys._current_frames().get(main) if main is not None else None
        while frame is not None:
            code = frame.f_code
            if "werkzeug" in code.co_filename:
                if code.co_name == "restart_with_reloader":
                    return "reloader"
                if code.co_name == "serve_forever":
                    return "server"
            frame = frame.f_back
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _conflict_key(c: Any) -> tuple[Any, ...]:
    losers = tuple(sorted({r.service for r in c.losers}))
    return (getattr(c, "kind", "same"), c.method, c.shape, c.winner.service, losers)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:60] or "host"
