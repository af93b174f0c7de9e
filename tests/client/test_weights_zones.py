"""Weights and zones in the balancer: shares under concurrent load, weight 0, zone preference
and spill-over (pure: a simulated closed loop on a fake clock, seeded RNG)."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest

from meshware import ClientPolicy
from meshware._core.balance import Group, InstanceStats, pick_first
from meshware._core.call import Engine
from meshware._core.policy import NO_OVERRIDES
from meshware._core.retry import RESPONSE, UNSENT
from meshware._core.table import Instance

POLICY = ClientPolicy(eject_jitter=0.0)


def instances(*spec: tuple[int, str | None]) -> tuple[Instance, ...]:
    return tuple(
        Instance("users", f"http://10.0.0.{i}:80", "serving", (f"r{i}",), zone=zone, weight=w)
        for i, (w, zone) in enumerate(spec)
    )


def closed_loop(
    engine: Engine,
    insts: tuple[Instance, ...],
    *,
    in_flight: int,
    calls: int,
    latency: dict[str, float] | None = None,
    seed: int = 0,
) -> Counter[str]:
    """``in_flight`` callers each making calls back to back; exponential service times."""
    rng = random.Random(seed)
    latency = latency or {}
    counts: Counter[str] = Counter()
    group = engine.stats_list(insts, insts, 0.0)
    events: list[tuple[float, int, InstanceStats, float]] = []
    now = 0.0
    seq = 0

    def send() -> None:
        nonlocal seq
        call = engine.call("GET", "users", "GET /x", group, None, NO_OVERRIDES, now, None)
        s = call.pick(now)
        call.start(s, now)
        counts[s.url] += 1
        seq += 1
        heapq.heappush(events, (now + rng.expovariate(1 / latency.get(s.url, 0.001)), seq, s, now))

    for _ in range(in_flight):
        send()
    sent = in_flight
    while events:
        now, _, s, started = heapq.heappop(events)
        s.released()
        s.observe(now - started, now, POLICY.decay)
        s.succeeded(now)
        if sent < calls:
            send()
            sent += 1
    return counts


@pytest.mark.parametrize("in_flight", [1, 4, 16, 64])
def test_weights_100_and_300_get_a_quarter_and_three_quarters_under_load(in_flight: int) -> None:
    insts = instances((100, None), (300, None))
    counts = closed_loop(
        Engine(POLICY, rng=random.Random(in_flight)), insts, in_flight=in_flight, calls=4000
    )
    share = counts[insts[0].url] / 4000
    assert 0.22 <= share <= 0.28, share


def test_weighted_picks_still_avoid_a_much_slower_instance() -> None:
    insts = instances((100, None), (100, None), (200, None))
    slow = {insts[2].url: 0.010}
    counts = closed_loop(
        Engine(POLICY, rng=random.Random(1)), insts, in_flight=8, calls=4000, latency=slow
    )
    assert counts[insts[2].url] < 0.30 * 4000  # its weight alone would give it half


def test_weight_zero_gets_no_new_requests() -> None:
    insts = instances((0, None), (100, None), (100, None))
    counts = closed_loop(Engine(POLICY, rng=random.Random(2)), insts, in_flight=4, calls=1000)
    assert counts[insts[0].url] == 0


def test_weight_zero_everywhere_balances_over_all_rather_than_refusing() -> None:
    insts = instances((0, None), (0, None))
    counts = closed_loop(Engine(POLICY, rng=random.Random(2)), insts, in_flight=4, calls=1000)
    assert len(counts) == 2


def test_a_retry_may_use_a_weight_zero_instance_when_nothing_else_is_left() -> None:
    insts = instances((0, None), (100, None))
    engine = Engine(POLICY, rng=random.Random(0))
    group = engine.stats_list(insts, insts, 0.0)
    call = engine.call("GET", "users", "GET /x", group, None, NO_OVERRIDES, 0.0, None)
    first = call.pick(0.0)
    assert first.url == insts[1].url
    call.start(first, 0.0)
    first.released()
    assert call.finish(first, UNSENT, 0.001, 0.0, error="ConnectError") == 0.0
    assert call.pick(0.001).url == insts[0].url


def test_a_caller_sends_95_percent_or_more_to_its_own_healthy_zone() -> None:
    insts = instances((100, "a"), (100, "a"), (100, "b"), (100, "b"), (100, "c"))
    counts = closed_loop(
        Engine(POLICY, rng=random.Random(3), zone="a"), insts, in_flight=8, calls=4000
    )
    local = counts[insts[0].url] + counts[insts[1].url]
    assert local >= 0.95 * 4000
    assert local == 4000  # all healthy: Envoy's rule keeps everything local


def test_a_caller_without_a_zone_spreads_over_every_zone() -> None:
    insts = instances((100, "a"), (100, "b"))
    counts = closed_loop(Engine(POLICY, rng=random.Random(3)), insts, in_flight=4, calls=2000)
    assert min(counts.values()) > 0.4 * 2000


def test_a_short_local_zone_spills_over_in_proportion() -> None:
    # zone a: 2 of 4 instances ejected. healthy_local/healthy_all = 2/6, local/all = 4/8:
    # the local zone keeps (2/6)/(4/8) = 2/3 of the requests, the rest spills over.
    insts = instances(*[(100, "a")] * 4, *[(100, "b")] * 4)
    engine = Engine(POLICY, rng=random.Random(4), zone="a")
    group = engine.stats_list(insts, insts, 0.0)
    group[0].ejected_until = group[1].ejected_until = 1e9
    counts: Counter[str | None] = Counter()
    for _ in range(6000):
        s, _ = pick_first(group, 0.0, engine.rng, POLICY)
        counts[s.zone] += 1
    assert abs(counts["a"] / 6000 - 2 / 3) < 0.03


def test_no_call_is_lost_when_the_local_zone_dies() -> None:
    insts = instances((100, "a"), (100, "a"), (100, "b"), (100, "b"))
    engine = Engine(POLICY, rng=random.Random(5), zone="a")
    group = engine.stats_list(insts, insts, 0.0)
    dead = {insts[0].url, insts[1].url}
    now = 0.0
    landed: Counter[str | None] = Counter()
    for _ in range(500):
        call = engine.call("GET", "users", "GET /x", group, None, NO_OVERRIDES, now, None)
        while True:
            s = call.pick(now)
            call.start(s, now)
            s.released()
            if s.url in dead:
                delay = call.finish(s, UNSENT, now + 0.0001, now, error="ConnectError")
                assert delay is not None, call.reason  # never given up
                now += 0.0001 + delay
                continue
            assert call.finish(s, RESPONSE, now + 0.001, now, status=200) is None
            landed[s.zone] += 1
            now += 0.001
            break
    assert landed["b"] == 500
    assert all(not g.healthy() for g in group if g.url in dead)  # ejected: no more tries there


def test_groups_are_built_once_per_endpoint_set() -> None:
    insts = instances((100, "a"), (300, "b"))
    engine = Engine(POLICY, rng=random.Random(0), zone="a")
    g = engine.stats_list(insts, insts, 0.0)
    assert engine.stats_list(insts, insts, 1.0) is g
    assert isinstance(g, Group)
    assert g.cum == [100, 400]
    assert g.local is not None
    assert [s.url for s in g.local] == [insts[0].url]
