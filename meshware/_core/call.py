"""The policy engine: one :class:`Engine` per client, one :class:`Call` per request.

Design notes
------------
This is the sans-IO heart of the mesh client (the shape of h11: the caller does the I/O and
reports what happened; the engine decides). Both transports drive a call the same way::

    call = engine.call(method, service, endpoints, spec, overrides, now, deadline)
    while True:
        stats = call.pick(now)                     # balancer + ejection + panic mode
        call.start(stats, now)
        ... send the attempt with call.attempt_timeout(now) ...
        delay = call.finish(stats, outcome, now, status=..., error=..., retry_after=...)
        if delay is None: break                    # done: return the response or raise
        ... sleep(delay) ...

The engine owns what outlives a request: per-instance statistics (latency, in-flight, health),
per-service retry budgets and round-robin counters, and the observer that logs and counts.
Nothing here blocks, sleeps, reads a clock or touches a socket.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .backoff import full_jitter
from .balance import Group, InstanceStats, pick_first, pick_p2c, pick_round_robin
from .policy import IDEMPOTENT_METHODS, ClientPolicy, Overrides
from .records import RouteSpec
from .retry import OUTCOME_NAMES, RESPONSE, UNSENT, Attempt, RetryBudget
from .table import Endpoints, Instance
from .throttle import OVERLOAD_STATUSES, AdaptiveThrottle

__all__ = ["Call", "Engine", "Observer"]


class Observer(Protocol):
    """Receives the engine's decisions (logging and metrics implement it)."""

    def attempt(self, call: Call, attempt: Attempt) -> None: ...

    def retry(self, call: Call, delay: float) -> None: ...

    def gave_up(self, call: Call, reason: str) -> None: ...

    def budget_exhausted(self, call: Call) -> None: ...

    def ejected(self, stats: InstanceStats, duration: float, reason: str) -> None: ...

    def restored(self, stats: InstanceStats) -> None: ...

    def panic(self, call: Call) -> None: ...

    def finished(self, call: Call, outcome: str, seconds: float) -> None:
        """The request is over: ``outcome`` is the status class (``"2xx"``) or the error's name."""
        ...


class Engine:
    """Client-wide policy state shared by every request of one client (sync or async)."""

    def __init__(
        self,
        policy: ClientPolicy,
        *,
        rng: random.Random,
        observer: Observer | None = None,
        zone: str | None = None,
    ) -> None:
        self.policy = policy
        self.rng = rng
        self.observer = observer
        self.zone = zone  # the caller's zone: zone-aware balancing when set
        self.stats: dict[str, InstanceStats] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._throttles: dict[str, AdaptiveThrottle] = {}
        self._rr: dict[str, int] = {}
        self._lists: dict[int, tuple[Endpoints | tuple[Instance, ...], Any, Group]] = {}

    # ------------------------------------------------------------------ state

    def forget_except(self, urls: set[str]) -> list[InstanceStats]:
        """Drop what is known of instances no longer in the table; what was dropped.

        An instance that comes back later starts afresh (a restarted process is not the one
        that was ejected).
        """
        gone = [s for url, s in self.stats.items() if url not in urls]
        for s in gone:
            del self.stats[s.url]
        self._lists.clear()
        return gone

    def stats_list(
        self,
        key: Endpoints | tuple[Instance, ...],
        instances: Sequence[Instance],
        now: float,
        weight_of: Callable[[Instance], int] | None = None,
    ) -> Group:
        """The stats of ``instances`` as a :class:`Group` (cached per ``key``, an object that
        lives as long as the table, and ``weight_of``, the operator's weight overrides)."""
        cached = self._lists.get(id(key))
        if cached is not None and cached[0] is key and cached[1] is weight_of:
            return cached[2]
        out = []
        for inst in instances:
            s = self.stats.get(inst.url)
            if s is None:
                s = self.stats[inst.url] = InstanceStats(inst.service, inst.url, now)
            s.weight = inst.weight if weight_of is None else weight_of(inst)
            s.zone = inst.zone
            out.append(s)
        group = Group.build(out, self.zone)
        self._lists[id(key)] = (key, weight_of, group)
        return group

    def budget(self, service: str) -> RetryBudget:
        """The retry budget of ``service``."""
        b = self._budgets.get(service)
        if b is None:
            p = self.policy
            b = self._budgets[service] = RetryBudget(
                p.budget_percent, p.budget_per_second, p.budget_window
            )
        return b

    def throttle(self, service: str) -> AdaptiveThrottle | None:
        """The adaptive throttle of ``service`` (None when the policy turns throttling off)."""
        t = self._throttles.get(service)
        if t is None:
            p = self.policy
            if not p.throttle_k:
                return None
            t = self._throttles[service] = AdaptiveThrottle(p.throttle_k, p.throttle_window)
        return t

    def call(
        self,
        method: str,
        service: str,
        target: str,
        stats: Sequence[InstanceStats],
        spec: RouteSpec | None,
        overrides: Overrides,
        now: float,
        deadline: float | None,
        *,
        replayable: bool = True,
    ) -> Call:
        """Begin one request (counted in the service's retry budget)."""
        return Call(
            self, method, service, target, stats, spec, overrides, now, deadline, replayable
        )


class Call:
    """One logical request: its instances, its policy, its attempts so far."""

    __slots__ = (
        "attempt_timeout_s",
        "attempts",
        "budget",
        "deadline",
        "engine",
        "idempotent",
        "method",
        "panic",
        "reason",
        "replayable",
        "retries",
        "service",
        "started_at",
        "stats",
        "target",
        "throttle",
        "tried",
    )

    def __init__(
        self,
        engine: Engine,
        method: str,
        service: str,
        target: str,
        stats: Sequence[InstanceStats],
        spec: RouteSpec | None,
        overrides: Overrides,
        now: float,
        deadline: float | None,
        replayable: bool,
    ) -> None:
        policy = engine.policy
        self.engine = engine
        self.method = method
        self.service = service
        self.target = target  # "GET /users/42", for messages
        self.stats = stats if isinstance(stats, Group) else Group.build(stats, engine.zone)
        self.started_at = now
        self.attempts: list[Attempt] = []
        self.tried: list[InstanceStats] = []
        self.reason = ""
        self.panic = False
        self.replayable = replayable
        if overrides.idempotent is not None:
            self.idempotent = overrides.idempotent
        elif spec is not None and spec.idempotent is not None:
            self.idempotent = spec.idempotent
        else:
            self.idempotent = method in IDEMPOTENT_METHODS
        if overrides.retries is not None:
            self.retries = overrides.retries
        elif spec is not None and spec.retries is not None:
            self.retries = spec.retries
        else:
            self.retries = policy.retries
        if overrides.timeout is not None:
            self.attempt_timeout_s: float | None = overrides.timeout
        elif spec is not None and spec.timeout is not None:
            self.attempt_timeout_s = spec.timeout
        else:
            self.attempt_timeout_s = policy.attempt_timeout
        total = (
            overrides.total_timeout if overrides.total_timeout is not None else policy.total_timeout
        )
        if total is not None:
            mine = now + total
            deadline = mine if deadline is None or mine < deadline else deadline
        self.deadline = deadline
        self.budget = engine.budget(service)
        self.budget.deposit(now)
        self.throttle = engine.throttle(service)

    def admit(self, now: float) -> bool:
        """May the first attempt go? False when the client throttles itself (the service keeps
        answering 429/503): the caller fails fast with :class:`~meshware.Throttled`."""
        t = self.throttle
        if t is None or t.admit(now, self.engine.rng):
            return True
        self.reason = (
            f"service {self.service!r} answered most recent requests 429/503: this client "
            f"refuses {t.probability(now):.0%} of its requests to it locally for now"
        )
        observer = self.engine.observer
        if observer is not None:
            observer.gave_up(self, self.reason)
        return False

    # ------------------------------------------------------------------ driving

    def pick(self, now: float) -> InstanceStats:
        """The instance for the next attempt (``stats`` must not be empty)."""
        engine = self.engine
        policy = engine.policy
        if policy.balancer == "p2c":
            if self.tried:
                chosen, panic = pick_p2c(self.stats, self.tried, now, engine.rng, policy)
            else:
                chosen, panic = pick_first(self.stats, now, engine.rng, policy)
        else:
            counter = engine._rr.get(self.service, 0)
            engine._rr[self.service] = counter + 1
            pool = self.stats if self.tried else self.stats.pickable
            chosen, panic = pick_round_robin(pool, self.tried, now, counter, policy)
        if panic and not self.panic:
            self.panic = True
            if engine.observer is not None:
                engine.observer.panic(self)
        return chosen

    def attempt_timeout(self, now: float) -> float | None:
        """The timeout for an attempt starting ``now``: the per-attempt one, capped by the deadline."""
        timeout = self.attempt_timeout_s
        if self.deadline is not None:
            left = self.deadline - now
            if timeout is None or left < timeout:
                timeout = max(left, 0.001)  # passed meanwhile: let httpx time out at once
        return timeout

    def start(self, stats: InstanceStats, now: float) -> None:
        """An attempt to ``stats`` begins."""
        self.tried.append(stats)
        stats.started(now)

    def finish(
        self,
        stats: InstanceStats,
        outcome: int,
        now: float,
        started: float,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> float | None:
        """Record an attempt's outcome; the delay before the next attempt, or ``None`` to stop.

        When it returns ``None`` after a failure that a retry could have fixed, :attr:`reason`
        says why no retry is made. The caller releases ``stats`` (in-flight count) itself, when
        the response is closed or at once for a failure.
        """
        engine = self.engine
        policy = engine.policy
        observer = engine.observer
        duration = now - started
        attempt = Attempt(stats.url, OUTCOME_NAMES[outcome], status, error, started, duration)
        self.attempts.append(attempt)
        if observer is not None:
            observer.attempt(self, attempt)

        throttle = self.throttle
        if outcome == RESPONSE:
            if throttle is not None:
                throttle.record(now, status not in OVERLOAD_STATUSES)
            if status not in policy.retry_statuses:
                stats.observe(duration, now, policy.decay)
                if stats.succeeded(now) and observer is not None:
                    observer.restored(stats)
                if status != 429:
                    return None
                # 429: the service asks this caller to slow down; the instance is fine. Never
                # retried at once, elsewhere or not: only after its Retry-After, if any.
                if retry_after is None:
                    return self._stop("429 Too Many Requests without Retry-After")

        if status != 429:
            # a failure: count it against the instance, then see whether a retry may fix it
            if outcome != UNSENT:
                stats.observe(duration, now, policy.decay)
            ejected = stats.failed(now, policy, engine.rng)
            if ejected is not None and observer is not None:
                observer.ejected(
                    stats,
                    ejected,
                    f"{stats.consecutive_failures} consecutive failures, the last: "
                    f"{attempt.status if attempt.status is not None else attempt.error}",
                )

        if outcome != UNSENT and not self.idempotent:
            return self._stop(f"{self.method} is not idempotent and the request reached the server")
        if outcome != UNSENT and not self.replayable:
            return self._stop("the request body was streamed and cannot be sent again")
        if len(self.attempts) > self.retries:
            n = len(self.attempts)
            return self._stop(f"{n} attempt{'s' if n != 1 else ''} made, the most allowed")
        if outcome == UNSENT and len(self.tried) < len(self.stats):
            delay = 0.0  # fail over at once: the server never saw the request
        else:
            delay = full_jitter(
                len(self.attempts) - 1,
                base=policy.backoff_base,
                cap=policy.backoff_cap,
                rng=engine.rng,
            )
        if retry_after is not None:
            if retry_after > policy.max_retry_after:
                return self._stop(
                    f"Retry-After asks for {retry_after:g} s, more than max_retry_after "
                    f"({policy.max_retry_after:g} s)"
                )
            delay = max(delay, retry_after)
        if self.deadline is not None and self.deadline - now - delay < policy.min_retry_window:
            return self._stop("too little time left before the deadline for another attempt")
        if throttle is not None and not throttle.admit(now + delay, engine.rng):
            return self._stop(
                f"service {self.service!r} answered most recent requests 429/503: this client "
                "throttles its requests to it"
            )
        if not self.budget.try_withdraw(now):
            if observer is not None:
                observer.budget_exhausted(self)
            return self._stop(f"the retry budget of service {self.service!r} is spent")
        if observer is not None:
            observer.retry(self, delay)
        return delay

    def _stop(self, reason: str) -> float | None:
        self.reason = reason
        observer = self.engine.observer
        if observer is not None:
            observer.gave_up(self, reason)
        return None
