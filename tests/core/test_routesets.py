"""Route sets: schema-2 records joined with their shared route set, and hostile sets skipped."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshware._core.records import InstanceRecord, RouteSpec, instance_key
from meshware._core.routesets import (
    MAX_CHUNK_BYTES,
    RECORD_SCHEMA,
    Assembler,
    RouteSet,
    assemble,
    chunk_key,
    encode_record,
    encode_routeset,
    split_chunk_key,
)
from meshware._core.table import Delete, Entry, Reset, RoutingTable, Update, Upsert

PREFIX = "/meshware"
ROUTES = (
    RouteSpec("/users/{id:int}", ("GET", "PUT"), name="user", public=True, idempotent=True),
    RouteSpec("/users", ("GET", "POST"), timeout=2.0, retries=1),
    RouteSpec("/files/{p:path}", ("GET",)),
)


def rec(
    service: str = "users", iid: str = "1", routes: tuple[RouteSpec, ...] = ROUTES, **kw: object
) -> InstanceRecord:
    return InstanceRecord(service, iid, f"http://{service}-{iid}:80", routes, **kw)  # type: ignore[arg-type]


class Feed:
    """An assembler in front of a table, as the view has them."""

    def __init__(self) -> None:
        self.assembler = Assembler(PREFIX)
        self.table = RoutingTable.empty(PREFIX)
        self.revision = 1
        self.kv: dict[str, bytes] = {}  # what the registry holds now

    def apply(self, update: Update) -> list[Update]:
        out = self.assembler.feed(update)
        for change in out:
            self.table = self.table.apply(change)
        return out

    def put(self, key: str, value: bytes) -> list[Update]:
        self.revision += 1
        self.kv[key] = value
        return self.apply(Upsert(Entry(key, value, self.revision, self.revision), self.revision))

    def delete(self, key: str) -> list[Update]:
        self.revision += 1
        self.kv.pop(key, None)
        return self.apply(Delete(key, self.revision))

    def put_set(self, rs: RouteSet) -> None:
        for key, chunk in zip(rs.keys(PREFIX), rs.chunks, strict=True):
            self.put(key, chunk)

    def put_record(
        self, record: InstanceRecord, rs: RouteSet | None = None, raw: bytes | None = None
    ) -> list[Update]:
        value = raw if raw is not None else (encode_record(record, rs) if rs else record.encode())
        return self.put(instance_key(PREFIX, record.service, record.instance_id), value)

    def publish(self, record: InstanceRecord, **kw: int) -> RouteSet:
        rs = encode_routeset(record, **kw)
        self.put_set(rs)
        self.put_record(record, rs)
        return rs


def routes_of(table: RoutingTable) -> list[tuple[str, str, tuple[str, ...], object]]:
    return [
        (r.service, r.template.text, tuple(sorted(r.methods)), dataclasses.replace(r.spec))
        for r, _ in table.routes()
    ]


def test_a_schema_2_record_routes_exactly_as_its_schema_1_twin() -> None:
    one = RoutingTable.from_records([rec(), rec(iid="2", routing="ordered")], prefix=PREFIX)
    feed = Feed()
    feed.publish(rec())
    feed.publish(rec(iid="2", routing="ordered"))
    assert routes_of(feed.table) == routes_of(one)
    assert feed.table.rejected == {}
    found = feed.table.resolve("GET", "/users/42")
    assert found.params == {"id": 42}
    assert {i.url for i in found.instances} == {"http://users-1:80", "http://users-2:80"}
    assert feed.table.records()[0][1].routeset == encode_routeset(rec()).digest


def test_the_record_is_small_and_names_the_set_by_digest() -> None:
    many = tuple(RouteSpec(f"/r{i}/{{id:int}}/items", ("GET",), name=f"r{i}") for i in range(1000))
    record = rec(routes=many, version="1.2.3", zone="eu-1", framework="flask", pid=12345)
    rs = encode_routeset(record)
    data = json.loads(encode_record(record, rs))
    assert data["schema"] == RECORD_SCHEMA
    assert "routes" not in data
    assert "routing" not in data
    assert data["routeset"] == {"digest": rs.digest, "chunks": 1, "size": rs.size}
    assert rs.digest == hashlib.sha256(b"".join(rs.chunks)).hexdigest()
    assert len(encode_record(record, rs)) < 400 < 60_000 < rs.size


def test_instances_with_the_same_routes_share_one_set_and_one_routes_tuple() -> None:
    feed = Feed()
    digests = {feed.publish(rec(iid=str(i))).digest for i in range(5)}
    assert len(digests) == 1
    assert feed.assembler.routesets == 1
    records = [r for _, r in feed.table.records()]
    assert all(r.routes is records[0].routes for r in records)


def test_the_service_is_part_of_the_set_so_equal_routes_of_two_services_are_two_sets() -> None:
    assert encode_routeset(rec("a")).digest != encode_routeset(rec("b")).digest


def test_a_large_set_is_chunked_and_joined_again() -> None:
    feed = Feed()
    rs = feed.publish(rec(), chunk_bytes=100)
    assert len(rs.chunks) == 3
    assert all(len(c) <= 100 for c in rs.chunks)
    assert feed.table.resolve("GET", "/users/1").service == "users"


def test_a_record_waits_for_its_set_then_routes_when_it_arrives() -> None:
    feed = Feed()
    rs = encode_routeset(rec(), chunk_bytes=100)
    feed.put_record(rec(), rs)
    problem = feed.table.rejected[instance_key(PREFIX, "users", "1")]
    assert "waits for its route set" in problem
    feed.put_set(dataclasses.replace(rs, chunks=rs.chunks[:-1]))
    assert "missing" in feed.table.rejected[instance_key(PREFIX, "users", "1")]
    feed.put(rs.keys(PREFIX)[-1], rs.chunks[-1])
    assert feed.table.rejected == {}
    assert feed.table.resolve("GET", "/users/1").service == "users"


def test_a_verified_set_that_disappears_keeps_its_records_routing() -> None:
    """Its lease expired under a stalled etcd, or it is being published again: the digest
    pins the content, so the records that name it keep routing (static stability)."""
    feed = Feed()
    rs = feed.publish(rec())
    feed.delete(rs.keys(PREFIX)[0])
    assert feed.table.resolve("GET", "/users/1").service == "users"
    feed.apply(Reset(tuple(Entry(k, v, 1, 1) for k, v in feed.kv.items()), feed.revision))
    assert feed.table.resolve("GET", "/users/1").service == "users"  # a re-list too
    fresh = Feed()  # a reader that never saw the set waits for it
    fresh.revision = feed.revision
    fresh.apply(Reset(tuple(Entry(k, v, 1, 1) for k, v in feed.kv.items()), feed.revision))
    assert "waits for its route set" in fresh.table.rejected[instance_key(PREFIX, "users", "1")]
    fresh.put_set(rs)  # the instance publishes it again
    assert fresh.table.resolve("GET", "/users/1").service == "users"


def test_a_set_nobody_names_is_forgotten_once_its_keys_are_gone() -> None:
    feed = Feed()
    rs = feed.publish(rec())
    feed.delete(instance_key(PREFIX, "users", "1"))
    assert feed.assembler.routesets == 1  # its keys are still there
    feed.delete(rs.keys(PREFIX)[0])
    assert feed.assembler.routesets == 0


def test_putting_the_same_chunk_again_changes_nothing() -> None:
    feed = Feed()
    rs = feed.publish(rec())
    table = feed.table
    assert feed.put(rs.keys(PREFIX)[0], rs.chunks[0]) == []
    assert feed.table is table


def test_a_new_instance_of_a_known_set_costs_no_set_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = Feed()
    rs = feed.publish(rec())
    calls = []
    real = InstanceRecord.from_json

    def counting(key: str, data: object) -> InstanceRecord:
        calls.append(len(data["routes"]))  # type: ignore[index]
        return real(key, data)

    monkeypatch.setattr(InstanceRecord, "from_json", counting)
    feed.put_record(rec(iid="2"), rs)
    feed.put_record(rec(iid="2").with_state("draining"), rs)
    assert calls == [0, 0]  # only the records' own fields were decoded


def test_schema_1_records_pass_through_beside_schema_2_ones() -> None:
    feed = Feed()
    feed.put_record(rec(iid="old"))  # schema 1, inline routes
    feed.publish(rec(iid="new"))
    found = feed.table.resolve("GET", "/users/7")
    assert {i.url for i in found.instances} == {"http://users-old:80", "http://users-new:80"}


def test_a_snapshot_is_assembled_whatever_the_order_of_its_keys() -> None:
    rs = encode_routeset(rec(), chunk_bytes=64)
    entries = [Entry(k, c, 2, 2) for k, c in zip(rs.keys(PREFIX), rs.chunks, strict=True)]
    record = Entry(instance_key(PREFIX, "users", "1"), encode_record(rec(), rs), 3, 3)
    snapshot = assemble(PREFIX, Reset((record, *reversed(entries)), 3))
    assert [e.key for e in snapshot.entries] == [record.key]
    table = RoutingTable.empty(PREFIX).apply(snapshot)
    assert table.resolve("PUT", "/users/1").service == "users"


def test_unknown_keys_under_routesets_are_ignored_not_counted_as_bad() -> None:
    feed = Feed()
    feed.put(f"{PREFIX}/v1/routesets/users/notadigest/0000", b"x")
    feed.put(f"{PREFIX}/v1/routesets/users/{'a' * 64}/9999", b"x")  # index over the bound
    feed.put(f"{PREFIX}/v1/routesets/users", b"x")
    assert feed.table.rejected == {}
    assert feed.assembler.routesets == 0


def test_chunk_keys_round_trip() -> None:
    digest = "ab" * 32
    key = chunk_key(PREFIX, "users", digest, 3)
    assert key == f"{PREFIX}/v1/routesets/users/{digest}/0003"
    assert split_chunk_key(PREFIX, key) == ("users", digest, 3)


# --------------------------------------------------------------------------- hostile input


def hostile_cases() -> dict[str, tuple[bytes, dict[str, object] | None]]:
    """name -> (set bytes, record ref override); each must cost only its record."""
    good = json.loads(b"".join(encode_routeset(rec()).chunks))
    return {
        "digest does not match": (json.dumps(good).encode(), {"digest": "0" * 64}),
        "another service's set": (json.dumps({**good, "service": "admin"}).encode(), None),
        "not json": (b"{nope", None),
        "nested 100000 deep": (b"[" * 100_000 + b"]" * 100_000, None),
        "not an object": (b"[1, 2]", None),
        "no routes": (json.dumps({"schema": 2, "service": "users"}).encode(), None),
        "a bad route": (
            json.dumps({"schema": 2, "service": "users", "routes": [{"template": "x"}]}).encode(),
            None,
        ),
        "size lies": (json.dumps(good).encode(), {"size": 5}),
        "chunks lie": (json.dumps(good).encode(), {"chunks": 2}),
    }


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_a_hostile_set_costs_only_the_record_that_names_it(case: str) -> None:
    raw, override = hostile_cases()[case]
    digest = hashlib.sha256(raw).hexdigest()
    ref = {"digest": digest, "chunks": 1, "size": len(raw), **(override or {})}
    feed = Feed()
    feed.publish(rec("orders", routes=(RouteSpec("/orders", ("GET",)),)))
    feed.put(chunk_key(PREFIX, "users", str(ref["digest"]), 0), raw)
    record = {**rec().to_json(), "schema": 2, "routeset": ref}
    del record["routes"]
    feed.put(instance_key(PREFIX, "users", "1"), json.dumps(record).encode())
    assert list(feed.table.rejected) == [instance_key(PREFIX, "users", "1")]
    assert "route set" in feed.table.rejected[instance_key(PREFIX, "users", "1")]
    assert feed.table.services == ("orders",)


def test_a_record_cannot_name_a_set_stored_under_another_service() -> None:
    feed = Feed()
    rs = feed.publish(rec("admin"))
    stolen = dataclasses.replace(rs, service="users")  # same digest, named by a users record
    feed.put_record(rec("users", iid="evil"), stolen)
    assert "waits for its route set" in feed.table.rejected[instance_key(PREFIX, "users", "evil")]
    assert feed.table.services == ("admin",)


def test_a_chunk_changed_after_verification_changes_nothing_but_new_readers_refuse_it() -> None:
    feed = Feed()
    rs = feed.publish(rec())
    feed.put(rs.keys(PREFIX)[0], rs.chunks[0].replace(b"/users", b"/admin"))
    assert feed.table.rejected == {}
    assert feed.table.resolve("GET", "/users/1").service == "users"
    fresh = Feed()
    fresh.apply(Reset(tuple(Entry(k, v, 1, 1) for k, v in feed.kv.items()), feed.revision))
    assert "does not match" in fresh.table.rejected[instance_key(PREFIX, "users", "1")]
    assert fresh.table.services == ()


def test_an_oversized_chunk_is_named_in_the_warning() -> None:
    feed = Feed()
    rs = encode_routeset(rec())
    feed.put(rs.keys(PREFIX)[0], b" " * (MAX_CHUNK_BYTES + 1))
    feed.put_record(rec(), rs)
    assert "at most" in feed.table.rejected[instance_key(PREFIX, "users", "1")]


@pytest.mark.parametrize(
    "ref",
    [
        None,
        "x",
        {"digest": "A" * 64, "chunks": 1, "size": 1},
        {"digest": "a" * 64, "chunks": 0, "size": 1},
        {"digest": "a" * 64, "chunks": 1, "size": 10**12},
        {"digest": "a" * 64, "chunks": True, "size": 1},
    ],
)
def test_a_bad_reference_is_a_bad_record(ref: object) -> None:
    feed = Feed()
    data = {"schema": 2, "service": "users", "instance": "1", "url": "http://u:1", "routeset": ref}
    feed.put(instance_key(PREFIX, "users", "1"), json.dumps(data).encode())
    assert "routeset" in feed.table.rejected[instance_key(PREFIX, "users", "1")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["chunk", "record", "delete-chunk", "delete-record", "reset"]),
            st.integers(0, 2),
            st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())),
            json_values,
        ),
        max_size=25,
    )
)
def test_fuzz_whatever_the_registry_holds_the_feed_never_raises(
    ops: list[tuple[str, int, bytes, object]],
) -> None:
    good = encode_routeset(rec())
    digests = [good.digest, hashlib.sha256(b"x").hexdigest(), "f" * 64]
    feed = Feed()
    feed.publish(rec("orders", routes=(RouteSpec("/orders", ("GET",)),)))
    for op, n, raw, junk in ops:
        digest = digests[n]
        if op == "chunk":
            key = chunk_key(PREFIX, "users", digest, n % 2)
            value = good.chunks[0] if n == 0 else raw
            feed.put(key, value)
        elif op == "record":
            data = {
                "schema": 2,
                "service": "users",
                "instance": str(n),
                "url": "http://u:1",
                "routeset": junk
                if n == 2
                else {"digest": digest, "chunks": 1 + n % 2, "size": len(raw) or 1},
            }
            key = instance_key(PREFIX, "users", str(n))
            feed.put(key, json.dumps(data).encode())
        elif op == "delete-chunk":
            feed.delete(chunk_key(PREFIX, "users", digest, 0))
        elif op == "delete-record":
            feed.delete(instance_key(PREFIX, "users", str(n)))
        else:
            feed.apply(Reset(tuple(Entry(k, v, 1, 1) for k, v in feed.kv.items()), feed.revision))
        assert (
            feed.table.resolve("GET", "/orders").service == "orders"
        )  # never costs another service


def test_a_table_fed_a_raw_snapshot_joins_schema_2_records_itself() -> None:
    """One-shot readers (the CLI, doctor, a member's conflict check) just apply a snapshot."""
    rs = encode_routeset(rec())
    entries = (
        Entry(rs.keys(PREFIX)[0], rs.chunks[0], 2, 2),
        Entry(instance_key(PREFIX, "users", "1"), encode_record(rec(), rs), 3, 3),
        Entry(instance_key(PREFIX, "users", "2"), rec(iid="2").encode(), 4, 4),
    )
    table = RoutingTable.empty(PREFIX).apply(Reset(entries, 4))
    assert table.rejected == {}
    assert len(table.resolve("GET", "/users/1").instances) == 2


def test_too_many_routes_for_a_set_is_a_clear_error_for_the_writer_and_a_skip_for_readers() -> None:
    from meshware import ConfigError
    from meshware._core.routesets import MAX_SET_ROUTES

    many = tuple(RouteSpec(f"/r{i}", ("GET",)) for i in range(MAX_SET_ROUTES + 1))
    with pytest.raises(ConfigError, match="at most 32768"):
        encode_routeset(rec(routes=many))
    raw = json.dumps(
        {"schema": 2, "service": "users", "routes": [r.to_json() for r in many]}
    ).encode()
    feed = Feed()
    rs = RouteSet("users", hashlib.sha256(raw).hexdigest(), (raw,))
    feed.put_set(rs)
    feed.put_record(rec(), rs)
    assert "more than the bound" in feed.table.rejected[instance_key(PREFIX, "users", "1")]


def test_every_field_the_set_decides_reaches_every_instance() -> None:
    """Found by difference with the record decoded alone: routes, routing, and route-level
    fields a later version adds (shadows) without a list to keep up to date."""
    feed = Feed()
    rs = feed.publish(rec(routing="ordered"))
    feed.put_record(rec(iid="2", routing="ordered"), rs)
    records = [r for _, r in feed.table.records()]
    assert [r.routing for r in records] == ["ordered", "ordered"]
    assert records[0].routes is records[1].routes


def test_shadows_travel_in_the_route_set_and_reach_every_instance() -> None:
    from meshware._core.records import Shadow

    shadow = Shadow(RouteSpec("/static/{p:path}", ("GET",)), before=0, reason="static")
    record = rec(shadows=(shadow,))
    rs = encode_routeset(record)
    assert "shadows" in json.loads(b"".join(rs.chunks))
    assert "shadows" not in json.loads(encode_record(record, rs))
    feed = Feed()
    feed.put_set(rs)
    feed.put_record(record, rs)
    feed.put_record(rec(iid="2", shadows=(shadow,)), rs)
    assert [r.shadows for _, r in feed.table.records()] == [(shadow,), (shadow,)]
