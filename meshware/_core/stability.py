"""Static stability through registry events: when to keep an instance whose record vanished.

Design notes
------------
A record leaves the registry in two ways. A **graceful** withdrawal marks it ``draining``
first (the member's shutdown): callers must stop at once, and they do. An **ungraceful** one
(the lease expired, the process crashed, someone deleted the key) says only that etcd no longer
hears from the instance, which is also what every instance looks like when *etcd* stalls: a
SIGSTOPped or overloaded etcd that comes back revokes every lease at once, and every table
would empty for the fraction of a second the members need to register again, failing every
call meanwhile though every instance is alive.

The rule, in the spirit of Eureka's self-preservation and Finagle's stabilizer:

* a graceful withdrawal (the record's last state was ``draining``) is applied at once;
* an ungraceful departure is kept in the table for :data:`SETTLE_SECONDS` first (a crash is
  noticed at the lease's expiry anyway, seconds after it happened; this adds a fraction). If
  its key is written again meanwhile (the member registered again), nothing happened;
* after that, it is removed, unless it is part of a **burst**: at least two ungraceful
  departures in the mesh within :data:`HOLD_SECONDS` that have not come back, taking more than
  half of its service's records. A burst's departures are **held** for up to
  :data:`HOLD_SECONDS`: removed when the hold ends, or at once when a caller of this process
  cannot connect to the instance (so a service that really died costs each caller at most one
  refused connection, retried elsewhere at once since it never reached the wire), and
  forgotten when the record comes back.

So an etcd stall changes nothing for callers; one crash among many instances is removed as
before (a fraction of a second later); a dead service leaves the table at its callers' first
refused connection, or :data:`HOLD_SECONDS` after its leases ran out.

Pure: the caller passes ``now``; no I/O, no clock, no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["HOLD_SECONDS", "SETTLE_SECONDS", "Stabilizer"]

HOLD_SECONDS = 10.0
SETTLE_SECONDS = 0.5


@dataclass
class _Departure:
    service: str
    url: str
    at: float
    revision: int = 0  # of the delete
    state: str = "pending"  # pending (settling) -> held, or removed (applied, still counted)


@dataclass
class Stabilizer:
    """Decides what to do with records that left ungracefully; remembers the recent ones."""

    hold: float = HOLD_SECONDS
    settle: float = SETTLE_SECONDS
    departures: dict[str, _Departure] = field(default_factory=dict)

    @property
    def held(self) -> dict[str, _Departure]:
        """Departures still in the table (settling or held), by key."""
        return {k: d for k, d in self.departures.items() if d.state != "removed"}

    def departs(
        self, key: str, service: str, url: str, state: str, now: float, revision: int = 0
    ) -> bool:
        """A record was deleted; True to keep it in the table for now (ungraceful)."""
        self._forget_old(now)
        if state != "serving":
            self.departures.pop(key, None)
            return False  # draining: a graceful withdrawal, applied at once
        self.departures[key] = _Departure(service, url, now, revision)
        return True

    def returned(self, key: str) -> None:
        """A record was written at ``key``: it came back."""
        self.departures.pop(key, None)

    def due(self, now: float, records_of: Callable[[str], int]) -> list[str]:
        """Keys to remove from the table now: settled non-bursts, ended holds.

        ``records_of(service)`` counts the service's records in the table (kept ones included).
        """
        self._forget_old(now)
        out = []
        for key, d in self.departures.items():
            if d.state == "pending" and now >= d.at + self.settle:
                if self._burst(d.service, records_of):
                    d.state = "held"
                else:
                    d.state = "removed"
                    out.append(key)
            elif d.state == "held" and now >= d.at + self.hold:
                d.state = "removed"
                out.append(key)
        return out

    def refused(self, url: str) -> list[str]:
        """Kept keys of the instance at ``url``, which a caller could not connect to."""
        out = [k for k, d in self.departures.items() if d.state != "removed" and d.url == url]
        for k in out:
            self.departures[k].state = "removed"
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`due` may have something to say next."""
        times = [
            d.at + (self.settle if d.state == "pending" else self.hold)
            for d in self.departures.values()
            if d.state != "removed"
        ]
        return min(times, default=None)

    def clear(self) -> None:
        """A full re-list replaced the table: nothing is kept or counted any more."""
        self.departures.clear()

    def _burst(self, service: str, records_of: Callable[[str], int]) -> bool:
        if len(self.departures) < 2:
            return False
        mine = [d for d in self.departures.values() if d.service == service]
        removed = sum(1 for d in mine if d.state == "removed")
        return 2 * len(mine) > records_of(service) + removed

    def _forget_old(self, now: float) -> None:
        for key in [
            k
            for k, d in self.departures.items()
            if d.state == "removed" and d.at <= now - self.hold
        ]:
            del self.departures[key]
