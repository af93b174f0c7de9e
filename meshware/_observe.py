"""What the mesh client tells people: one logger per concern, through stdlib logging.

* ``meshware.client`` — per attempt and per request at DEBUG (instance, outcome, time), retries
  at DEBUG, a request given up on a retryable failure at INFO;
* ``meshware.balance`` — ejections (with their reason) and panic mode at WARNING, an instance
  back in rotation at INFO; an exhausted retry budget at WARNING, at most once per service per
  10 s.

:class:`Fanout` lets metrics (``meshware.metrics.PrometheusObserver``) observe alongside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from ._core.balance import InstanceStats
from ._core.call import Call, Observer
from ._core.retry import Attempt

__all__ = ["Fanout", "LogObserver"]

client_log = logging.getLogger("meshware.client")
balance_log = logging.getLogger("meshware.balance")


class LogObserver:
    """The default observer: logs the engine's decisions."""

    def __init__(self) -> None:
        self._budget_logged: dict[str, float] = {}

    def attempt(self, call: Call, attempt: Attempt) -> None:
        if client_log.isEnabledFor(logging.DEBUG):
            client_log.debug(
                "%s [%s] attempt %d: %s", call.target, call.service, len(call.attempts), attempt
            )

    def retry(self, call: Call, delay: float) -> None:
        if client_log.isEnabledFor(logging.DEBUG):
            client_log.debug("%s [%s] retrying in %.1f ms", call.target, call.service, delay * 1e3)

    def gave_up(self, call: Call, reason: str) -> None:
        client_log.info(
            "%s [%s] not retried after %d attempt(s): %s",
            call.target,
            call.service,
            len(call.attempts),
            reason,
        )

    def budget_exhausted(self, call: Call) -> None:
        now = time.monotonic()
        last = self._budget_logged.get(call.service)
        if last is None or now - last >= 10.0:
            self._budget_logged[call.service] = now
            balance_log.warning(
                "retry budget of service %r is spent: failures are not retried for now "
                "(budget: %g%% of requests + %g/s)",
                call.service,
                call.engine.policy.budget_percent * 100,
                call.engine.policy.budget_per_second,
            )

    def ejected(self, stats: InstanceStats, duration: float, reason: str) -> None:
        balance_log.warning(
            "ejecting %s (service %r) for %.1f s: %s", stats.url, stats.service, duration, reason
        )

    def restored(self, stats: InstanceStats) -> None:
        balance_log.info(
            "%s (service %r) is back in rotation: the probe succeeded", stats.url, stats.service
        )

    def panic(self, call: Call) -> None:
        balance_log.warning(
            "panic mode for %s [%s]: fewer than %g%% of %d instances are healthy, balancing over all",
            call.target,
            call.service,
            call.engine.policy.panic_threshold * 100,
            len(call.stats),
        )

    def finished(self, call: Call, outcome: str, seconds: float) -> None:
        if client_log.isEnabledFor(logging.DEBUG):
            client_log.debug(
                "%s [%s] -> %s in %.1f ms after %d attempt(s)",
                call.target,
                call.service,
                outcome,
                seconds * 1e3,
                len(call.attempts),
            )


class Fanout:
    """Several observers as one."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def attempt(self, call: Call, attempt: Attempt) -> None:
        for o in self.observers:
            o.attempt(call, attempt)

    def retry(self, call: Call, delay: float) -> None:
        for o in self.observers:
            o.retry(call, delay)

    def gave_up(self, call: Call, reason: str) -> None:
        for o in self.observers:
            o.gave_up(call, reason)

    def budget_exhausted(self, call: Call) -> None:
        for o in self.observers:
            o.budget_exhausted(call)

    def ejected(self, stats: InstanceStats, duration: float, reason: str) -> None:
        for o in self.observers:
            o.ejected(stats, duration, reason)

    def restored(self, stats: InstanceStats) -> None:
        for o in self.observers:
            o.restored(stats)

    def panic(self, call: Call) -> None:
        for o in self.observers:
            o.panic(call)

    def finished(self, call: Call, outcome: str, seconds: float) -> None:
        for o in self.observers:
            o.finished(call, outcome, seconds)
