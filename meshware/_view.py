"""A live routing table: a snapshot of the registry, then a watch from that revision.

Design notes
------------
One daemon thread per :class:`MeshView` does all the I/O; requests only read
:attr:`MeshView.table`, a reference to an immutable :class:`~meshware._core.table.RoutingTable`
that the thread swaps after applying each batch of updates (no locks on the read path).

* A dropped watch (etcd restarted, connection reset) resumes from the next revision, so no
  event is lost and none is applied twice; a compacted revision triggers a full re-list.
* A registry that lost its history (etcd restarted with an empty data directory: its revision
  went back; or another cluster answers: its cluster id changed) is noticed when the watch
  reopens (:class:`~meshware.RegistryReset`) and the table is rebuilt from a fresh listing.
  Until then ``connected`` is false (the watch has not been confirmed), so it never claims to be
  current while following a history that no longer exists. While etcd is unreachable the
  watch is retried at least every 0.5 s, so a restarted etcd is seen within about that.
* An update that the table cannot apply (a bug on hostile input; the record codec is total)
  is skipped with one logged error: it never stalls the view on one revision.
* While the registry is unreachable the last-known table stays in force indefinitely (static
  stability): a registry outage never empties the table and never raises into the app.
* Records that do not parse are left out of the table with one warning each.
* **Static stability through registry events** (:mod:`meshware._core.stability`): a record
  that vanishes without having been marked draining stays 0.5 s (settling: it may register
  again at once), then is removed, unless most of its service and at least one other record
  left the same way (a mass lease expiry after an etcd stall): then it is held until it
  registers again, for at most ``hold`` seconds, or until a caller of this process cannot
  connect to it (:meth:`MeshView.refused`, called by the mesh transports). Draining records
  leave at once.
* Operator controls beside the records (weight overrides, live edges: ``v1/overrides/``,
  ``v1/edges/``) are kept in :attr:`MeshView.traffic` (:mod:`meshware._core.traffic`), swapped
  by reference like the table; the table never sees them.
* After a full listing the view freezes the objects alive (``gc.freeze``, see
  :mod:`meshware._gc`): a full collection no longer walks a table of 50,000 routes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ._core.backoff import full_jitter
from ._core.routesets import Assembler
from ._core.stability import HOLD_SECONDS, Stabilizer
from ._core.table import Delete, Reset, Resolution, RoutingTable, Update, Upsert
from ._core.traffic import TrafficState
from ._errors import (
    EtcdCompacted,
    MeshError,
    NoRouteError,
    RegistryReset,
    RegistryUnavailable,
    TableNotLoaded,
)
from ._gc import freeze_after_build
from .registry.base import Registry, Watch

__all__ = ["MeshView"]

log = logging.getLogger("meshware.view")


class MeshView:
    """Keeps :attr:`table` current for every record under ``prefix``.

    ``start()`` loads the first snapshot before returning (so the table is usable at once when
    the registry is up) and then watches in a background thread.
    """

    def __init__(
        self,
        registry: Registry,
        prefix: str = "/meshware",
        *,
        rng: random.Random | None = None,
        on_change: Callable[[RoutingTable], None] | None = None,
        hold: float = HOLD_SECONDS,
    ) -> None:
        self.registry = registry
        self.prefix = prefix.rstrip("/")
        self.table = RoutingTable.empty(self.prefix)
        #: weight overrides and live edges (read by clients and edges, swapped by reference)
        self.traffic = TrafficState.empty(self.prefix)
        self._assembler = Assembler(self.prefix)  # joins schema-2 records with their route sets
        self._rng = rng or random.Random()
        self._on_change = on_change
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._watch: Watch | None = None
        self._next_revision: int | None = None
        self._warned: dict[str, str] = {}
        self._conflicts: set[tuple[str, str, str, tuple[str, ...], str]] = set()
        self.connected = False
        self.last_contact: float | None = None
        self._last_error = ""
        #: wall-clock time of the first failure of the current outage (None while reachable)
        self.unreachable_since: float | None = None
        self._stable = Stabilizer(hold)
        self._holding = False
        self._apply_lock = threading.RLock()  # the watch thread, the hold timer, refused()
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ public

    def start(self, *, first_snapshot_timeout: float | None = None) -> MeshView:
        """Load the table and start watching; returns ``self``. Idempotent."""
        if self._thread is not None:
            return self
        self._stop.clear()
        try:
            self._relist()
        except MeshError as exc:
            log.warning("could not load the mesh table at start; empty for now, retrying: %s", exc)
            self._last_error = str(exc)
            self._unreachable()
        self._thread = threading.Thread(target=self._run, name="meshware-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the table stays as it is)."""
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        timer = self._timer
        if timer is not None:
            timer.cancel()

    def refused(self, url: str) -> None:
        """A caller could not connect to ``url``: if it is held (see the module notes), drop it.

        Called by the mesh transports on every attempt that did not reach the wire; a no-op
        unless something is held.
        """
        if not self._stable.held:
            return
        with self._apply_lock:
            keys = self._stable.refused(url)
            if keys:
                log.info("kept instance %s refused a connection: removed from the table", url)
                self._remove(keys)
                self._schedule()

    def resolve(self, method: str, path: str, *, host: str | None = None) -> Resolution:
        """Resolve through the current table (see :meth:`RoutingTable.resolve`).

        Raises :class:`~meshware.TableNotLoaded` instead of ``NoRouteError`` while the table
        was never loaded (etcd unreachable since the view started).
        """
        try:
            return self.table.resolve(method, path, host=host)
        except NoRouteError:
            error = self.not_loaded_error(method, path)
            if error is not None:
                raise error from None  # the empty table says nothing more
            raise

    @property
    def loaded(self) -> bool:
        """Whether the registry ever answered (the table reflects the mesh, maybe stale)."""
        return self.last_contact is not None

    def not_loaded_error(self, method: str, path: str) -> TableNotLoaded | None:
        """The error naming the cause when the table was never loaded, else ``None``."""
        if self.last_contact is not None:
            return None
        return TableNotLoaded(method, path, since=self.unreachable_since, cause=self._last_error)

    def wait_for(
        self, predicate: Callable[[RoutingTable], bool], timeout: float = 5.0
    ) -> RoutingTable:
        """Block until ``predicate(table)`` is true; raise ``TimeoutError`` after ``timeout``.

        The predicate is checked at each table swap and each change of :attr:`connected`.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.table):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the mesh table did not reach the expected state in {timeout} s"
                    )
                self._changed.wait(left)
            return self.table

    def __enter__(self) -> MeshView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def staleness(self) -> float | None:
        """Seconds since the registry last answered (``None`` before it ever did)."""
        return None if self.last_contact is None else time.monotonic() - self.last_contact

    # ------------------------------------------------------------------ internals

    def _swap(self, table: RoutingTable) -> None:
        for key, problem in table.rejected.items():
            if self._warned.get(key) != problem:
                log.warning("skipping %s", problem)
        self._warned = dict(table.rejected)
        conflicts = {
            (
                c.method,
                c.shape,
                c.winner.service,
                tuple(f"{r.service} ({r.template.text})" for r in c.losers),
                c.kind,
            )
            for c in table.conflicts()
        }
        for method, shape, winner, losers, kind in sorted(conflicts - self._conflicts):
            if kind == "overlap":
                log.warning(
                    "route conflict: %s %s of %s takes paths that %s would serve "
                    "(it wins by precedence)",
                    method,
                    shape,
                    winner,
                    ", ".join(losers),
                )
                continue
            log.warning(
                "route conflict: %s %s is claimed by %s; %s wins (oldest registration)",
                method,
                shape,
                ", ".join((winner, *(loser.split(" (")[0] for loser in losers))),
                winner,
            )
        self._conflicts = conflicts
        with self._changed:
            self.table = table
            self._changed.notify_all()
        if self._on_change is not None:
            try:
                self._on_change(table)
            except Exception:
                log.exception("meshware on_change callback failed")

    def _relist(self, *, fresh: bool = False) -> None:
        snapshot = self.registry.snapshot(self.prefix + "/")
        self._contact()
        with self._apply_lock:
            self._stable.clear()  # the listing is the whole truth
            # after a reset the old table's revisions belong to a lost history: start afresh
            base = RoutingTable.empty(self.prefix) if fresh else self.table
            self._swap(self._apply(base, snapshot))
            self._next_revision = snapshot.revision + 1
        freeze_after_build(len(self.table))  # full collections skip the table (see _gc.py)

    def _event(self, table: RoutingTable, update: Update, now: float) -> RoutingTable:
        """Apply one watch event, unless it is an ungraceful departure to keep for now."""
        if isinstance(update, Delete):
            record = table.record(update.key)
            if record is not None and self._stable.departs(
                update.key, record.service, record.url, record.state, now, update.revision
            ):
                return table
        elif isinstance(update, Upsert):
            self._stable.returned(update.entry.key)
        elif isinstance(update, Reset):
            self._stable.clear()
        return self._apply(table, update)

    def _apply(self, table: RoutingTable, update: Update) -> RoutingTable:
        try:
            traffic, rest = self.traffic.split(update)
            if traffic is not self.traffic:
                for key, problem in traffic.rejected.items():
                    if self.traffic.rejected.get(key) != problem:
                        log.warning("skipping %s", problem)
                self.traffic = traffic
            if rest is None:
                return table
            update = rest
            for change in self._assembler.feed(update):  # schema-2 records joined with their sets
                table = table.apply(change)
            return table
        except Exception:  # a bug: cost only this update, never stall the view on it
            log.exception("meshware could not apply a registry update (%r); skipping it", update)
            return table

    def _remove(self, keys: list[str]) -> None:
        table = self.table
        for key in keys:
            gone = self._stable.departures.get(key)
            revision = max(gone.revision if gone is not None else 0, table.revision)
            table = self._apply(table, Delete(key, revision))
        self._swap(table)

    def _schedule(self) -> None:
        """Arm the timer for the next settle or hold deadline."""
        until = self._stable.next_deadline()
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        if until is None or self._stop.is_set():
            return
        timer = threading.Timer(max(0.0, until - time.monotonic()) + 0.001, self._tick)
        timer.daemon = True
        timer.name = "meshware-hold"
        self._timer = timer
        timer.start()

    def _tick(self) -> None:
        with self._apply_lock:
            held = set(self._stable.held)
            table = self.table
            keys = self._stable.due(
                time.monotonic(),
                lambda service: sum(len(i.records) for i in table.instances(service)),
            )
            newly_held = [
                d for k, d in self._stable.held.items() if d.state == "held" and k in held
            ]
            if newly_held and not self._holding:
                log.warning(
                    "%d instance record(s) vanished without draining at once (an etcd stall?); "
                    "kept for up to %g s until they register again: %s",
                    len(newly_held),
                    self._stable.hold,
                    ", ".join(sorted({f"{d.service} {d.url}" for d in newly_held})[:10]),
                )
            self._holding = bool(newly_held)
            if keys:
                self._remove(keys)
            self._schedule()

    def _contact(self) -> None:
        if not self.connected:
            since = self.unreachable_since
            if since is not None:
                log.info(
                    "mesh view recovered: the registry answers again after %.1f s unreachable%s",
                    max(0.0, time.time() - since),
                    "" if self.last_contact is not None else " (first table loaded now)",
                )
            self.unreachable_since = None
            self._set_connected(True)
        self.last_contact = time.monotonic()

    def _unreachable(self) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.time()

    def _set_connected(self, connected: bool) -> None:
        with self._changed:  # wait_for() predicates may look at `connected` too
            self.connected = connected
            self._changed.notify_all()

    def _run(self) -> None:
        failures = 0
        fresh = False
        while not self._stop.is_set():
            cap = 2.0
            try:
                if self._next_revision is None:
                    self._relist(fresh=fresh)
                    fresh = False
                watch = self.registry.watch(self.prefix + "/", self._next_revision or 0)
                self._watch = watch
                if self._stop.is_set():
                    watch.close()
                    return
                # the watch is opened lazily (etcd's stream by the first read): the registry has
                # answered only once a batch (etcd's `created` confirmation, maybe empty) arrives
                for batch in watch:
                    self._contact()
                    failures = 0
                    if not batch:
                        continue
                    now = time.monotonic()
                    with self._apply_lock:
                        kept = len(self._stable.held)
                        table = self.table
                        for update in batch:
                            table = self._event(table, update, now)
                        self._next_revision = batch[-1].revision + 1
                        self._swap(table)
                        if len(self._stable.held) != kept:
                            self._schedule()
                if self._stop.is_set():
                    return
                # the stream ended without an error (idle timeout): resume from where we are
            except EtcdCompacted as exc:
                log.info("mesh watch revision compacted (%s); re-listing", exc)
                self._next_revision = None
            except RegistryReset as exc:
                log.warning("mesh registry lost its history: %s", exc)
                self._set_connected(False)
                self._next_revision = None
                fresh = True
                failures += 1  # two endpoints of different clusters must not spin
            except RegistryUnavailable as exc:
                if self.connected:
                    log.warning("mesh registry unreachable, keeping the last-known table: %s", exc)
                self._last_error = str(exc)
                self._unreachable()
                self._set_connected(False)
                failures += 1
                cap = 0.5  # refused connections are cheap: notice a restarted etcd quickly
            except MeshError as exc:  # refused credentials, permissions, a broken answer
                if str(exc) != self._last_error:
                    log.warning("mesh watch failed, keeping the last-known table: %s", exc)
                    self._last_error = str(exc)
                self._unreachable()
                self._set_connected(False)
                failures += 1
            except Exception:  # a bug: say so loudly, but keep serving the last-known table
                log.exception("mesh watch failed unexpectedly; retrying")
                self._set_connected(False)
                failures += 1
            finally:
                self._watch = None
            if failures:
                self._stop.wait(full_jitter(min(failures, 8), base=0.05, cap=cap, rng=self._rng))


_shared: tuple[int, MeshView] | None = None
_shared_lock = threading.Lock()
_override: list[object] = []


def shared_view_override() -> object | None:
    """The source :func:`shared_view` currently returns instead of the real view, if any."""
    with _shared_lock:
        return _override[0] if _override else None


def override_shared_view(source: object | None) -> None:
    """Make :func:`shared_view` return ``source`` (a fake mesh) until called with ``None``."""
    with _shared_lock:
        _override.clear()
        if source is not None:
            _override.append(source)


def shared_view() -> Any:
    """The process's default view (``meshware.connect()`` with the ``MESHWARE_*`` settings).

    Every client created without ``mesh=`` shares it, so a process watches etcd once. A forked
    child (a gunicorn worker) gets its own, since threads do not survive ``fork``.
    """
    global _shared
    import os

    with _shared_lock:
        if _override:
            return _override[0]
        pid = os.getpid()
        if _shared is None or _shared[0] != pid:
            from . import connect

            _shared = (pid, connect())
        return _shared[1]
