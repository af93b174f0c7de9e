"""Client-side adaptive throttling: a client that keeps hearing "overloaded" slows itself down.

Design notes
------------
Google's SRE book ("Handling Overload", client-side throttling): each client counts, per
service and over a short sliding window, the ``requests`` it wanted to send and the
``accepts`` the service answered with something other than an overload signal. A new attempt is
refused locally, before it leaves the process, with probability::

    max(0, (requests - K * accepts) / (requests + 1))

While the service is healthy ``requests == accepts`` and nothing is refused. When it sheds
everything, ``accepts`` falls to 0 and almost every attempt fails fast locally, so the load the
service sees drops to a trickle instead of being multiplied by retries; the trickle that still
goes through is what notices the recovery. ``K = 2`` (the book's value) lets a service refuse
half its requests before its callers hold back.

Overload signals are answers ``429`` and ``503``. Transport errors (connection refused, reset)
are neither requests nor accepts here: a dead instance is outlier ejection's business, and
counting it would fail calls a retry on another instance would save.

The probability is capped at ``max_refusal`` (0.9, as Envoy's admission control caps its own):
with the bare formula a service shedding everything for a while gets 1 in ``requests + 1``
attempts, so after it recovers its callers keep refusing almost everything for many windows
(simulated at 200 calls/s: 8 s to recover); with the cap one attempt in ten still goes, the
accepts it earns halve the refusals window after window, and callers are back in about 3 s.

Below ``min_requests`` (10) in the window nothing is refused: with the bare formula a single
``503`` would refuse half of the next requests of a caller that sends one request a minute.

The window is short (2 s by default, in 8 buckets), where the book uses minutes: a service
that sheds everything gets at most half the attempts its callers make after two seconds of it.
Locally refused attempts count as requests (as in the book), so the refusal probability keeps
rising while the service sheds.

Pure: ``now`` and the RNG are passed in; O(1) per attempt (running totals, no sums).
"""

from __future__ import annotations

import random

__all__ = ["MAX_REFUSAL", "OVERLOAD_STATUSES", "AdaptiveThrottle"]

#: The highest probability of refusing an attempt locally.
MAX_REFUSAL = 0.9

#: Answers that say "overloaded, back off".
OVERLOAD_STATUSES = frozenset({429, 503})


class AdaptiveThrottle:
    """Requests and accepts of one service over a sliding window, and the local refusals."""

    __slots__ = (
        "_acc",
        "_epoch",
        "_req",
        "_width",
        "accepts",
        "buckets",
        "k",
        "max_refusal",
        "min_requests",
        "requests",
    )

    def __init__(
        self,
        k: float = 2.0,
        window: float = 2.0,
        buckets: int = 8,
        min_requests: int = 10,
        max_refusal: float = MAX_REFUSAL,
    ) -> None:
        self.k = k
        self.max_refusal = max_refusal
        self.min_requests = min_requests
        self.buckets = buckets
        self._width = window / buckets
        self._req = [0] * buckets
        self._acc = [0] * buckets
        self._epoch = 0  # the index (in bucket widths since 0) of the newest bucket
        self.requests = 0
        self.accepts = 0

    def _roll(self, now: float) -> int:
        tick = int(now / self._width)
        gap = tick - self._epoch
        if gap:
            n = self.buckets
            if gap >= n or gap < 0:
                self._req = [0] * n
                self._acc = [0] * n
                self.requests = self.accepts = 0
            else:
                req, acc = self._req, self._acc
                for t in range(self._epoch + 1, tick + 1):
                    i = t % n
                    self.requests -= req[i]
                    self.accepts -= acc[i]
                    req[i] = acc[i] = 0
            self._epoch = tick
        return tick % self.buckets

    def probability(self, now: float) -> float:
        """The probability that an attempt starting ``now`` is refused locally."""
        self._roll(now)
        excess = self.requests - self.k * self.accepts
        if excess <= 0 or self.requests < self.min_requests:
            return 0.0
        return min(self.max_refusal, excess / (self.requests + 1))

    def admit(self, now: float, rng: random.Random) -> bool:
        """May an attempt go now? A refusal is counted as a request."""
        tick = int(now / self._width)
        i = tick % self.buckets if tick == self._epoch else self._roll(now)
        excess = self.requests - self.k * self.accepts
        if (
            excess <= 0
            or self.requests < self.min_requests
            or rng.random() >= min(self.max_refusal, excess / (self.requests + 1))
        ):
            return True
        self._req[i] += 1
        self.requests += 1
        return False

    def record(self, now: float, accepted: bool) -> None:
        """An attempt got an answer: ``accepted`` unless it was an overload signal."""
        tick = int(now / self._width)
        i = tick % self.buckets if tick == self._epoch else self._roll(now)
        self._req[i] += 1
        self.requests += 1
        if accepted:
            self._acc[i] += 1
            self.accepts += 1
