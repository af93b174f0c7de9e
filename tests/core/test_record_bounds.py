"""Record bounds and total decoding (issue 12, findings 1 and 5): whatever a record holds, the
decoder gives a record or a BadRecord, and the table builder skips it and keeps the others.

Hypothesis feeds random and adversarial values: deep JSON, huge templates, 1,000 segments, lone
surrogates, wrong types in every field, random bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshware import BadRecord, InstanceRecord, RouteSpec, RoutingTable
from meshware._core import records
from meshware._core.networks import AddressPolicy
from meshware._core.table import Delete, Entry, Reset, Upsert

PREFIX = "/meshware"
KEY = f"{PREFIX}/v1/instances/users/u1"
HOSTILE_KEY = f"{PREFIX}/v1/instances/evil/e1"
GOOD = InstanceRecord("users", "u1", "http://127.0.0.1:8001", (RouteSpec("/users/{id}", ("GET",)),))


def good_json(**changes: Any) -> dict[str, Any]:
    data = InstanceRecord(
        "evil", "e1", "http://127.0.0.1:9", (RouteSpec("/evil", ("GET",)),)
    ).to_json()
    data.update(changes)
    return data


def deep(n: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * n + close * n).encode()


ADVERSARIAL: list[bytes] = [
    deep(100_000),
    deep(100_000, '{"a":', "}")[: 5 * 100_000] + b"1" + b"}" * 100_000,
    json.dumps(good_json(routes=[{"template": "/s" * 1000, "methods": ["GET"]}])).encode(),
    json.dumps(good_json(routes=[{"template": "/" + "x" * 100_000, "methods": ["GET"]}])).encode(),
    json.dumps(good_json(routes=[{"template": "/a", "methods": ["GET"]}] * 10_000)).encode(),
    json.dumps(good_json(labels={f"k{i}": "v" for i in range(1000)})).encode(),
    json.dumps(
        good_json(
            routes=[
                {"template": "/a", "methods": ["GET"], "x": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}
            ]
        )
    ).encode(),
    b'{"schema":1,"service":"evil","instance":"e1","url":"http://h:1","routes":[],"zone":"\\ud800"}',
    b'{"schema":1,"service":"evil","instance":"e1","url":"http://h:1","routes":[],"\\udfff":1}',
    json.dumps(good_json(url="http://h:8000\n")).encode(),
    json.dumps(good_json(url="http://..:1")).encode(),
    json.dumps(good_json(url="http://[:::::]:1")).encode(),
    json.dumps(good_json(started_at=1e400)).encode().replace(b"Infinity", b"1e400"),
    json.dumps(good_json(pid=10**30)).encode(),
    b'{"schema":1,"service":"evil","instance":"e1","url":"http://h:1","routes":[],"pid":'
    + b"9" * 5000
    + b"}",
    json.dumps(good_json(routes=[{"template": "/{x:re:(}", "methods": ["GET"]}])).encode(),
    json.dumps(good_json(routes=[{"template": "/\x1b[2J", "methods": ["GET"]}])).encode(),
    json.dumps(good_json(service="users\n")).encode(),
    b"x" * (records.MAX_RECORD_BYTES + 1),
    b"\xff\xfe",
    b"",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(codec=None), max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "schema",
    "service",
    "instance",
    "url",
    "state",
    "routing",
    "weight",
    "labels",
    "routes",
    "zone",
    "version",
    "framework",
    "pid",
    "hostname",
    "started_at",
    "shadows",
]


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    """A valid record with some fields (top-level or in a route) replaced by random values."""
    data = good_json()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        data[name] = draw(json_values)
    routes = data.get("routes")
    if draw(st.booleans()) and isinstance(routes, list) and routes and isinstance(routes[0], dict):
        route = dict(routes[0])
        name = draw(
            st.sampled_from(
                [
                    "template",
                    "methods",
                    "public",
                    "kind",
                    "host",
                    "timeout",
                    "retries",
                    "idempotent",
                    "name",
                    "limits",
                ]
            )
        )
        route[name] = draw(json_values)
        data["routes"] = [route]
    return json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def deep_values(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(min_value=1, max_value=200_000))
    kind = draw(st.sampled_from(["[]", "{}"]))
    if kind == "[]":
        return deep(n)
    return b'{"a":' * n + b"0" + b"}" * n


@st.composite
def template_values(draw: st.DrawFn) -> bytes:
    segment = draw(st.sampled_from(["s", "{x}", "{x:int}", "", "{p:path}", "%", "{x:re:[a-z]+}"]))
    count = draw(st.integers(min_value=0, max_value=2000))
    names = iter(range(10**6))
    text = "".join("/" + segment.replace("x", f"x{next(names)}") for _ in range(count))
    return json.dumps(good_json(routes=[{"template": text or "/", "methods": ["GET"]}])).encode()


hostile = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
    | mutated_records()
    | deep_values()
    | template_values()
    | st.integers(0, len(ADVERSARIAL) - 1).map(ADVERSARIAL.__getitem__)
)


def decode_is_total(value: bytes) -> InstanceRecord | None:
    try:
        return InstanceRecord.decode(HOSTILE_KEY, value)
    except BadRecord as exc:
        error = exc
    assert error.key == HOSTILE_KEY
    assert len(str(error)) < 600  # a hostile record cannot make its warning huge
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_decoding_any_value_gives_a_record_or_a_bad_record(value: bytes) -> None:
    record = decode_is_total(value)
    if record is not None:  # whatever is accepted can be re-encoded and read back
        assert InstanceRecord.decode(HOSTILE_KEY, record.encode()) == record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_the_table_skips_a_hostile_record_and_keeps_the_others(value: bytes) -> None:
    good = Entry(KEY, GOOD.encode(), 1, 1)
    table = RoutingTable.empty(PREFIX).apply(Reset((good, Entry(HOSTILE_KEY, value, 2, 2)), 2))
    assert table.resolve("GET", "/users/7").service == "users"
    accepted = decode_is_total(value) is not None
    assert (HOSTILE_KEY in table.rejected) == (not accepted)
    # the same record arriving as a watch event, then leaving
    table = RoutingTable.empty(PREFIX).apply(Reset((good,), 1))
    table = table.apply(Upsert(Entry(HOSTILE_KEY, value, 3, 3), 3))
    assert table.resolve("GET", "/users/7").service == "users"
    table.routes(), table.conflicts(), table.instances()
    table = table.apply(Delete(HOSTILE_KEY, 4))
    assert HOSTILE_KEY not in table.rejected


@pytest.mark.parametrize("value", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_each_adversarial_record_is_a_bad_record(value: bytes) -> None:
    with pytest.raises(BadRecord):
        InstanceRecord.decode(HOSTILE_KEY, value)


def test_templates_up_to_the_segment_bound_are_accepted_and_resolve() -> None:
    template = "/s" * records.MAX_SEGMENTS
    record = InstanceRecord("users", "u1", "http://127.0.0.1:1", (RouteSpec(template, ("GET",)),))
    table = RoutingTable.from_records([record])
    assert table.resolve("GET", template).service == "users"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:8000\n", "control characters"),
        ("http://..:1", "not a valid host name"),
        ("http://-h:1", "not a valid host name"),
        ("http://[:::::]:1", "not an IPv6 address"),
        ("http://[fe80::1%eth0]:1", "url must be"),
        ("http://1.2.3.256:1", "not an IPv4 address"),
        ("http://h:08000", "url must be"),
        ("http://169.254.169.254", "refused by"),
        ("http://[fe80::1]:80", "refused by"),
        ("http://[::ffff:169.254.169.254]:80", "refused by"),
        ("http://metadata.google.internal", "metadata service"),
        ("http://0.0.0.0:80", "refused by"),
    ],
)
def test_strict_urls(url: str, problem: str) -> None:
    with pytest.raises(BadRecord, match="url") as info:
        InstanceRecord.decode(HOSTILE_KEY, json.dumps(good_json(url=url)).encode())
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://[::1]:8000", "https://users.internal", "http://web_1:80"],
)
def test_loopback_and_plain_names_are_allowed_by_default(url: str) -> None:
    assert records.check_url(url) is None


def test_allowed_networks_replace_the_default() -> None:
    policy = AddressPolicy.parse("10.0.0.0/8, fd00::/8, users.internal, *.svc.local")
    try:
        records.set_address_policy(policy)
        assert records.check_url("http://10.1.2.3:80") is None
        assert records.check_url("http://[fd00::5]:80") is None
        assert records.check_url("http://users.internal") is None
        assert records.check_url("http://a.b.svc.local:1") is None
        for refused in ("http://127.0.0.1:1", "http://other.internal", "http://11.0.0.1:1"):
            assert "MESHWARE_ALLOWED_NETWORKS" in (records.check_url(refused) or "")
        records.set_address_policy(AddressPolicy.parse("*"))
        assert records.check_url("http://169.254.169.254") is None
    finally:
        records.set_address_policy(None)


@pytest.mark.parametrize("text", ["10.0.0.0/33", "bad name!", " , ", "*.-x"])
def test_a_bad_allowed_networks_value_names_the_entry(text: str) -> None:
    with pytest.raises(ValueError, match="MESHWARE_ALLOWED_NETWORKS"):
        AddressPolicy.parse(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"routes": [{"template": "/a", "methods": ["GET"], "kind": "k" * 100_000}]},
        {"shadows": [{"template": "/s", "methods": ["GET"], "reason": "r" * 100_000}]},
        {"shadows": [{"template": "/s", "methods": ["GET"], "kind": ["k"] * 100_000}]},
    ],
)
def test_a_refused_enumerated_value_is_shown_bounded(changes: dict[str, Any]) -> None:
    with pytest.raises(BadRecord) as caught:
        InstanceRecord.decode(HOSTILE_KEY, json.dumps(good_json(**changes)).encode())
    assert len(str(caught.value)) < 600
