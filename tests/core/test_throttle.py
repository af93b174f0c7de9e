"""Client-side adaptive throttling (SRE book formula), on a fake clock with a seeded RNG."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from meshware._core.throttle import AdaptiveThrottle


def test_a_healthy_service_is_never_throttled() -> None:
    t = AdaptiveThrottle()
    rng = random.Random(0)
    for i in range(10_000):
        now = i * 0.001
        assert t.admit(now, rng)
        t.record(now, accepted=True)
    assert t.probability(10.0) == 0.0


def test_the_refusal_probability_is_the_sre_formula() -> None:
    t = AdaptiveThrottle(k=2.0, window=10.0)
    for _ in range(25):
        t.record(0.0, accepted=False)
    for _ in range(5):
        t.record(0.0, accepted=True)
    assert t.probability(0.0) == (30 - 2 * 5) / (30 + 1)


def test_a_few_overload_answers_do_not_throttle_a_quiet_caller() -> None:
    t = AdaptiveThrottle()
    for _ in range(t.min_requests - 1):
        t.record(0.0, accepted=False)
    assert t.probability(0.0) == 0.0


def test_shedding_everything_drives_refusals_towards_all_then_recovery_reopens() -> None:
    t = AdaptiveThrottle(window=2.0)
    rng = random.Random(1)
    now, sent = 0.0, 0
    while now < 3.0:  # 1 s healthy, then the service sheds everything for one window
        if t.admit(now, rng):
            sent += 1
            t.record(now, accepted=now < 1.0)
        now += 0.005
    assert t.probability(now) == t.max_refusal  # 0.9: one attempt in ten still goes
    while now < 7.0:  # it recovered: the trickle that gets through reopens the gate
        if t.admit(now, rng):
            t.record(now, accepted=True)
        now += 0.005
    assert t.probability(now) == 0.0


def test_the_window_forgets_old_answers() -> None:
    t = AdaptiveThrottle(window=2.0)
    for _ in range(100):
        t.record(0.0, accepted=False)
    assert t.probability(0.1) == t.max_refusal
    assert t.probability(2.5) == 0.0


@given(
    st.lists(
        st.tuples(st.floats(0, 1e6, allow_nan=False), st.booleans(), st.booleans()), max_size=300
    )
)
def test_counts_stay_consistent_whatever_the_order_of_events(
    events: list[tuple[float, bool, bool]],
) -> None:
    t = AdaptiveThrottle()
    rng = random.Random(0)
    for now, record, accepted in events:  # times may go backwards: a reset, never a crash
        if record:
            t.record(now, accepted)
        else:
            t.admit(now, rng)
        assert 0 <= t.accepts <= t.requests
        assert t.requests == sum(t._req)
        assert 0.0 <= t.probability(now) <= t.max_refusal
