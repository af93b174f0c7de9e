"""Settings: arguments over app config over environment; every bad value names its setting."""

from __future__ import annotations

import pytest

from meshware import ConfigError, EtcdSettings, MemberSettings


def test_defaults() -> None:
    s = MemberSettings.load({"service": "users"}, env={})
    assert (s.etcd.endpoints, s.etcd.prefix, s.lease_ttl) == (
        ("http://127.0.0.1:2379",),
        "/meshware",
        5,
    )


def test_arguments_win_over_app_config_over_environment() -> None:
    env = {"MESHWARE_SERVICE": "from-env", "MESHWARE_LEASE_TTL": "7", "MESHWARE_PREFIX": "/env"}
    config = {"MESHWARE_LEASE_TTL": 9}
    s = MemberSettings.load({"prefix": "/arg"}, app_config=config, env=env)
    assert (s.service, s.lease_ttl, s.etcd.prefix) == ("from-env", 9, "/arg")


def test_endpoints_are_comma_separated() -> None:
    s = EtcdSettings.load(env={"MESHWARE_ETCD_ENDPOINTS": "http://a:2379, https://b:2379/"})
    assert s.endpoints == ("http://a:2379", "https://b:2379")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no service name: pass service='...' or set MESHWARE_SERVICE"),
        ({"MESHWARE_SERVICE": "Users!"}, "service must be 1-63 characters"),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_LEASE_TTL": "1"},
            "MESHWARE_LEASE_TTL must be between 2 and 300",
        ),
        ({"MESHWARE_SERVICE": "u", "MESHWARE_LEASE_TTL": "2.5"}, "whole number of seconds"),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_ETCD_ENDPOINTS": "localhost:2379"},
            "http:// or https:// URL",
        ),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_ADVERTISE_URL": "http://h:1/path"},
            "must not have a path",
        ),
        ({"MESHWARE_SERVICE": "u", "MESHWARE_PREFIX": "meshware"}, "key prefix like /meshware"),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_ETCD_CA_FILE": "/nonexistent/ca.pem"},
            "not a readable file",
        ),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_ETCD_USERNAME": "root"},
            "needs both MESHWARE_ETCD_USERNAME",
        ),
        (
            {"MESHWARE_SERVICE": "u", "MESHWARE_STRICT": "maybe"},
            "MESHWARE_STRICT must be true or false",
        ),
    ],
)
def test_bad_settings_fail_with_the_setting_and_what_was_expected(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        MemberSettings.load(env=env)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="MESHWARE_WEIGHT must be a whole number 0-10000"):
        MemberSettings.load({"service": "u"}, env={"MESHWARE_WEIGHT": "heavy"})
