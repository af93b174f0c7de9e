"""Route limits: what a service declares (rate, burst, concurrency) and the token buckets that
enforce it.

Design notes
------------
* **One shape, one validator.** A route's limits travel as the ``"limits"`` object of its entry
  in ``routes[]``: ``{"rate": "20/s", "burst": 10, "per": "client", "concurrency": 8}`` (every
  key optional, at least one of ``rate`` / ``concurrency``). :func:`limits_from_json` is the only
  validator: the ``@meshware.rate_limit`` / ``@meshware.concurrency_limit`` markers, the
  ``Mesh(rate_limits=...)`` option and the record codec all call it, so a limit one of them
  accepts, the others accept too. It is total and bounded: any JSON value either gives a
  :class:`RouteLimits` or raises ``ValueError`` with a message naming the problem. Keys it does
  not know are ignored (a newer writer may add some).
* **Token buckets, nginx's meaning.** ``rate`` requests per ``period`` refill the bucket;
  ``burst`` is how many requests beyond the rate may arrive at once (nginx's ``limit_req burst=N
  nodelay``): the bucket holds ``burst + 1`` tokens. A refused request is told when a token will
  be there (``Retry-After``, whole seconds, at least 1).
* **Shared rates.** A rate is mesh-wide; each enforcement point takes its share
  (:meth:`RouteLimits.share`): a member ``1/N`` of it for N live processes of its service, an
  edge ``1/N`` for N live edges. The burst is shared the same way, rounded up.
* **Per key, bounded.** :class:`RateLimiter` keeps one bucket per key (calling service, client
  address, or one for the route) in an LRU-ordered dict of at most ``max_keys``; the oldest key
  is forgotten first, which can only make the limiter more lenient to it, never refuse wrongly.

Pure: ``now`` is passed in; no I/O, no clock, no threads (callers serialise with their own lock
where threads share a limiter).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MAX_BURST",
    "MAX_CONCURRENCY",
    "MAX_RATE",
    "PERIODS",
    "RateLimiter",
    "RouteLimits",
    "limits_from_json",
    "parse_rate",
    "retry_after_header",
]

#: Seconds per period unit of a rate (``"20/s"``, ``"600/min"``, ``"1000/h"``).
PERIODS = {"s": 1, "min": 60, "h": 3600}
MAX_RATE = 1_000_000  # requests per period
MAX_BURST = 1_000_000
MAX_CONCURRENCY = 1_000_000
MAX_KEYS = 16  # keys of a limits object (bounds the work on a hostile record)

_RATE_RE = re.compile(r"([0-9]{1,7})/(s|min|h)")

Per = Literal["client", "route"]


def _short(value: object) -> str:
    """A value for an error message, bounded (values come from untrusted records)."""
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def parse_rate(text: object) -> tuple[int, int]:
    """``(count, period_seconds)`` from ``"20/s"``, ``"600/min"`` or ``"1000/h"``."""
    if not isinstance(text, str) or len(text) > 16:
        raise ValueError(
            f"a rate is a string like '20/s', '600/min' or '1000/h', not {_short(text)}"
        )
    m = _RATE_RE.fullmatch(text)
    if m is None or not 1 <= int(m.group(1)) <= MAX_RATE:
        raise ValueError(
            f"a rate is COUNT/s, COUNT/min or COUNT/h with COUNT 1-{MAX_RATE} "
            f"(like '20/s'), not {_short(text)}"
        )
    return int(m.group(1)), PERIODS[m.group(2)]


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """The limits a route declares: ``rate`` requests per ``period`` seconds with ``burst``
    extra, counted per calling client (``per="client"``) or for the whole route
    (``per="route"``); at most ``concurrency`` requests in progress at once."""

    rate: int | None = None
    period: int = 1
    burst: int = 0
    per: Per = "client"
    concurrency: int | None = None

    @property
    def rate_text(self) -> str | None:
        """The rate as declared (``"20/s"``), or None."""
        if self.rate is None:
            return None
        unit = next(u for u, s in PERIODS.items() if s == self.period)
        return f"{self.rate}/{unit}"

    @property
    def per_second(self) -> float:
        """The mesh-wide rate in requests per second (0 when there is no rate)."""
        return 0.0 if self.rate is None else self.rate / self.period

    def share(self, n: int) -> tuple[float, int]:
        """``(requests per second, burst)`` for one of ``n`` enforcement points."""
        n = max(1, n)
        return self.per_second / n, math.ceil(self.burst / n)

    def to_json(self) -> dict[str, Any]:
        """The ``"limits"`` object of a route (only what is set)."""
        out: dict[str, Any] = {}
        if self.rate is not None:
            out["rate"] = self.rate_text
            if self.burst:
                out["burst"] = self.burst
            out["per"] = self.per
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        return out


def _whole(raw: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number {low}-{high}, not {_short(value)}")
    return value


def limits_from_json(raw: object) -> RouteLimits:
    """Validate a ``"limits"`` object (module notes); ``ValueError`` says what is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"limits must be an object, not {type(raw).__name__}")
    if len(raw) > MAX_KEYS:
        raise ValueError(f"limits has {len(raw)} keys, more than {MAX_KEYS}")
    rate: int | None = None
    period = 1
    if raw.get("rate") is not None:
        rate, period = parse_rate(raw["rate"])
    burst = _whole(raw, "burst", 0, MAX_BURST)
    per = raw.get("per", "client")
    if per not in ("client", "route"):
        raise ValueError(f"per must be 'client' or 'route', not {_short(per)}")
    concurrency = _whole(raw, "concurrency", 1, MAX_CONCURRENCY)
    if rate is None and concurrency is None:
        raise ValueError("limits need a rate (like '20/s') or a concurrency")
    if rate is None and (burst or "per" in raw):
        raise ValueError("burst and per only make sense with a rate")
    return RouteLimits(rate, period, burst or 0, per, concurrency)


class RateLimiter:
    """Token buckets per key for one route at one enforcement point.

    ``rate`` tokens per second, ``burst + 1`` at most. :meth:`take` answers 0.0 when the request
    may go (a token taken), else the seconds until a token is there.
    """

    __slots__ = ("_buckets", "capacity", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.capacity = float(burst + 1)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, stamp]

    def reconfigure(self, rate: float, burst: int) -> None:
        """A new share (the number of enforcement points changed); buckets keep their tokens."""
        self.rate = rate
        self.capacity = float(burst + 1)

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0.0, or the wait in seconds before one is there."""
        buckets = self._buckets
        b = buckets.get(key)
        capacity = self.capacity
        if b is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            buckets[key] = [capacity - 1.0, now]
            return 0.0
        buckets.move_to_end(key)
        tokens = b[0]
        elapsed = now - b[1]
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > capacity:
                tokens = capacity
            b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        rate = self.rate
        return (1.0 - tokens) / rate if rate > 0 else math.inf


def retry_after_header(wait: float) -> str:
    """``Retry-After`` for a refusal: whole seconds, rounded up, at least 1."""
    if not math.isfinite(wait):
        return "3600"
    return str(max(1, math.ceil(wait)))
