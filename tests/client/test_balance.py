"""The balancer and outlier ejection, driven by a fake clock and a seeded RNG."""

from __future__ import annotations

import random
from collections import Counter

from meshware import ClientPolicy
from meshware._core.balance import UNMEASURED_PENALTY, InstanceStats, pick_p2c, pick_round_robin

POLICY = ClientPolicy(eject_jitter=0.0)


def fleet(n: int, now: float = 0.0) -> list[InstanceStats]:
    return [InstanceStats("users", f"http://10.0.0.{i}:80", now) for i in range(n)]


def test_an_unmeasured_instance_is_free_while_idle_and_penalised_while_busy() -> None:
    s = fleet(1)[0]
    assert s.cost(0.0, 10.0) == 0.0
    s.started(0.0)
    assert s.cost(0.0, 10.0) >= UNMEASURED_PENALTY


def test_peak_ewma_jumps_to_a_slower_observation_and_decays_towards_faster_ones() -> None:
    s = fleet(1)[0]
    s.observe(0.001, 0.0, 10.0)
    s.observe(0.100, 0.1, 10.0)
    assert s.ewma == 0.100  # the peak, at once
    s.observe(0.001, 10.1, 10.0)  # one decay time later: most of the way down
    assert 0.03 < s.ewma < 0.04
    assert s.cost(20.1, 10.0) < s.ewma  # an idle instance's cost decays too


def test_cost_grows_with_requests_in_flight() -> None:
    s = fleet(1)[0]
    s.observe(0.010, 0.0, 10.0)
    idle = s.cost(0.0, 10.0)
    s.started(0.0)
    s.started(0.0)
    assert s.cost(0.0, 10.0) == 3 * idle


def test_p2c_sends_almost_nothing_to_a_ten_times_slower_instance() -> None:
    rng = random.Random(7)
    stats = fleet(3)
    latency = {stats[0].url: 0.010, stats[1].url: 0.001, stats[2].url: 0.001}
    counts: Counter[str] = Counter()
    now = 0.0
    for _ in range(3000):
        s, _panic = pick_p2c(stats, [], now, rng, POLICY)
        counts[s.url] += 1
        s.started(now)
        now += 0.0005
        s.observe(latency[s.url], now, POLICY.decay)
        s.released()
    assert counts[stats[0].url] < 0.10 * 3000
    assert min(counts[stats[1].url], counts[stats[2].url]) > 0.35 * 3000


def test_p2c_never_picks_an_instance_already_tried_while_others_remain() -> None:
    rng = random.Random(1)
    stats = fleet(3)
    for _ in range(200):
        s, _ = pick_p2c(stats, [stats[0], stats[1]], 0.0, rng, POLICY)
        assert s is stats[2]


def test_consecutive_failures_eject_then_one_probe_brings_the_instance_back() -> None:
    rng = random.Random(0)
    s = fleet(1)[0]
    for _ in range(POLICY.eject_after - 1):
        assert s.failed(0.0, POLICY, rng) is None
    assert s.failed(0.0, POLICY, rng) == POLICY.eject_base
    assert not s.healthy()
    assert not s.available(0.5)
    assert s.available(1.0)  # ejection over: a probe may go
    s.started(1.0)
    assert not s.available(1.0)  # ...but only one at a time
    assert s.succeeded(1.1) is True
    assert s.healthy()
    assert s.available(1.1)


def test_a_failed_probe_ejects_for_longer_and_the_growth_is_capped() -> None:
    rng = random.Random(0)
    policy = ClientPolicy(eject_after=1, eject_base=1.0, eject_max=5.0, eject_jitter=0.0)
    s = fleet(1)[0]
    now = 0.0
    durations = []
    for _ in range(5):
        d = s.failed(now, policy, rng)
        assert d is not None
        durations.append(d)
        now = s.ejected_until
        s.started(now)  # the probe
        s.released()
    assert durations == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_ejection_growth_starts_afresh_after_a_long_healthy_spell() -> None:
    rng = random.Random(0)
    policy = ClientPolicy(eject_after=1, eject_base=1.0, eject_jitter=0.0)
    s = fleet(1)[0]
    assert s.failed(0.0, policy, rng) == 1.0
    s.started(1.0)
    s.succeeded(1.0)
    assert s.failed(1.5, policy, rng) == 2.0  # soon after: longer
    s.started(3.5)
    s.succeeded(3.5)
    assert s.failed(100.0, policy, rng) == 1.0  # long after: afresh


def test_ejection_time_is_jittered() -> None:
    policy = ClientPolicy(eject_after=1, eject_base=10.0, eject_jitter=0.25)
    durations = {fleet(1)[0].failed(0.0, policy, random.Random(seed)) for seed in range(20)}
    assert len(durations) > 10
    assert all(7.5 <= d <= 12.5 for d in durations if d is not None)  # type: ignore[operator]


def test_ejected_instances_get_no_picks_while_most_are_healthy() -> None:
    rng = random.Random(3)
    stats = fleet(4)
    stats[0].ejected_until = 50.0
    for _ in range(300):
        s, panic = pick_p2c(stats, [], 0.0, rng, POLICY)
        assert s is not stats[0]
        assert not panic


def test_panic_mode_balances_over_all_when_most_instances_look_unhealthy() -> None:
    rng = random.Random(3)
    stats = fleet(4)
    for s in stats[:3]:
        s.ejected_until = 50.0
    picked = set()
    panics = set()
    for _ in range(300):
        s, panic = pick_p2c(stats, [], 0.0, rng, POLICY)
        picked.add(s.url)
        panics.add(panic)
    assert len(picked) == 4
    assert True in panics


def test_round_robin_takes_turns_and_skips_ejected_instances() -> None:
    stats = fleet(3)
    order = [pick_round_robin(stats, [], 0.0, i, POLICY)[0].url for i in range(6)]
    assert order == [s.url for s in stats] * 2
    stats[1].ejected_until = 10.0
    picked = {pick_round_robin(stats, [], 0.0, i, POLICY)[0].url for i in range(6)}
    assert stats[1].url not in picked
