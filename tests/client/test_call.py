"""The policy engine's retry decisions (pure: fake time, seeded RNG, no I/O)."""

from __future__ import annotations

import random

import pytest

from meshware import ClientPolicy, RouteSpec
from meshware._core.balance import InstanceStats
from meshware._core.call import Call, Engine
from meshware._core.policy import NO_OVERRIDES, Overrides
from meshware._core.retry import FAILED, RESPONSE, TIMEOUT, UNSENT


def make_call(
    method: str = "GET",
    *,
    policy: ClientPolicy | None = None,
    spec: RouteSpec | None = None,
    overrides: Overrides = NO_OVERRIDES,
    deadline: float | None = None,
    n: int = 3,
    replayable: bool = True,
) -> Call:
    engine = Engine(policy or ClientPolicy(), rng=random.Random(0))
    stats = [InstanceStats("users", f"http://10.0.0.{i}:80", 0.0) for i in range(n)]
    return engine.call(
        method,
        "users",
        f"{method} /x",
        stats,
        spec,
        overrides,
        0.0,
        deadline,
        replayable=replayable,
    )


def attempt(call: Call, outcome: int, now: float = 0.0, **kw: object) -> float | None:
    stats = call.pick(now)
    call.start(stats, now)
    return call.finish(stats, outcome, now + 0.001, now, **kw)  # type: ignore[arg-type]


def test_an_unsent_post_fails_over_at_once_to_another_instance() -> None:
    call = make_call("POST")
    assert attempt(call, UNSENT, error="ConnectError") == 0.0
    second = call.pick(0.0)
    assert second is not call.tried[0]


@pytest.mark.parametrize("outcome", [FAILED, TIMEOUT])
def test_a_post_that_reached_the_server_is_not_retried(outcome: int) -> None:
    call = make_call("POST")
    assert attempt(call, outcome, error="ReadError") is None
    assert "not idempotent" in call.reason


def test_a_post_to_a_route_published_idempotent_is_retried() -> None:
    call = make_call("POST", spec=RouteSpec("/x", ("POST",), idempotent=True))
    assert attempt(call, FAILED, error="ReadError") is not None


def test_the_request_override_beats_the_route_policy() -> None:
    spec = RouteSpec("/x", ("GET",), retries=5, idempotent=True)
    call = make_call(spec=spec, overrides=Overrides(retries=0))
    assert attempt(call, RESPONSE, status=503) is None
    assert "1 attempt made" in call.reason


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_retried_with_full_jitter_backoff(status: int) -> None:
    call = make_call()
    delay = attempt(call, RESPONSE, status=status)
    assert delay is not None
    assert 0 <= delay <= ClientPolicy().backoff_base


def test_other_statuses_end_the_call() -> None:
    for status in (200, 404, 500):
        assert attempt(make_call(), RESPONSE, status=status) is None


def test_attempts_stop_at_the_retry_limit() -> None:
    call = make_call(policy=ClientPolicy(retries=2))
    assert attempt(call, RESPONSE, status=503) is not None
    assert attempt(call, RESPONSE, status=503) is not None
    assert attempt(call, RESPONSE, status=503) is None
    assert len(call.attempts) == 3
    assert "3 attempts made" in call.reason


def test_each_retry_goes_to_a_different_instance() -> None:
    call = make_call(policy=ClientPolicy(retries=2))
    for _ in range(3):
        attempt(call, RESPONSE, status=503)
    assert len({a.instance for a in call.attempts}) == 3


def test_retry_after_is_honoured_up_to_the_limit() -> None:
    assert attempt(make_call(), RESPONSE, status=503, retry_after=2.0) == 2.0
    call = make_call(policy=ClientPolicy(max_retry_after=1.0))
    assert attempt(call, RESPONSE, status=503, retry_after=2.0) is None
    assert "Retry-After" in call.reason


def test_no_retry_when_the_deadline_is_too_close() -> None:
    call = make_call(deadline=0.004)
    assert attempt(call, RESPONSE, status=503, now=0.0) is None
    assert "deadline" in call.reason


def test_total_timeout_and_an_inherited_deadline_take_the_sooner() -> None:
    assert make_call(policy=ClientPolicy(total_timeout=2.0), deadline=1.0).deadline == 1.0
    assert make_call(policy=ClientPolicy(total_timeout=0.5), deadline=1.0).deadline == 0.5
    assert make_call(overrides=Overrides(total_timeout=0.2)).deadline == 0.2


def test_attempt_timeout_is_capped_by_the_time_left() -> None:
    call = make_call(policy=ClientPolicy(attempt_timeout=1.0), deadline=0.3)
    assert call.attempt_timeout(0.1) == pytest.approx(0.2)
    assert make_call(spec=RouteSpec("/x", ("GET",), timeout=0.05)).attempt_timeout(0.0) == 0.05


def test_a_streamed_body_is_only_resent_when_it_never_left() -> None:
    call = make_call("PUT", replayable=False)
    assert attempt(call, UNSENT, error="ConnectError") == 0.0
    assert attempt(call, FAILED, error="ReadError") is None
    assert "cannot be sent again" in call.reason


def test_retries_stop_when_the_service_budget_is_spent() -> None:
    policy = ClientPolicy(
        budget_percent=0.0, budget_per_second=0.1, budget_window=10, retries=5, throttle_k=0
    )
    engine = Engine(policy, rng=random.Random(0))
    stats = [InstanceStats("users", f"http://10.0.0.{i}:80", 0.0) for i in range(2)]
    granted = 0
    for _ in range(5):
        call = engine.call("GET", "users", "GET /x", stats, None, NO_OVERRIDES, 0.0, None)
        s = call.pick(0.0)
        call.start(s, 0.0)
        if call.finish(s, RESPONSE, 0.001, 0.0, status=503) is not None:
            granted += 1
        else:
            assert "budget" in call.reason
    assert granted == 1  # 0.1/s over 10 s


def test_budgets_are_per_service() -> None:
    engine = Engine(ClientPolicy(), rng=random.Random(0))
    assert engine.budget("a") is engine.budget("a")
    assert engine.budget("a") is not engine.budget("b")
