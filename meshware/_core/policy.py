"""The client's policy settings: one validated, immutable object, and the per-call view of it.

Design notes
------------
Three layers decide how one request is handled, most specific last:

1. the client's :class:`ClientPolicy` (defaults a Linkerd/Envoy/Finagle user will recognise);
2. the route's published policy (``idempotent``, ``timeout``, ``retries`` in its record, set by
   ``@meshware.policy`` on the server);
3. the request's ``extensions={"meshware": {...}}`` overrides (:func:`read_overrides`).

Everything here is pure and validated up front, so a wrong value fails with a
:class:`~meshware.ConfigError` naming it, at construction time rather than mid-request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import ConfigError

__all__ = [
    "IDEMPOTENT_METHODS",
    "OVERRIDE_KEYS",
    "ClientPolicy",
    "Overrides",
    "read_overrides",
]

#: Methods RFC 9110 defines as idempotent: retried after they reached the wire.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

Balancer = Literal["p2c", "round_robin"]


def _positive(
    name: str, value: float | None, *, allow_none: bool = False, zero: bool = False
) -> None:
    if value is None and allow_none:
        return
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero else value > 0)
    )
    if not ok:
        want = "a number >= 0" if zero else "a positive number"
        raise ConfigError(
            f"{name} must be {want}{' or None' if allow_none else ''}, not {value!r}", setting=name
        )


def _count(name: str, value: object, low: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, not {value!r}", setting=name)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """How a meshware client balances, retries, times out and ejects.

    Retries: ``retries`` attempts after the first (a route's published ``retries`` and the
    request's overrides replace it), on connection errors and ``retry_statuses``, with full-jitter
    backoff between ``backoff_base`` and ``backoff_cap`` seconds, a different instance each time,
    and never more than the retry budget allows: ``budget_percent`` of the requests plus
    ``budget_per_second`` per second, counted over ``budget_window`` seconds per service.
    A ``Retry-After`` answer is honoured up to ``max_retry_after`` seconds.

    Timeouts: ``attempt_timeout`` bounds each attempt (connect, write, read, pool wait); ``None``
    leaves httpx's own timeout in force. ``total_timeout`` bounds the whole request, retries
    included; the time left is sent downstream in the ``X-Meshware-Timeout-Ms`` header.
    No retry starts with less than ``min_retry_window`` seconds left.

    Balancing: ``"p2c"`` (power of two choices over peak-EWMA latency x in-flight requests,
    decaying over ``decay`` seconds) or ``"round_robin"``; health is ignored (panic mode) when fewer
    than ``panic_threshold`` of a route's instances are healthy.

    Ejection: ``eject_after`` consecutive failures (transport errors, timeouts, 502/503/504) eject
    an instance for ``eject_base`` seconds, doubling with each further ejection up to ``eject_max``,
    ±``eject_jitter``; then one probe request may bring it back.

    Request bodies are replayed on a retry only when they are in memory or, with a known length of
    at most ``max_replay_bytes``, can be read into memory first.

    Overload: ``429`` is never retried at once (only after its ``Retry-After``, within the
    deadline), and does not count against the instance's health. When a service keeps answering
    ``429``/``503``, the client refuses its own requests to it with probability
    ``max(0, (requests - throttle_k * accepts) / (requests + 1))`` over the last
    ``throttle_window`` seconds (the SRE book's client-side throttling), raising
    :class:`~meshware.Throttled`; ``throttle_k=0`` turns it off.

    Zones: ``zone`` is the caller's zone for zone-aware balancing (prefer healthy instances of
    that zone, spill over when it is short); ``None`` reads ``MESHWARE_ZONE``, ``""`` turns it off.
    """

    retries: int = 2
    backoff_base: float = 0.025
    backoff_cap: float = 0.25
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))
    max_retry_after: float = 5.0
    attempt_timeout: float | None = None
    total_timeout: float | None = None
    min_retry_window: float = 0.005
    propagate_deadline: bool = True
    budget_percent: float = 0.2
    budget_per_second: float = 10.0
    budget_window: float = 10.0
    balancer: Balancer = "p2c"
    panic_threshold: float = 0.5
    decay: float = 10.0
    eject_after: int = 5
    eject_base: float = 1.0
    eject_max: float = 60.0
    eject_jitter: float = 0.25
    max_replay_bytes: int = 1 << 20
    zone: str | None = None
    throttle_k: float = 2.0
    throttle_window: float = 2.0

    def __post_init__(self) -> None:
        _count("retries", self.retries)
        _positive("backoff_base", self.backoff_base, zero=True)
        _positive("backoff_cap", self.backoff_cap, zero=True)
        if not isinstance(self.retry_statuses, frozenset):
            object.__setattr__(self, "retry_statuses", frozenset(_statuses(self.retry_statuses)))
        else:
            _statuses(self.retry_statuses)
        _positive("max_retry_after", self.max_retry_after, zero=True)
        _positive("attempt_timeout", self.attempt_timeout, allow_none=True)
        _positive("total_timeout", self.total_timeout, allow_none=True)
        _positive("min_retry_window", self.min_retry_window, zero=True)
        _positive("budget_percent", self.budget_percent, zero=True)
        _positive("budget_per_second", self.budget_per_second, zero=True)
        _positive("budget_window", self.budget_window)
        if self.balancer not in ("p2c", "round_robin"):
            raise ConfigError(
                f"balancer must be 'p2c' or 'round_robin', not {self.balancer!r}",
                setting="balancer",
            )
        if not (isinstance(self.panic_threshold, (int, float)) and 0 <= self.panic_threshold <= 1):
            raise ConfigError(
                f"panic_threshold must be between 0 and 1, not {self.panic_threshold!r}",
                setting="panic_threshold",
            )
        _positive("decay", self.decay)
        _count("eject_after", self.eject_after)
        _positive("eject_base", self.eject_base)
        _positive("eject_max", self.eject_max)
        if not (isinstance(self.eject_jitter, (int, float)) and 0 <= self.eject_jitter < 1):
            raise ConfigError(
                f"eject_jitter must be in [0, 1), not {self.eject_jitter!r}", setting="eject_jitter"
            )
        _count("max_replay_bytes", self.max_replay_bytes)
        _positive("throttle_k", self.throttle_k, zero=True)
        _positive("throttle_window", self.throttle_window)
        if self.zone is not None and (not isinstance(self.zone, str) or len(self.zone) > 200):
            raise ConfigError(
                f"zone must be a string of at most 200 characters or None, not {self.zone!r}",
                setting="zone",
            )


def _statuses(values: Iterable[object]) -> Iterable[int]:
    out = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 100 <= v <= 599:
            raise ConfigError(
                f"retry_statuses must hold HTTP status codes (100-599), not {v!r}",
                setting="retry_statuses",
            )
        out.append(v)
    return out


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-request overrides, from ``request.extensions["meshware"]``."""

    retries: int | None = None
    timeout: float | None = None
    total_timeout: float | None = None
    idempotent: bool | None = None


OVERRIDE_KEYS = ("retries", "timeout", "total_timeout", "idempotent")
NO_OVERRIDES = Overrides()


def read_overrides(raw: object) -> Overrides:
    """Validate ``extensions["meshware"]``: a mapping with keys among :data:`OVERRIDE_KEYS`."""
    if raw is None:
        return NO_OVERRIDES
    if not isinstance(raw, Mapping):
        raise ConfigError(
            'extensions["meshware"] must be a dict like {"retries": 0, "timeout": 1.5}, '
            f"not {raw!r}",
            setting='extensions["meshware"]',
        )
    unknown = sorted(str(k) for k in raw if k not in OVERRIDE_KEYS)
    if unknown:
        raise ConfigError(
            f'unknown key(s) in extensions["meshware"]: {", ".join(unknown)} '
            f"(known: {', '.join(OVERRIDE_KEYS)})",
            setting='extensions["meshware"]',
        )
    values: dict[str, Any] = dict(raw)
    if values.get("retries") is not None:
        _count('extensions["meshware"]["retries"]', values["retries"])
    for key in ("timeout", "total_timeout"):
        _positive(f'extensions["meshware"]["{key}"]', values.get(key), allow_none=True)
    if values.get("idempotent") is not None and not isinstance(values["idempotent"], bool):
        raise ConfigError(
            f'extensions["meshware"]["idempotent"] must be True or False, not {values["idempotent"]!r}',
            setting='extensions["meshware"]',
        )
    return Overrides(**values)
