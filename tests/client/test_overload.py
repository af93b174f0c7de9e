"""Callers dampen overload: 429 is not retried at once, Retry-After within the deadline
(pure engine; the throttling through the fake mesh is in tests/testing)."""

from __future__ import annotations

import random

from meshware import ClientPolicy
from meshware._core.balance import InstanceStats
from meshware._core.call import Call, Engine
from meshware._core.policy import NO_OVERRIDES
from meshware._core.retry import RESPONSE


def make_call(method: str = "GET", deadline: float | None = None, **policy: object) -> Call:
    engine = Engine(ClientPolicy(**policy), rng=random.Random(0))  # type: ignore[arg-type]
    stats = [InstanceStats("users", f"http://10.0.0.{i}:80", 0.0) for i in range(3)]
    return engine.call("GET", "users", "GET /x", stats, None, NO_OVERRIDES, 0.0, deadline)


def answer(call: Call, status: int, retry_after: float | None = None) -> float | None:
    s = call.pick(0.0)
    call.start(s, 0.0)
    return call.finish(s, RESPONSE, 0.001, 0.0, status=status, retry_after=retry_after)


def test_a_429_without_retry_after_is_not_retried() -> None:
    call = make_call()
    assert answer(call, 429) is None
    assert "429" in call.reason


def test_a_429_is_retried_only_after_its_retry_after() -> None:
    call = make_call()
    assert answer(call, 429, retry_after=0.8) == 0.8


def test_a_429_whose_retry_after_passes_the_deadline_is_returned() -> None:
    call = make_call(deadline=0.5)
    assert answer(call, 429, retry_after=0.8) is None
    assert "deadline" in call.reason


def test_a_429_does_not_count_against_the_instance() -> None:
    call = make_call(eject_after=1)
    answer(call, 429)
    assert all(s.healthy() and s.consecutive_failures == 0 for s in call.stats)


def test_a_503_retry_after_is_honoured() -> None:
    call = make_call()
    assert answer(call, 503, retry_after=1.5) == 1.5
