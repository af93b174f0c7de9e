"""Keeps one instance record in the registry under a lease, and takes it out cleanly.

Design notes
------------
* The record lives under a lease of ``ttl`` seconds, refreshed every ``ttl / 3``. A process that
  dies (``kill -9``) stops refreshing and its record disappears within ``ttl``.
* If the lease is lost (etcd restarted without its data, a long pause, a partition longer than
  the TTL), a new lease is granted and the record put again, as soon as etcd answers.
* While etcd is unreachable nothing raises into the app: the thread logs once and retries with
  jittered backoff, never longer than a third of the TTL.
* Shutdown is ordered so deploys lose no request: ``drain()`` marks the record ``draining``
  (clients stop picking it within milliseconds, in-flight requests go on), ``withdraw()`` deletes
  it and revokes the lease.
* Schema 2 (the default; ``schema=1`` keeps the old inline records during a migration): the
  routes are published once per service and content as a route set that every instance using it
  keeps alive (:mod:`meshware._routesets_writer`); the record only names it, so joining,
  draining and leaving cost every watcher a few hundred bytes.
* After ``fork()`` a child must not touch its parent's lease: :meth:`Registrar.forget` drops the
  inherited state without any I/O.
* **The record is defended.** A second thread watches the record's own key; when the key is
  deleted (by hand, by a script) or altered while the member runs, the record is put back at
  once under the same lease (a lost lease is the keep-alive thread's business: it re-registers).
  Only :meth:`retract` (the member's drain) and :meth:`withdraw` take the record out for good.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from ._core.backoff import full_jitter
from ._core.records import InstanceRecord, instance_key
from ._core.routesets import RECORD_SCHEMA, encode_record, encode_routeset
from ._core.table import Delete, Reset, Upsert
from ._errors import (
    ConfigError,
    EtcdAuthError,
    EtcdCompacted,
    LeaseLost,
    MeshError,
    RegistryError,
    RegistryReset,
    RegistryUnavailable,
)
from ._routesets_writer import DEFAULT_ROUTESET_TTL, RouteSetHolder
from .registry.base import Registry, Watch

__all__ = ["Registrar"]

log = logging.getLogger("meshware.registrar")


class Registrar:
    """Publishes ``record`` under ``prefix`` and keeps it alive from a daemon thread."""

    def __init__(
        self,
        registry: Registry,
        record: InstanceRecord,
        *,
        prefix: str,
        ttl: int,
        rng: random.Random | None = None,
        on_registered: Callable[[InstanceRecord], None] | None = None,
        schema: int = RECORD_SCHEMA,
        routeset_ttl: int = DEFAULT_ROUTESET_TTL,
    ) -> None:
        self.registry = registry
        self.record = record
        # schema 2: the routes go to a shared route set, the record only names it
        self.routeset = (
            RouteSetHolder(registry, encode_routeset(record), prefix=prefix, ttl=routeset_ttl)
            if schema == RECORD_SCHEMA
            else None
        )
        self.key = instance_key(prefix, record.service, record.instance_id)
        self.ttl = ttl
        self.lease = 0
        self.registered = threading.Event()
        self._rng = rng or random.Random()
        self._on_registered = on_registered
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._warned = False
        self._registrations = 0
        self._retracted = False  # the record was taken out on purpose (drain): do not defend
        self._written = 0  # revision of our last write of the record
        self._guard: threading.Thread | None = None
        self._guard_watch: Watch | None = None
        self.restored = 0  # times the record was put back after a delete or change by others

    def start(self) -> bool:
        """Register now if etcd answers, then keep the lease alive in the background.

        Returns whether the first registration succeeded; when it did not, the background
        thread keeps trying (the app starts either way).
        """
        ok = self._try_register()
        self._thread = threading.Thread(target=self._run, name="meshware-registrar", daemon=True)
        self._thread.start()
        self._guard = threading.Thread(target=self._defend, name="meshware-defend", daemon=True)
        self._guard.start()
        return ok

    def drain(self) -> None:
        """Mark the record ``draining``: clients stop sending new requests to it."""
        with self._lock:
            self.record = self.record.with_state("draining")
            if self.lease:
                try:
                    self._written = self.registry.put(self.key, self._encode(), lease=self.lease)
                except MeshError as exc:
                    log.warning("could not mark %s draining: %s", self.key, exc)

    def update(self, record: InstanceRecord) -> None:
        """Publish a changed record for this instance (weight, state, labels, zone) now.

        The key and the lease stay; the record defence keeps this version from then on (it puts
        back what it last wrote, so a change must come through here, not through etcd directly).
        The route set cannot change this way: a new route set is a new registration.
        """
        if (record.service, record.instance_id) != (self.record.service, self.record.instance_id):
            raise ConfigError(
                f"update() keeps the instance: {record.service}/{record.instance_id} is not "
                f"{self.record.service}/{self.record.instance_id}"
            )
        with self._lock:
            self.record = record
            if self.lease:
                self._written = self.registry.put(self.key, self._encode(), lease=self.lease)

    def retract(self) -> None:
        """Delete the record now (the lease stays until :meth:`withdraw`); it is not put back."""
        with self._lock:
            self._retracted = True
            if self.lease:
                self.registry.delete(self.key)

    def withdraw(self) -> None:
        """Stop the keep-alive, delete the record and revoke the lease (best effort)."""
        self._stopped.set()
        self._wake.set()
        watch = self._guard_watch
        if watch is not None:
            watch.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.ttl)
        with self._lock:
            lease, self.lease = self.lease, 0
            if not lease:
                return
            try:
                self.registry.delete(self.key)
                self.registry.revoke(lease)
            except MeshError as exc:
                log.warning(
                    "could not withdraw %s (its lease expires in %s s): %s", self.key, self.ttl, exc
                )
        self.registered.clear()

    def forget(self) -> None:
        """Drop all state inherited across ``fork()``, without touching the parent's lease."""
        self._stopped.set()
        self._thread = None
        self._guard = None
        self._guard_watch = None
        self.lease = 0
        self.registered.clear()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ internals

    def _encode(self) -> bytes:
        if self.routeset is None:
            return self.record.encode()
        return encode_record(self.record, self.routeset.routeset)

    def _try_register(self) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            try:
                if self.routeset is not None:
                    self.routeset.publish()  # before the record that names it
                lease = self.registry.grant(self.ttl)
                self._written = self.registry.put(self.key, self._encode(), lease=lease)
            except RegistryError as exc:
                self._fail(exc)
                return False
            self.lease = lease
        self._succeed()
        record = self.record
        self._registrations += 1
        log.info(
            "%s %s: %d route%s at %s (instance %s, lease %x, ttl %s s)",
            "registered" if self._registrations == 1 else "re-registered",
            record.service,
            len(record.routes),
            "" if len(record.routes) == 1 else "s",
            record.url,
            record.instance_id,
            lease,
            self.ttl,
        )
        self.registered.set()
        if self._on_registered is not None:
            self._on_registered(self.record)
        return True

    def _keepalive(self) -> bool:
        with self._lock:
            lease = self.lease
            if not lease or self._stopped.is_set():
                return False
            try:
                self.registry.keepalive(lease)
                if self.routeset is not None:
                    self.routeset.refresh()  # every third of the set's TTL
            except LeaseLost:
                log.warning("lease for %s was lost; registering again", self.key)
                self.lease = 0
                self.registered.clear()
                return False
            except RegistryError as exc:
                self._fail(exc)
                return True
        self._succeed()
        return True

    def _fail(self, exc: Exception) -> None:
        self._failures += 1
        if not self._warned:
            if isinstance(exc, EtcdAuthError):
                problem = "etcd refused meshware's credentials or permissions (check "
                problem += "MESHWARE_ETCD_USERNAME/PASSWORD and the user's role on the prefix)"
            elif isinstance(exc, RegistryUnavailable):
                problem = "mesh registry unreachable"
            else:
                problem = "mesh registry error"
            log.warning("%s; %s not (re)registered yet, retrying: %s", problem, self.key, exc)
            self._warned = True

    def _succeed(self) -> None:
        if self._warned:
            log.info("mesh registry reachable again for %s", self.key)
        self._failures = 0
        self._warned = False

    def _delay(self) -> float:
        period = self.ttl / 3
        if not self._failures:
            return period
        return min(period, 0.05 + full_jitter(self._failures, base=0.05, cap=period, rng=self._rng))

    def _defend(self) -> None:
        """Watch our own key; put the record back when someone else deletes or changes it."""
        failures = 0
        start = 0  # 0: check the key as it is now, then watch from there
        while not self._stopped.is_set():
            try:
                if not self.registered.wait(0.5):
                    continue
                if not start:
                    snapshot = self.registry.snapshot(self.key)
                    mine = [e for e in snapshot.entries if e.key == self.key]
                    if not mine:
                        self._restore("missing", snapshot.revision, None)
                    else:
                        self._restore("changed", mine[0].mod_revision, mine[0].value)
                    start = snapshot.revision + 1
                watch = self.registry.watch(self.key, start)
                self._guard_watch = watch
                if self._stopped.is_set():
                    watch.close()
                    return
                for batch in watch:
                    failures = 0
                    for update in batch:
                        start = max(start, update.revision + 1)
                        if isinstance(update, Delete) and update.key == self.key:
                            self._restore("deleted", update.revision, None)
                        elif isinstance(update, Upsert) and update.entry.key == self.key:
                            self._restore("changed", update.revision, update.entry.value)
                        elif isinstance(update, Reset):  # pragma: no cover - not sent by watches
                            start = 0
            except (EtcdCompacted, RegistryReset):
                start = 0  # look at the key afresh
            except MeshError:
                failures += 1
            except Exception:  # a bug: keep defending, but say so
                log.exception("meshware could not watch its own record %s", self.key)
                failures += 1
            finally:
                self._guard_watch = None
            if failures:
                self._stopped.wait(full_jitter(min(failures, 6), base=0.05, cap=1.0, rng=self._rng))

    def _restore(self, what: str, revision: int, value: bytes | None) -> None:
        """Put the record back if the key, as of ``revision``, is not what we last wrote."""
        with self._lock:
            if self._stopped.is_set() or self._retracted or not self.lease:
                return
            if revision <= self._written or value == self._encode():
                return  # our own write, or older than it

            try:
                self._written = self.registry.put(self.key, self._encode(), lease=self.lease)
            except LeaseLost:
                self._wake.set()  # the keep-alive thread registers again with a new lease
                return
            except RegistryError as exc:
                log.warning("could not put back %s (%s by someone else): %s", self.key, what, exc)
                return
            self.restored += 1
        log.warning(
            "the record %s was %s by someone else while this instance runs; put it back",
            self.key,
            what,
        )

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._delay())
            self._wake.clear()
            if self._stopped.is_set():
                return
            if self.lease and self._keepalive():
                continue
            if not self._stopped.is_set():
                self._try_register()
