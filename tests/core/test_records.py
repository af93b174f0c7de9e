"""The record codec: what a record must hold, and the clear errors for what it must not."""

from __future__ import annotations

import json

import pytest

from meshware import BadRecord, InstanceRecord, RouteSpec

KEY = "/meshware/v1/instances/users/u1"


def raw(**changes: object) -> bytes:
    record = InstanceRecord("users", "u1", "http://127.0.0.1:8001", (RouteSpec("/x", ("GET",)),))
    data = record.to_json()
    data.update(changes)
    return json.dumps(data).encode()


def test_a_record_survives_encoding_and_decoding() -> None:
    record = InstanceRecord(
        "users", "u1", "http://[::1]:8001", (RouteSpec("/x/{id:int}", ("GET",), public=True),)
    )
    assert InstanceRecord.decode(KEY, record.encode()) == record


@pytest.mark.parametrize(
    "url",
    [
        "http://h:99999",
        "http://h:0",
        "http://h:1;x",
        "http://h:1/path",
        "ftp://h:1",
        "http://h}:1",
        "http:// h:1",
    ],
)
def test_urls_nginx_and_httpx_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(BadRecord, match="url must be") as info:
        InstanceRecord.decode(KEY, raw(url=url))
    assert info.value.key == KEY


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"schema": 2}, "unsupported schema"),
        ({"state": "gone"}, "state must be"),
        ({"routes": [{"template": "/{x", "methods": ["GET"]}]}, "routes[0]"),
        ({"weight": -1}, "weight must be"),
    ],
)
def test_other_bad_fields_name_the_problem(change: dict[str, object], problem: str) -> None:
    with pytest.raises(BadRecord) as info:
        InstanceRecord.decode(KEY, raw(**change))
    assert problem in str(info.value)


def test_not_json_is_a_bad_record_not_a_crash() -> None:
    with pytest.raises(BadRecord, match="not JSON"):
        InstanceRecord.decode(KEY, b"\xff{")
