"""Client policy and per-request overrides: bad values fail early, naming the setting."""

from __future__ import annotations

from typing import Any

import pytest

import meshware
from meshware import ClientPolicy, ConfigError
from meshware._core.policy import read_overrides


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retries", -1),
        ("retries", 1.5),
        ("backoff_base", -0.1),
        ("attempt_timeout", 0),
        ("total_timeout", float("nan")),
        ("balancer", "random"),
        ("panic_threshold", 2),
        ("retry_statuses", [503, 999]),
        ("eject_jitter", 1.0),
        ("budget_window", 0),
    ],
)
def test_bad_policy_values_name_the_setting(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        ClientPolicy(**{field: value})
    assert info.value.setting == field
    assert field in str(info.value)


def test_retry_statuses_accept_any_iterable() -> None:
    assert ClientPolicy(retry_statuses=[503]).retry_statuses == frozenset({503})  # type: ignore[arg-type]


def test_client_takes_policy_fields_as_keywords() -> None:
    table = meshware.RoutingTable.empty()
    with meshware.Client(table, retries=0, total_timeout=2.0) as client:
        assert client.policy.retries == 0
        assert client.policy.total_timeout == 2.0


def test_client_refuses_a_transport_argument() -> None:
    with pytest.raises(ConfigError, match="MeshTransport"):
        meshware.Client(meshware.RoutingTable.empty(), transport=object())


def test_overrides_are_validated() -> None:
    assert read_overrides({"retries": 0, "timeout": 0.5}).retries == 0
    with pytest.raises(ConfigError, match=r"unknown key.*retry"):
        read_overrides({"retry": 1})
    with pytest.raises(ConfigError, match="timeout"):
        read_overrides({"timeout": -1})
    with pytest.raises(ConfigError, match="must be a dict"):
        read_overrides(3)
