"""Route limits: the one validator (markers, options and the record codec share it), the record
field, and the token buckets (pure, fake time)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshware import BadRecord, InstanceRecord, RouteSpec
from meshware._core.limits import (
    RateLimiter,
    RouteLimits,
    limits_from_json,
    parse_rate,
    retry_after_header,
)

KEY = "/meshware/v1/instances/users/i1"


@pytest.mark.parametrize(
    ("text", "expected"), [("20/s", (20, 1)), ("600/min", (600, 60)), ("1000/h", (1000, 3600))]
)
def test_rates_per_second_minute_and_hour(text: str, expected: tuple[int, int]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["20", "0/s", "20/d", "-1/s", "20/sec", " 20/s", "2e3/s", 20, None]
)
def test_bad_rates_say_what_a_rate_looks_like(text: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_limits_round_trip_through_the_record() -> None:
    limits = RouteLimits(rate=20, period=1, burst=10, per="route", concurrency=8)
    spec = RouteSpec("/login", ("POST",), limits=limits)
    record = InstanceRecord("users", "i1", "http://127.0.0.1:8001", (spec,))
    raw = json.loads(record.encode())
    assert raw["routes"][0]["limits"] == {
        "rate": "20/s",
        "burst": 10,
        "per": "route",
        "concurrency": 8,
    }
    assert InstanceRecord.decode(KEY, record.encode()).routes[0].limits == limits


def test_a_route_without_limits_publishes_no_limits_field() -> None:
    assert "limits" not in RouteSpec("/x", ("GET",)).to_json()


def test_unknown_keys_inside_limits_are_ignored_for_newer_writers() -> None:
    assert limits_from_json({"rate": "5/min", "algorithm": "gcra"}) == RouteLimits(5, 60)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "object"),
        ({}, "rate .* or a concurrency"),
        ({"rate": "20/s", "burst": -1}, "burst"),
        ({"rate": "20/s", "burst": True}, "burst"),
        ({"rate": "20/s", "per": "ip"}, "per"),
        ({"concurrency": 0}, "concurrency"),
        ({"burst": 3, "concurrency": 2}, "only make sense with a rate"),
        ({f"k{i}": 1 for i in range(40)}, "keys"),
    ],
)
def test_a_bad_limits_object_is_a_bad_record_naming_the_route(raw: object, problem: str) -> None:
    data = {
        "schema": 1,
        "service": "users",
        "instance": "i1",
        "url": "http://127.0.0.1:8001",
        "routes": [{"template": "/login", "methods": ["POST"], "limits": raw}],
    }
    with pytest.raises(BadRecord, match=r"routes\[0\]\.limits: .*" + problem):
        InstanceRecord.decode(KEY, json.dumps(data))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
LIMITS_ISH = st.fixed_dictionaries(
    {},
    optional={
        "rate": st.sampled_from(["20/s", "1/h", "1000000/min", "0/s", "x" * 5000]) | JSON,
        "burst": st.integers(-2, 2_000_000) | JSON,
        "per": st.sampled_from(["client", "route", "ip", "p" * 5000]) | JSON,
        "concurrency": st.integers(-1, 2_000_000) | JSON,
    },
)


@given(JSON | LIMITS_ISH)
def test_the_validator_is_total_and_round_trips(raw: object) -> None:
    try:
        limits = limits_from_json(raw)
    except ValueError as exc:  # the only documented failure, with a short message
        problem = str(exc)
        limits = None
    if limits is None:
        assert len(problem) < 200  # whatever came in
        return
    assert limits_from_json(limits.to_json()) == limits
    assert len(json.dumps(limits.to_json())) < 120  # bounded whatever came in


def test_a_bucket_lets_the_burst_through_then_the_rate() -> None:
    limiter = RateLimiter(rate=20.0, burst=10)
    admitted = [limiter.take("a", 0.0) == 0.0 for _ in range(30)]
    assert admitted.count(True) == 11  # burst + 1 at once (nginx: burst=10 nodelay)
    now, passed = 0.0, 0
    while now < 10.0:  # then 20/s, hammered every millisecond
        now += 0.001
        passed += limiter.take("a", now) == 0.0
    assert abs(passed - 200) <= 1


def test_a_refusal_says_when_a_token_is_there() -> None:
    limiter = RateLimiter(rate=0.5, burst=0)
    assert limiter.take("a", 0.0) == 0.0
    wait = limiter.take("a", 0.5)
    assert math.isclose(wait, 1.5)  # 0.25 token there, 0.75 more at 0.5/s
    assert retry_after_header(wait) == "2"
    assert retry_after_header(0.01) == "1"


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=0)
    assert limiter.take("noisy", 0.0) == 0.0
    assert limiter.take("noisy", 0.1) > 0
    assert limiter.take("quiet", 0.1) == 0.0


def test_the_number_of_keys_is_bounded_and_forgetting_is_lenient() -> None:
    limiter = RateLimiter(rate=1.0, burst=0, max_keys=100)
    for i in range(10_000):
        limiter.take(f"client-{i}", 0.0)
    assert len(limiter._buckets) == 100
    assert limiter.take("client-0", 0.0) == 0.0  # forgotten: a fresh bucket


def test_a_share_divides_rate_and_burst_among_enforcement_points() -> None:
    assert RouteLimits(rate=20, burst=10).share(2) == (10.0, 5)
    assert RouteLimits(rate=20, burst=10).share(3) == (20 / 3, 4)
    assert RouteLimits(rate=60, period=60).share(0) == (1.0, 0)
