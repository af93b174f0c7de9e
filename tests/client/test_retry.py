"""Retry budget and Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

from meshware._core.retry import RetryBudget, parse_retry_after


def test_budget_allows_a_floor_per_second_without_traffic() -> None:
    budget = RetryBudget(percent=0.2, per_second=10, window=10)
    allowed = sum(budget.try_withdraw(0.5) for _ in range(200))
    assert allowed == 100  # 10/s over a 10 s window


def test_budget_grows_with_a_share_of_the_requests() -> None:
    budget = RetryBudget(percent=0.2, per_second=0, window=10)
    for _ in range(1000):
        budget.deposit(0.5)
    assert sum(budget.try_withdraw(0.5) for _ in range(1000)) == 200


def test_budget_refills_as_the_window_slides() -> None:
    budget = RetryBudget(percent=0.0, per_second=1, window=10)
    assert sum(budget.try_withdraw(0.0) for _ in range(20)) == 10
    assert not budget.try_withdraw(5.0)
    assert budget.try_withdraw(10.0)  # the bucket of second 0 has left the window
    assert budget.balance(30.0) == 10


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert parse_retry_after("3", wall_now=0.0) == 3.0
    wall = 1_700_000_000.0
    date = email.utils.formatdate(wall + 7, usegmt=True)
    assert parse_retry_after(date, wall_now=wall) == pytest.approx(7.0)
    assert parse_retry_after(email.utils.formatdate(wall - 7, usegmt=True), wall_now=wall) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-1", "1.5"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, wall_now=0.0) is None
