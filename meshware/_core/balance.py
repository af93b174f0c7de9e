"""Load balancing and outlier ejection over one route's instances.

Design notes
------------
Pure: every function takes ``now`` (seconds on any monotonic clock) and a ``random.Random``;
there is no I/O, no clock and no thread here, so the sync and async transports share this code
and tests drive it with a fake clock and a seeded RNG.

* **Power of two choices over peak EWMA** (Finagle's ``PeakEwma``, Linkerd's default): each
  instance keeps an exponentially weighted moving average of its latency that jumps to any
  *higher* observation at once (the peak) and decays towards lower ones over ``decay`` seconds;
  its cost is that average times (in-flight requests + 1). Two distinct instances are drawn at
  random and the cheaper one wins: a slow or overloaded instance quickly stops getting traffic,
  and no instance is ever starved for good, since an idle instance's average decays. An instance
  never measured costs nothing while idle (so new instances are tried at once) and a large
  penalty while busy (so they are not flooded before the first answer).
* **Outlier ejection** (Envoy's consecutive-failures detector): ``eject_after`` failures in a
  row eject an instance for a growing, jittered time; when it elapses the instance may take one
  probe request at a time; a successful probe brings it back, a failed one ejects it again for
  longer. The growth resets once the instance has stayed healthy for twice its last ejection.
* **Panic mode** (Envoy's panic threshold): when fewer than ``panic_threshold`` of the instances
  are healthy, health is ignored and all of them are balanced over, so one bad signal cannot
  take a whole service out of rotation.
* **Weights** (0-10000, published in the record or overridden by an operator). Weight 0 takes
  no new requests while any instance with a weight does (like draining; a retry may still use
  it). When the weights that remain are equal, the plain power of two choices above runs (the
  common case costs nothing more). When they differ, P2C over cost divided by weight does *not*
  give shares proportional to weight (simulated and measured: 0.5 % to 31 % instead of 25 % for
  weights 100/300, depending on concurrency), so both candidates are drawn in proportion to
  weight and the first is kept unless its cost per unit of weight is more than
  :data:`WEIGHT_VETO` times the second's: shares follow the weights within a point or two at any
  concurrency, and a much slower or busier instance still loses most of its picks.
* **Zones** (Envoy's zone-aware routing). A caller with a zone (``MESHWARE_ZONE``) balances over
  the instances of its own zone while they are all available. When some are not, Envoy's rule
  with the callers assumed spread like the instances: the local zone keeps the fraction
  ``(healthy_local / healthy_all) / (local / all)`` of the requests (all of them when that is
  >= 1) and the rest spills over to the other zones; nothing stays local when no local instance
  is available. Retries are never restricted to a zone, so a dying zone loses no request that a
  retry can save.

The counters are plain attributes updated under the GIL; the sync transport serialises updates
from several threads with one lock (a few hundred nanoseconds), the async one needs none.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence

from .policy import ClientPolicy

__all__ = [
    "UNMEASURED_PENALTY",
    "WEIGHT_VETO",
    "Group",
    "InstanceStats",
    "pick_first",
    "pick_p2c",
    "pick_round_robin",
    "pick_weighted",
]

#: The cost of an instance with requests in flight but no latency measured yet (seconds).
UNMEASURED_PENALTY = 1e3

#: Weighted picks: the first weighted draw is replaced by the second when its cost per unit of
#: weight is more than this many times the second's (4: shares within about a point of the
#: weights in simulation at 1-64 requests in flight; 2 drifts by up to 12 points).
WEIGHT_VETO = 4.0


class InstanceStats:
    """What one client knows of one instance (by URL): latency, load and health."""

    __slots__ = (
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "ewma",
        "healthy_since",
        "inflight",
        "last_duration",
        "probing",
        "service",
        "stamp",
        "url",
        "weight",
        "zone",
    )

    def __init__(
        self, service: str, url: str, now: float, *, weight: int = 100, zone: str | None = None
    ) -> None:
        self.service = service
        self.url = url
        self.weight = weight  # the effective weight (published, or an operator's override)
        self.zone = zone
        self.ewma = 0.0  # seconds; 0.0 = never measured
        self.stamp = now
        self.inflight = 0
        self.consecutive_failures = 0
        self.ejected_until = 0.0  # > 0 while ejected or probing
        self.ejections = 0
        self.last_duration = 0.0
        self.healthy_since = now
        self.probing = False

    def __repr__(self) -> str:
        return (
            f"<InstanceStats {self.url} ewma={self.ewma * 1e3:.2f}ms inflight={self.inflight} "
            f"failures={self.consecutive_failures} ejected_until={self.ejected_until:.3f}>"
        )

    # ------------------------------------------------------------------ reading

    def cost(self, now: float, decay: float) -> float:
        """Peak-EWMA latency, decayed to ``now``, times (in-flight + 1)."""
        ewma = self.ewma
        if ewma == 0.0:
            return 0.0 if self.inflight == 0 else UNMEASURED_PENALTY + self.inflight
        elapsed = now - self.stamp
        if elapsed > 0:
            ewma *= math.exp(-elapsed / decay)
        return ewma * (self.inflight + 1)

    def healthy(self) -> bool:
        """Not ejected (a probing instance is not healthy yet)."""
        return self.ejected_until == 0.0

    def available(self, now: float) -> bool:
        """May take a request now: healthy, or ejection over and no probe in flight."""
        until = self.ejected_until
        return until == 0.0 or (now >= until and not self.probing)

    # ------------------------------------------------------------------ updating

    def started(self, now: float) -> None:
        """A request was sent to this instance."""
        self.inflight += 1
        if self.ejected_until and now >= self.ejected_until:
            self.probing = True

    def aborted(self) -> None:
        """An attempt ended without an outcome (cancelled, or an error about the request itself):
        a probe in flight no longer blocks the next one."""
        self.probing = False

    def released(self) -> None:
        """A request to this instance is over (its response closed, or it failed)."""
        if self.inflight > 0:
            self.inflight -= 1

    def observe(self, latency: float, now: float, decay: float) -> None:
        """Fold one latency observation into the peak EWMA."""
        if latency < 0:
            latency = 0.0
        ewma = self.ewma
        if latency > ewma:
            self.ewma = latency
        else:
            elapsed = now - self.stamp
            w = math.exp(-elapsed / decay) if elapsed > 0 else 1.0
            self.ewma = ewma * w + latency * (1.0 - w)
        self.stamp = now

    def succeeded(self, now: float) -> bool:
        """Record a success; True when it ended an ejection (the probe passed)."""
        self.consecutive_failures = 0
        if self.ejected_until:
            self.ejected_until = 0.0
            self.probing = False
            self.healthy_since = now
            return True
        return False

    def failed(self, now: float, policy: ClientPolicy, rng: random.Random) -> float | None:
        """Record a failure; the ejection time in seconds when this failure ejects the instance."""
        self.consecutive_failures += 1
        if self.ejected_until:  # the probe failed (or a request sent in panic mode did)
            if not self.probing and now < self.ejected_until:
                return None  # still ejected: nothing new to decide
            return self._eject(now, policy, rng)
        if policy.eject_after and self.consecutive_failures >= policy.eject_after:
            if now - self.healthy_since > 2 * self.last_duration:
                self.ejections = 0  # healthy long enough: start the growth afresh
            return self._eject(now, policy, rng)
        return None

    def _eject(self, now: float, policy: ClientPolicy, rng: random.Random) -> float:
        self.ejections += 1
        duration = float(
            min(policy.eject_max, policy.eject_base * 2 ** min(self.ejections - 1, 30))
        )
        if policy.eject_jitter:
            duration *= 1.0 + rng.uniform(-policy.eject_jitter, policy.eject_jitter)
        self.last_duration = duration
        self.ejected_until = now + duration
        self.probing = False
        return duration


class Group(list[InstanceStats]):
    """The stats of one set of endpoints, with what weighted and zone-aware picks need.

    Built once per endpoint set and table (:meth:`build`), so a pick allocates nothing.
    ``pickable`` are the instances that take new requests (weight > 0, or all when every weight
    is 0); ``cum`` their cumulative weights when the weights differ (``None``: plain P2C);
    ``local`` / ``remote`` split ``pickable`` by the caller's zone when both sides are non-empty.
    """

    __slots__ = ("cum", "local", "pickable", "remote", "total")

    cum: list[int] | None
    local: Group | None
    pickable: Group
    remote: Group | None
    total: int

    @classmethod
    def build(cls, stats: Sequence[InstanceStats], zone: str | None = None) -> Group:
        group = cls._plain(stats)
        weighted = [s for s in stats if s.weight > 0]
        pickable = group if len(weighted) in (0, len(group)) else cls._plain(weighted)
        group.pickable = pickable
        pickable.pickable = pickable
        if zone is not None:
            local = [s for s in pickable if s.zone == zone]
            if local and len(local) < len(pickable):
                group.local = cls._plain(local)
                group.remote = cls._plain([s for s in pickable if s.zone != zone])
        return group

    @classmethod
    def _plain(cls, stats: Sequence[InstanceStats]) -> Group:
        g = cls(stats)
        g.pickable = g
        g.local = g.remote = None
        weights = [s.weight for s in stats]
        g.total = sum(weights)
        if weights and g.total > 0 and min(weights) != max(weights):
            cum, acc = [], 0
            for w in weights:
                acc += w
                cum.append(acc)
            g.cum = cum
        else:
            g.cum = None
        return g

    def prefers_local(self, now: float, rng: random.Random) -> bool | None:
        """Zone-aware routing: True to pick in :attr:`local`, False in :attr:`remote`, None when
        the caller has no zone split here (module notes: Envoy's rule)."""
        local = self.local
        remote = self.remote
        if local is None or remote is None:
            return None
        healthy_local = 0
        for s in local:
            if s.available(now):
                healthy_local += 1
        n_local = len(local)
        if healthy_local == n_local:
            return True
        if healthy_local == 0:
            return False
        healthy = healthy_local
        for s in remote:
            if s.available(now):
                healthy += 1
        keep = (healthy_local / healthy) * ((n_local + len(remote)) / n_local)
        return keep >= 1.0 or rng.random() < keep


def pick_first(
    group: Group, now: float, rng: random.Random, policy: ClientPolicy
) -> tuple[InstanceStats, bool]:
    """The instance for a request's first attempt: zone, weight 0, weights, then P2C."""
    local = group.prefers_local(now, rng) if group.local is not None else None
    g = group.pickable if local is None else (group.local if local else group.remote)
    assert g is not None
    if g.cum is not None:
        return pick_weighted(g, now, rng, policy)
    return pick_p2c(g, (), now, rng, policy)


def _draw(group: Group, rng: random.Random) -> InstanceStats:
    cum = group.cum
    assert cum is not None
    return group[bisect_right(cum, rng.random() * group.total)]


def pick_weighted(
    group: Group, now: float, rng: random.Random, policy: ClientPolicy
) -> tuple[InstanceStats, bool]:
    """Two draws in proportion to weight; the first unless it is unavailable or its cost per
    unit of weight is more than :data:`WEIGHT_VETO` times the second's (``group.cum`` set)."""
    a = _draw(group, rng)
    b = _draw(group, rng)
    decay = policy.decay
    if a.available(now):
        if a is b or not b.available(now):
            return a, False
        if a.cost(now, decay) * b.weight > WEIGHT_VETO * b.cost(now, decay) * a.weight:
            return b, False
        return a, False
    if b.available(now):
        return b, False
    pool, panic = _eligible(group, (), now, policy.panic_threshold)
    total = 0
    for s in pool:
        total += s.weight
    if total <= 0:
        return pool[rng.randrange(len(pool))], panic
    x = rng.random() * total
    for s in pool:
        x -= s.weight
        if x < 0:
            return s, panic
    return pool[-1], panic


def _healthy_enough(stats: Sequence[InstanceStats], threshold: float) -> bool:
    healthy = 0
    for s in stats:
        if s.ejected_until == 0.0:
            healthy += 1
    return healthy >= threshold * len(stats)


def _eligible(
    stats: Sequence[InstanceStats], tried: Sequence[InstanceStats], now: float, threshold: float
) -> tuple[list[InstanceStats], bool]:
    """Instances a retry or a degraded pick may use, and whether panic mode is on."""
    panic = not _healthy_enough(stats, threshold)
    fresh = [s for s in stats if s not in tried]
    if not fresh:  # every instance tried: a retry may go back to one (never the last one)
        fresh = [s for s in stats if s is not tried[-1]] or list(stats)
    if panic:
        return fresh, True
    usable = [s for s in fresh if s.available(now)]
    return (usable or fresh), not usable


def pick_p2c(
    stats: Sequence[InstanceStats],
    tried: Sequence[InstanceStats],
    now: float,
    rng: random.Random,
    policy: ClientPolicy,
) -> tuple[InstanceStats, bool]:
    """Power of two choices over peak-EWMA cost; returns the pick and whether panic mode was on.

    ``stats`` is not empty; ``tried`` holds the instances earlier attempts of this request used.
    """
    n = len(stats)
    decay = policy.decay
    if not tried:
        if n == 1:
            only = stats[0]
            return only, not only.available(now) and not _healthy_enough(
                stats, policy.panic_threshold
            )
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        if j >= i:
            j += 1
        a = stats[i]
        b = stats[j]
        if a.available(now) and b.available(now):
            return (a if a.cost(now, decay) <= b.cost(now, decay) else b), False
    pool, panic = _eligible(stats, tried, now, policy.panic_threshold)
    if len(pool) == 1:
        return pool[0], panic
    a, b = rng.sample(pool, 2)
    chosen: InstanceStats = a if a.cost(now, decay) <= b.cost(now, decay) else b
    return chosen, panic


def pick_round_robin(
    stats: Sequence[InstanceStats],
    tried: Sequence[InstanceStats],
    now: float,
    counter: int,
    policy: ClientPolicy,
) -> tuple[InstanceStats, bool]:
    """The ``counter``-th instance in turn, skipping unavailable and tried ones."""
    n = len(stats)
    if not tried:
        s = stats[counter % n]
        if s.available(now):
            return s, False
    pool, panic = _eligible(stats, tried, now, policy.panic_threshold)
    return pool[counter % len(pool)], panic
