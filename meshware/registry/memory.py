"""An in-memory registry with etcd's semantics, for the fake mesh and for unit tests.

Design notes
------------
It keeps etcd's model exactly where meshware depends on it: one global revision, each key's
create/mod revision, leases whose expiry deletes their keys, watches that replay history from a
revision and fail with :class:`~meshware.EtcdCompacted` below the compaction point. Time comes
from an injected ``clock`` (a fake clock in tests); leases expire when any operation, or
:meth:`MemoryRegistry.expire_leases`, observes that their deadline has passed. ``outage()``
simulates etcd being unreachable: every call then raises :class:`~meshware.RegistryUnavailable`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._core.table import Delete, Entry, Reset, Update, Upsert
from .._errors import EtcdCompacted, LeaseLost, RegistryUnavailable

__all__ = ["MemoryRegistry"]


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str]


class MemoryRegistry:
    """A thread-safe, in-process registry (see :class:`~meshware.registry.Registry`)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._revision = 1
        self._compacted = 0
        self._kv: dict[str, Entry] = {}
        self._key_lease: dict[str, int] = {}
        self._leases: dict[int, _Lease] = {}
        self._history: list[Update] = []
        self._lease_ids = itertools.count(0x1000)
        self._down = False
        self._closed_watches: set[int] = set()

    # ------------------------------------------------------------------ fault injection

    def outage(self, down: bool = True) -> None:
        """Make every call fail with RegistryUnavailable (``down=False`` ends the outage)."""
        with self._cond:
            self._down = down
            self._cond.notify_all()

    def compact(self, revision: int | None = None) -> None:
        """Forget history before ``revision`` (default: now), as etcd's compaction does."""
        with self._cond:
            target = self._revision if revision is None else revision
            self._compacted = max(self._compacted, target)
            self._history = [u for u in self._history if _rev(u) >= self._compacted]

    def expire_leases(self) -> int:
        """Expire every lease whose deadline has passed on the clock; how many expired."""
        with self._cond:
            return self._expire()

    @property
    def revision(self) -> int:
        return self._revision

    # ------------------------------------------------------------------ Registry protocol

    def snapshot(self, prefix: str) -> Reset:
        with self._op():
            entries = tuple(e for k, e in sorted(self._kv.items()) if k.startswith(prefix))
            return Reset(entries, self._revision)

    def watch(self, prefix: str, start_revision: int) -> _MemoryWatch:
        with self._op():
            if start_revision and start_revision <= self._compacted:
                raise EtcdCompacted(
                    f"revision {start_revision} is compacted (oldest kept: {self._compacted})",
                    compact_revision=self._compacted,
                )
            return _MemoryWatch(self, prefix, start_revision or self._revision + 1)

    def grant(self, ttl: int) -> int:
        with self._op():
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _Lease(ttl, self._clock() + ttl, set())
            return lease_id

    def keepalive(self, lease: int) -> int:
        with self._op():
            found = self._leases.get(lease)
            if found is None:
                raise LeaseLost(f"lease {lease:x} not found (expired or revoked)")
            found.deadline = self._clock() + found.ttl
            return found.ttl

    def revoke(self, lease: int) -> None:
        with self._op():
            self._drop_lease(lease)

    def create(self, key: str, value: bytes, *, lease: int = 0) -> Entry | None:
        with self._op():
            if lease and lease not in self._leases:
                raise LeaseLost(f"lease {lease:x} not found (expired or revoked)")
            existing = self._kv.get(key)
            if existing is not None:
                return existing
            self._put(key, value, lease)
            return None

    def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        with self._op():
            if lease and lease not in self._leases:
                raise LeaseLost(f"lease {lease:x} not found (expired or revoked)")
            return self._put(key, value, lease)

    def _put(self, key: str, value: bytes, lease: int) -> int:
        self._revision += 1
        old = self._kv.get(key)
        create = old.create_revision if old is not None else self._revision
        entry = Entry(key, bytes(value), create, self._revision, lease)
        self._kv[key] = entry
        previous = self._key_lease.pop(key, 0)
        if previous and previous in self._leases:
            self._leases[previous].keys.discard(key)
        if lease:
            self._key_lease[key] = lease
            self._leases[lease].keys.add(key)
        self._history.append(Upsert(entry, self._revision))
        self._cond.notify_all()
        return self._revision

    def delete(self, key: str) -> None:
        with self._op():
            self._delete(key)

    def close(self) -> None:
        """Nothing to release; present for the protocol."""

    # ------------------------------------------------------------------ internals

    def _op(self) -> _Locked:
        return _Locked(self)

    def _expire(self) -> int:
        now = self._clock()
        expired = [lid for lid, lease in self._leases.items() if lease.deadline <= now]
        for lid in expired:
            self._drop_lease(lid)
        return len(expired)

    def _drop_lease(self, lease: int) -> None:
        found = self._leases.pop(lease, None)
        if found is not None:
            for key in sorted(found.keys):
                self._delete(key)

    def _delete(self, key: str) -> None:
        if self._kv.pop(key, None) is None:
            return
        lease = self._key_lease.pop(key, 0)
        if lease in self._leases:
            self._leases[lease].keys.discard(key)
        self._revision += 1
        self._history.append(Delete(key, self._revision))
        self._cond.notify_all()

    def _wait_updates(self, watch: _MemoryWatch) -> list[Update]:
        """Block until updates for ``watch`` exist (or it is closed); consume them."""
        with self._cond:
            while True:
                if watch.closed:
                    return []
                if self._down:
                    raise RegistryUnavailable("in-memory registry is in a simulated outage")
                self._expire()
                if watch.next_revision <= self._compacted:
                    raise EtcdCompacted(
                        f"revision {watch.next_revision} is compacted",
                        compact_revision=self._compacted,
                    )
                batch = [
                    u
                    for u in self._history
                    if _rev(u) >= watch.next_revision and _key(u).startswith(watch.prefix)
                ]
                if batch:
                    watch.next_revision = _rev(batch[-1]) + 1
                    return batch
                watch.next_revision = max(watch.next_revision, self._revision + 1)
                self._cond.wait(timeout=0.05)


class _Locked:
    """Context manager: take the lock, fail during an outage, expire due leases."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry

    def __enter__(self) -> None:
        self.registry._cond.acquire()
        if self.registry._down:
            self.registry._cond.release()
            raise RegistryUnavailable("in-memory registry is in a simulated outage")
        self.registry._expire()

    def __exit__(self, *exc: object) -> None:
        self.registry._cond.release()


class _MemoryWatch:
    def __init__(self, registry: MemoryRegistry, prefix: str, start_revision: int) -> None:
        self.registry = registry
        self.prefix = prefix
        self.next_revision = start_revision
        self.closed = False

    def __iter__(self) -> Iterator[list[Update]]:
        yield []  # the watch is established (as etcd's `created` confirmation)
        while not self.closed:
            batch = self.registry._wait_updates(self)
            if batch:
                yield batch

    def close(self) -> None:
        with self.registry._cond:
            self.closed = True
            self.registry._cond.notify_all()


def _rev(update: Update) -> int:
    return update.revision


def _key(update: Update) -> str:
    if isinstance(update, Upsert):
        return update.entry.key
    if isinstance(update, Delete):
        return update.key
    return ""
