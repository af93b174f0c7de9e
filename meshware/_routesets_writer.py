"""Publishes an instance's route set once, and keeps it alive while the instance uses it.

Design notes
------------
The route set (see :mod:`meshware._core.routesets`) is shared by every instance of a service
that publishes the same routes, so it cannot live under one instance's lease. It lives under a
lease of its own, and **every instance that uses it keeps that lease alive** (etcd lets any
client refresh any lease it knows the id of: the id is the ``lease`` of the chunk keys). When the
last instance using a set is gone, nobody refreshes its lease and etcd deletes the set
``routeset_ttl`` seconds later: no sweeper, no clock shared between processes, nothing left
behind by a ``kill -9``.

Publishing (:meth:`RouteSetHolder.publish`), before the instance puts its record:

1. read the set's keys; chunks already there with the right bytes are adopted (their lease is
   refreshed from now on);
2. a missing chunk is written with a transaction that creates it only if it is still absent
   (two instances starting together both succeed: the loser adopts the winner's chunk);
3. a chunk with the wrong bytes under the digest (written by hand, or by a hostile writer of
   the same service) is put right, under this instance's lease.

A lease that turns out to be gone (the set expired just as this instance adopted it, or etcd
lost its data) makes the holder publish again, so the set comes back: a record never points at
a set that nobody is going to write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._core.routesets import RouteSet, routeset_prefix
from ._errors import LeaseLost
from .registry.base import Registry

__all__ = ["DEFAULT_ROUTESET_TTL", "RouteSetHolder"]

log = logging.getLogger("meshware.registrar")

DEFAULT_ROUTESET_TTL = 30
"""Seconds a route set outlives the last instance that used it."""


class RouteSetHolder:
    """Writes ``routeset`` under ``prefix`` (if needed) and keeps its leases alive.

    Not thread-safe: the registrar calls it under its lock.
    """

    def __init__(
        self,
        registry: Registry,
        routeset: RouteSet,
        *,
        prefix: str,
        ttl: int = DEFAULT_ROUTESET_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.routeset = routeset
        self.prefix = prefix.rstrip("/")
        self.ttl = ttl
        self.leases: frozenset[int] = frozenset()
        self._clock = clock
        self._due = 0.0

    def publish(self) -> None:
        """Make sure every chunk is in the registry; adopt the leases they live under."""
        for _ in range(3):
            if self._publish_once():
                self._due = self._clock() + self.ttl / 3
                return
        raise LeaseLost(
            f"route set {self.routeset.digest[:12]}… of {self.routeset.service!r} kept "
            "expiring while it was being published"
        )

    def refresh(self, *, force: bool = False) -> None:
        """Refresh the set's leases when a third of their TTL has passed (or ``force``).

        A lease that is gone means some chunks are gone: publish again.
        """
        if not force and self._clock() < self._due:
            return
        for lease in sorted(self.leases):
            try:
                self.registry.keepalive(lease)
            except LeaseLost:
                log.info(
                    "route set %s… of %s lost its lease; publishing it again",
                    self.routeset.digest[:12],
                    self.routeset.service,
                )
                self.publish()
                return
        self._due = self._clock() + self.ttl / 3

    # ------------------------------------------------------------------ internals

    def _publish_once(self) -> bool:
        rs = self.routeset
        found = {
            e.key: e
            for e in self.registry.snapshot(
                routeset_prefix(self.prefix, rs.service, rs.digest)
            ).entries
        }
        mine = 0
        leases: set[int] = set()
        for key, chunk in zip(rs.keys(self.prefix), rs.chunks, strict=True):
            entry = found.get(key)
            if entry is not None and entry.value == chunk:
                if entry.lease:
                    leases.add(entry.lease)
                continue
            if not mine:
                mine = self.registry.grant(self.ttl)
            if entry is None:
                existing = self.registry.create(key, chunk, lease=mine)
                if existing is None:
                    leases.add(mine)
                    continue
                if existing.value == chunk:  # another instance wrote it meanwhile
                    if existing.lease:
                        leases.add(existing.lease)
                    continue
            log.warning(
                "route set key %s held other bytes than its digest says; writing it again", key
            )
            self.registry.put(key, chunk, lease=mine)
            leases.add(mine)
        if mine and mine not in leases:
            self.registry.revoke(mine)
        for lease in sorted(leases - {mine}):
            try:
                self.registry.keepalive(lease)  # adopted: is it still alive?
            except LeaseLost:
                return False  # its chunks are being deleted: read again and write them
        self.leases = frozenset(leases)
        return True
