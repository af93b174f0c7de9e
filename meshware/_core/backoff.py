"""Backoff delays: full jitter, as the AWS architecture blog and gRPC's reconnect policy use.

Pure: the caller passes the attempt number and its ``random.Random``, so tests are exact.
"""

from __future__ import annotations

import random

__all__ = ["full_jitter"]


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """A delay in ``[0, min(cap, base * 2**attempt)]`` for the 0-based ``attempt``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return rng.uniform(0.0, ceiling)
