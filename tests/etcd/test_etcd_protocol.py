"""The pure request/answer layer: what is sent, how answers (and quirks) are read."""

from __future__ import annotations

import base64
import json

import pytest

from meshware import (
    ConfigError,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    LeaseLost,
    RegistryUnavailable,
)
from meshware.etcd import KeyValue, TLSConfig, WatchEvent, WatchResponse, prefix_range_end
from meshware.etcd import _protocol as p
from meshware.etcd._config import ClientSettings, Failover


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def header(revision: int = 7) -> dict[str, str]:
    return {"cluster_id": "1", "member_id": "2", "revision": str(revision), "raft_term": "2"}


def answer(obj: object, status: int = 200, request: p.Request[object] | None = None) -> object:
    req = request or p.range_request("k")
    return p.parse_answer(req, status, json.dumps(obj).encode())


# -- building requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("/a/", b"/a0"),
        ("a", b"b"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\xff", b"\0"),
        ("", b"\0"),
        ("é", "é".encode()[:-1] + bytes([("é".encode()[-1] + 1)])),
    ],
)
def test_prefix_range_end_increments_the_last_byte(prefix: str | bytes, end: bytes) -> None:
    assert prefix_range_end(prefix) == end


def test_range_request_encodes_key_and_prefix_end_in_base64() -> None:
    req = p.range_request("/svc/", prefix=True, keys_only=True)
    assert req.path == "/v3/kv/range"
    assert req.body == {"key": b64("/svc/"), "range_end": b64("/svc0"), "keys_only": True}


def test_empty_prefix_ranges_over_every_key() -> None:
    assert p.range_request("", prefix=True).body == {"key": b64(b"\0"), "range_end": b64(b"\0")}


def test_put_request_sends_lease_as_a_string_and_encodes_str_values_as_utf8() -> None:
    req = p.put_request("k", "välue", lease=2**62 + 1)
    assert req.body == {"key": b64("k"), "value": b64("välue".encode()), "lease": str(2**62 + 1)}
    assert "lease" not in p.put_request("k", b"v").body


def test_watch_request_asks_for_progress_notifications_and_start_revision() -> None:
    req = p.watch_request("/p/", start_revision=12, prev_kv=True)
    assert req.path == "/v3/watch"
    assert req.body == {
        "create_request": {
            "key": b64("/p/"),
            "range_end": b64("/p0"),
            "start_revision": "12",
            "prev_kv": True,
            "progress_notify": True,
        }
    }


# -- reading answers -------------------------------------------------------------------------


def test_range_answer_without_kvs_and_count_is_empty() -> None:
    result = answer({"header": header(5)})
    assert result == p.RangeResult(kvs=[], revision=5, count=0, more=False)


def test_range_answer_decodes_base64_and_string_numbers() -> None:
    kv = {
        "key": b64("/a"),
        "value": b64(b"\x00\xff"),
        "create_revision": "3",
        "mod_revision": "4",
        "version": "2",
        "lease": "7587869061349474309",
    }
    result = answer({"header": header(9), "kvs": [kv], "count": "1"})
    assert isinstance(result, p.RangeResult)
    assert result.kvs == [KeyValue("/a", b"\x00\xff", 3, 4, 2, 7587869061349474309)]
    assert (result.revision, result.count) == (9, 1)


def test_keys_that_are_not_utf8_round_trip() -> None:
    raw = b"/bin\xfe\x80"
    key = answer({"header": header(), "kvs": [{"key": b64(raw)}]}).kvs[0].key  # type: ignore[attr-defined]
    assert p.put_request(key, b"").body["key"] == b64(raw)


def test_keepalive_answer_is_unwrapped_from_result() -> None:
    req = p.lease_keepalive_request(5)
    assert answer({"result": {"header": header(), "ID": "5", "TTL": "10"}}, request=req) == 10


def test_keepalive_answer_without_ttl_means_the_lease_is_gone() -> None:
    req = p.lease_keepalive_request(5)
    with pytest.raises(LeaseLost, match="expired or was revoked"):
        answer({"result": {"header": header(), "ID": "5"}}, request=req)


def test_time_to_live_of_an_unknown_lease_raises_lease_lost() -> None:
    req = p.lease_time_to_live_request(5)
    with pytest.raises(LeaseLost):
        answer({"header": header(), "ID": "5", "TTL": "-1"}, request=req)


# -- errors ----------------------------------------------------------------------------------


def error_body(message: str, code: int) -> dict[str, object]:
    return {"error": message, "code": code, "message": message}


@pytest.mark.parametrize(
    ("message", "code", "status", "expected"),
    [
        ("etcdserver: invalid auth token", 16, 401, EtcdAuthError),
        ("etcdserver: permission denied", 7, 403, EtcdAuthError),
        ("etcdserver: user name is empty", 3, 400, EtcdAuthError),
        ("etcdserver: authentication failed, invalid user ID or password", 3, 400, EtcdAuthError),
        ("etcdserver: requested lease not found", 5, 404, LeaseLost),
        ("etcdserver: mvcc: required revision has been compacted", 11, 400, EtcdCompacted),
        ("etcdserver: no leader", 14, 503, RegistryUnavailable),
        ("etcdserver: mvcc: required revision is a future revision", 11, 400, EtcdError),
    ],
)
def test_error_answers_map_to_meshware_errors(
    message: str, code: int, status: int, expected: type[Exception]
) -> None:
    with pytest.raises(expected, match="etcd answered /v3/kv/range with an error") as info:
        answer(error_body(message, code), status)
    if isinstance(info.value, EtcdError):
        assert (info.value.code, info.value.status) == (code, status)


def test_other_errors_keep_code_and_status() -> None:
    with pytest.raises(EtcdError) as info:
        answer(error_body("etcdserver: too many operations in txn request", 3), 400)
    assert type(info.value) is EtcdError
    assert (info.value.code, info.value.status) == (3, 400)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"header": {"revision": "seven"}}', "'revision' should be an integer"),
        (b'{"header": [], "kvs": []}', "'header' should be dict"),
        (b'{"header": {}, "kvs": {"key": "a"}}', "'kvs' should be list"),
        (b'{"header": {}, "kvs": ["a"]}', "should be an object"),
        (b'{"header": {}, "kvs": [{"key": "%%%"}]}', "'key' should be base64"),
        (b'{"header": {}, "kvs": [{"key": 12}]}', "'key' should be str"),
    ],
)
def test_malformed_answers_raise_etcd_error_with_a_clear_message(body: bytes, problem: str) -> None:
    with pytest.raises(EtcdError, match=problem):
        p.parse_answer(p.range_request("k"), 200, body)


def test_http_error_without_an_error_body_raises_etcd_error() -> None:
    with pytest.raises(EtcdError, match="HTTP 500") as info:
        p.parse_answer(p.range_request("k"), 500, b"{}")
    assert info.value.status == 500


# -- watch stream ------------------------------------------------------------------------------


def watch_line(result: dict[str, object]) -> bytes:
    return json.dumps({"result": {"header": header(), **result}}).encode()


def test_watch_created_line() -> None:
    assert p.parse_watch_line(watch_line({"created": True})) == WatchResponse(7, created=True)


def test_watch_put_event_has_no_type_and_delete_event_only_a_mod_revision() -> None:
    put = {"kv": {"key": b64("/a"), "value": b64("1"), "mod_revision": "6", "version": "1"}}
    delete = {"type": "DELETE", "kv": {"key": b64("/a"), "mod_revision": "7"}}
    response = p.parse_watch_line(watch_line({"events": [put, delete]}))
    assert response.events == [
        WatchEvent("PUT", KeyValue("/a", b"1", 0, 6, 1, 0), None),
        WatchEvent("DELETE", KeyValue("/a", b"", 0, 7, 0, 0), None),
    ]


def test_watch_line_with_compact_revision_raises_compacted() -> None:
    line = watch_line({"canceled": True, "compact_revision": "42"})
    with pytest.raises(EtcdCompacted, match="42") as info:
        p.parse_watch_line(line)
    assert info.value.compact_revision == 42


def test_watch_refused_for_permission_raises_auth_error() -> None:
    reason = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    line = watch_line({"created": True, "canceled": True, "cancel_reason": reason})
    with pytest.raises(EtcdAuthError, match="permission denied"):
        p.parse_watch_line(line)


def test_watch_stream_error_line_from_the_gateway_means_unavailable() -> None:
    line = json.dumps(
        {
            "error": {
                "grpc_code": 14,
                "http_code": 503,
                "message": "error reading from server: EOF",
                "http_status": "Service Unavailable",
            }
        }
    )
    with pytest.raises(RegistryUnavailable, match="error reading from server"):
        p.parse_watch_line(line)


@pytest.mark.parametrize(
    "line",
    [b"not json", b"{}", b'{"result": []}', b'{"result": {"events": [{"type": "NOPE"}]}}'],
)
def test_malformed_watch_lines_raise_etcd_error(line: bytes) -> None:
    with pytest.raises(EtcdError):
        p.parse_watch_line(line)


def event_at(revision: int) -> WatchEvent:
    return WatchEvent("PUT", KeyValue("/k", b"", revision, revision, 1, 0), None)


@pytest.mark.parametrize(
    ("current", "response", "expected"),
    [
        (0, WatchResponse(10, created=True), 11),  # from now: after the creation revision
        (5, WatchResponse(10, created=True), 5),  # older events still to come
        (5, WatchResponse(10, events=[event_at(6), event_at(8)]), 9),
        (11, WatchResponse(20), 21),  # progress notification
    ],
)
def test_next_watch_revision(current: int, response: WatchResponse, expected: int) -> None:
    assert p.next_watch_revision(current, response) == expected


# -- failover, login, TLS ------------------------------------------------------------------------


def test_endpoints_stick_to_the_last_good_one_and_keep_order() -> None:
    endpoints = Failover("http://a:1, http://b:2,https://c:3/")
    assert endpoints.order() == ["http://a:1", "http://b:2", "https://c:3"]
    endpoints.succeeded("http://b:2")
    assert endpoints.order() == ["http://b:2", "https://c:3", "http://a:1"]


def test_unavailable_names_every_endpoint_and_its_failure() -> None:
    endpoints = Failover(["http://a:1", "http://b:2"])
    error = endpoints.unavailable([("http://a:1", "refused"), ("http://b:2", "HTTP 503")])
    assert "http://a:1: refused" in str(error)
    assert "http://b:2: HTTP 503" in str(error)


@pytest.mark.parametrize("bad", ["127.0.0.1:2379", "ftp://a:1", "http://a:1/v3", "http://a:x", ""])
def test_bad_endpoints_raise_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        Failover(bad)


def test_username_without_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both username and password"):
        ClientSettings("http://a:1", timeout=1, tls=None, username="root", password=None)


def test_tls_key_without_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="key_file given without cert_file"):
        TLSConfig(key_file="client.key").ssl_context()


def test_tls_with_a_missing_ca_file_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        TLSConfig(ca_file="/nonexistent/ca.pem").ssl_context()


def test_expired_token_triggers_one_login_and_permission_denied_does_not() -> None:
    settings = ClientSettings("http://a:1", timeout=1, tls=None, username="u", password="pw")
    expired = EtcdAuthError("etcdserver: invalid auth token", code=16)
    denied = EtcdAuthError("etcdserver: permission denied", code=7)
    assert settings.retry_after_login(expired)
    assert not settings.retry_after_login(denied)
    assert settings.retry_after_login(denied, watch=True)  # how etcd refuses an expired watch
