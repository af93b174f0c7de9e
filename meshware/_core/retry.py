"""Retry decisions: what an attempt's outcome allows, the retry budget, ``Retry-After``.

Design notes
------------
Pure, like the rest of the core. The rules (DESIGN §4):

* an attempt that **never reached the wire** (connection refused, connect timeout, no pooled
  connection in time) is safe to retry on another instance whatever the method: the server
  never saw it;
* an attempt that reached the wire and failed (reset, timeout, 502/503/504) is retried only
  for idempotent methods, or routes published (or overridden) as idempotent;
* at most ``retries`` retries, each on a different instance where there is one, each paid for
  from a per-service **retry budget** so that an outage is not multiplied by the retry count:
  over a sliding ``window``, retries may not exceed ``percent`` of the requests plus
  ``per_second`` per second (Finagle's ``RetryBudget``);
* no retry when the request's deadline is too close to give another attempt a chance.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from typing import NamedTuple

__all__ = [
    "FAILED",
    "RESPONSE",
    "TIMEOUT",
    "UNSENT",
    "Attempt",
    "RetryBudget",
    "parse_retry_after",
]

# Attempt outcomes (ints for speed on the hot path; names in Attempt.outcome for people).
RESPONSE = 0  # an answer came back (maybe a retryable status)
UNSENT = 1  # failed before the request reached the wire: always safe to retry elsewhere
FAILED = 2  # failed after it reached the wire (reset, protocol error)
TIMEOUT = 3  # the attempt ran out of time after it was sent

OUTCOME_NAMES = ("response", "unsent", "failed", "timeout")


class Attempt(NamedTuple):
    """One attempt of a request: where it went, how it ended, when and how long it took.

    ``outcome`` is ``"response"`` (``status`` set), ``"unsent"`` (it never reached the wire),
    ``"failed"`` or ``"timeout"`` (``error`` describes it). ``started`` is on the client's clock.
    (A named tuple: one is made per attempt, on the hot path.)
    """

    instance: str
    outcome: str
    status: int | None
    error: str | None
    started: float
    duration: float

    def __str__(self) -> str:
        what = str(self.status) if self.status is not None else f"{self.outcome}: {self.error}"
        return f"{self.instance} -> {what} in {self.duration * 1e3:.1f} ms"


class RetryBudget:
    """Retries allowed over a sliding window: ``percent`` of requests plus ``per_second``/s.

    Counts live in one-second buckets, so deposits and withdrawals are O(1).
    """

    __slots__ = ("_epoch", "_requests", "_retries", "per_second", "percent", "window")

    def __init__(self, percent: float, per_second: float, window: float) -> None:
        self.percent = percent
        self.per_second = per_second
        self.window = max(1, math.ceil(window))
        self._requests = [0] * self.window
        self._retries = [0] * self.window
        self._epoch = 0  # the whole second of the newest bucket

    def _roll(self, now: float) -> int:
        second = int(now)
        if second != self._epoch:
            gap = second - self._epoch
            if gap >= self.window or gap < 0:
                self._requests = [0] * self.window
                self._retries = [0] * self.window
            else:
                for s in range(self._epoch + 1, second + 1):
                    i = s % self.window
                    self._requests[i] = 0
                    self._retries[i] = 0
            self._epoch = second
        return second % self.window

    def deposit(self, now: float) -> None:
        """Count one request."""
        self._requests[self._roll(now)] += 1

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        i = self._roll(now)
        allowed = self.percent * sum(self._requests) + self.per_second * self.window
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[i] += 1
        return True

    def balance(self, now: float) -> float:
        """Retries still allowed in the current window."""
        self._roll(now)
        return (
            self.percent * sum(self._requests) + self.per_second * self.window - sum(self._retries)
        )


def parse_retry_after(value: str | None, *, wall_now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²" and other digits
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are in UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - wall_now)
