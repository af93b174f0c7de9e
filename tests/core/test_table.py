"""The routing table: membership by route, conflicts, app order, bad records, increments."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshware import (
    InstanceRecord,
    NoEndpointAvailable,
    NoRouteError,
    Resolution,
    RouteSpec,
    RoutingTable,
)
from meshware._core.records import instance_key
from meshware._core.table import Delete, Entry, Reset, Upsert

PREFIX = "/meshware"


def rec(
    service: str, iid: str, url: str, *routes: tuple[str, tuple[str, ...]], **kw: object
) -> InstanceRecord:
    return InstanceRecord(
        service=service,
        instance_id=iid,
        url=url,
        routes=tuple(RouteSpec(t, m) for t, m in routes),
        **kw,  # type: ignore[arg-type]
    )


def put(
    table: RoutingTable, record: InstanceRecord, rev: int, create: int | None = None
) -> RoutingTable:
    key = instance_key(PREFIX, record.service, record.instance_id)
    return table.apply(Upsert(Entry(key, record.encode(), create or rev, rev), rev))


def delete(table: RoutingTable, record: InstanceRecord, rev: int) -> RoutingTable:
    return table.apply(Delete(instance_key(PREFIX, record.service, record.instance_id), rev))


GET = ("GET", "HEAD")


def test_resolves_method_and_path_to_service_route_params_and_instances() -> None:
    table = put(
        RoutingTable.empty(), rec("users", "u1", "http://10.0.0.1:80", ("/users/{id:int}", GET)), 2
    )
    found = table.resolve("get", "/users/42?x=1")
    assert (found.service, found.route.template.text, found.params) == (
        "users",
        "/users/{id:int}",
        {"id": 42},
    )
    assert [i.url for i in found.instances] == ["http://10.0.0.1:80"]


def test_unknown_path_raises_no_route_with_method_and_path() -> None:
    table = put(RoutingTable.empty(), rec("users", "u1", "http://a:1", ("/users", GET)), 2)
    with pytest.raises(NoRouteError, match="GET /nope"):
        table.resolve("GET", "/nope")


def test_wrong_method_lists_the_allowed_ones() -> None:
    table = put(RoutingTable.empty(), rec("users", "u1", "http://a:1", ("/users", GET)), 2)
    with pytest.raises(NoRouteError) as info:
        table.resolve("DELETE", "/users")
    assert info.value.allowed == ("GET", "HEAD")


def test_method_miss_falls_through_to_a_lower_precedence_route() -> None:
    table = RoutingTable.empty()
    table = put(table, rec("a", "1", "http://a:1", ("/x/me", GET)), 2)
    table = put(table, rec("b", "1", "http://b:1", ("/x/{name}", ("POST",))), 3)
    assert table.resolve("POST", "/x/me").service == "b"


def test_percent_encoded_path_is_decoded_like_the_frameworks_do() -> None:
    table = put(RoutingTable.empty(), rec("s", "1", "http://a:1", ("/files/{name}", GET)), 2)
    assert table.resolve("GET", "/files/a%20b").params == {"name": "a b"}


def test_missing_trailing_slash_routes_to_the_owner_which_redirects() -> None:
    table = put(RoutingTable.empty(), rec("s", "1", "http://a:1", ("/items/", GET)), 2)
    assert table.resolve("GET", "/items").service == "s"


def test_only_instances_declaring_a_route_serve_it() -> None:
    v1 = rec("users", "v1", "http://v1:1", ("/users/{id:int}", GET))
    v2 = rec(
        "users", "v2", "http://v2:1", ("/users/{id:int}", GET), ("/users/{id:int}/avatar", GET)
    )
    table = put(put(RoutingTable.empty(), v1, 2), v2, 3)
    assert [i.url for i in table.resolve("GET", "/users/1").instances] == [
        "http://v1:1",
        "http://v2:1",
    ]
    assert [i.url for i in table.resolve("GET", "/users/1/avatar").instances] == ["http://v2:1"]


def test_draining_instances_are_not_offered() -> None:
    table = RoutingTable.empty()
    table = put(table, rec("s", "1", "http://a:1", ("/x", GET)), 2)
    table = put(table, rec("s", "2", "http://b:1", ("/x", GET), state="draining"), 3)
    assert [i.url for i in table.resolve("GET", "/x").instances] == ["http://a:1"]


def test_route_whose_instances_all_drain_raises_no_endpoint() -> None:
    table = put(RoutingTable.empty(), rec("s", "1", "http://a:1", ("/x", GET), state="draining"), 2)
    with pytest.raises(NoEndpointAvailable, match="draining"):
        table.resolve("GET", "/x").require_instances()


def test_workers_sharing_a_url_are_one_instance() -> None:
    table = RoutingTable.empty()
    for rev, iid in enumerate(["w1", "w2", "w3"], start=2):
        table = put(table, rec("s", iid, "http://a:1", ("/x", GET)), rev)
    (instance,) = table.resolve("GET", "/x").instances
    assert instance.records == ("w1", "w2", "w3")


def test_conflict_goes_to_the_oldest_registration_for_every_client() -> None:
    old = rec("old", "1", "http://o:1", ("/things/{id:int}", GET))
    new = rec("new", "1", "http://n:1", ("/things/{tid:int}", GET))
    one = put(put(RoutingTable.empty(), old, 2), new, 3)
    entries = tuple(
        Entry(instance_key(PREFIX, r.service, r.instance_id), r.encode(), rev, rev)
        for r, rev in [(new, 3), (old, 2)]
    )
    other = RoutingTable.empty().apply(Reset(entries, 3))  # another client, from a snapshot
    assert (
        one.resolve("GET", "/things/1").service
        == other.resolve("GET", "/things/1").service
        == "old"
    )
    (conflict,) = [c for c in one.conflicts() if c.method == "GET"]
    assert (conflict.winner.service, [r.service for r in conflict.losers]) == ("old", ["new"])


def test_conflict_winner_changes_when_the_old_claimant_leaves() -> None:
    old = rec("old", "1", "http://o:1", ("/t", GET))
    new = rec("new", "1", "http://n:1", ("/t", GET))
    table = delete(put(put(RoutingTable.empty(), old, 2), new, 3), old, 4)
    assert table.resolve("GET", "/t").service == "new"
    assert table.conflicts() == []


def test_ordered_router_first_declared_route_wins_like_starlette() -> None:
    # Starlette would match /items/{name} before the later /items/special
    r = rec(
        "s", "1", "http://a:1", ("/items/{name}", GET), ("/items/special", GET), routing="ordered"
    )
    found = put(RoutingTable.empty(), r, 2).resolve("GET", "/items/special")
    assert (found.route.template.text, found.params) == ("/items/{name}", {"name": "special"})


def test_specificity_router_prefers_static_like_werkzeug() -> None:
    r = rec("s", "1", "http://a:1", ("/items/{name}", GET), ("/items/special", GET))
    assert (
        put(RoutingTable.empty(), r, 2).resolve("GET", "/items/special").route.template.text
        == "/items/special"
    )


def test_host_bound_route_needs_a_matching_host() -> None:
    route = RouteSpec("/x", GET, host="{tenant}.example.com")
    r = InstanceRecord("s", "1", "http://a:1", (route,))
    table = put(RoutingTable.empty(), r, 2)
    assert table.resolve("GET", "/x", host="acme.example.com:8000").service == "s"
    with pytest.raises(NoRouteError):
        table.resolve("GET", "/x")


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("/meshware/v1/instances/s/1", b"{not json", "not JSON"),
        ("/meshware/v1/instances/s/1", b"[]", "expected a JSON object"),
        ("/meshware/v1/instances/s/1", b'{"schema": 99}', "unsupported schema"),
        (
            "/meshware/v1/instances/s/1",
            b'{"schema": 1, "service": "s"}',
            "missing field 'instance'",
        ),
        ("/meshware/v1/instances/s", b"{}", "key is not"),
        (
            "/meshware/v1/instances/other/1",
            rec("s", "1", "http://a:1", ("/x", GET)).encode(),
            "the key says",
        ),
    ],
)
def test_bad_records_are_rejected_with_a_reason_and_the_rest_stays(
    key: str, value: bytes, problem: str
) -> None:
    table = put(RoutingTable.empty(), rec("good", "1", "http://g:1", ("/good", GET)), 2)
    table = table.apply(Upsert(Entry(key, value, 3, 3), 3))
    assert problem in table.rejected[key]
    assert table.resolve("GET", "/good").service == "good"


def test_bad_route_template_in_a_record_rejects_that_record() -> None:
    body = rec("s", "1", "http://a:1", ("/x/{id:nope}", GET)).encode()
    table = RoutingTable.empty().apply(Upsert(Entry("/meshware/v1/instances/s/1", body, 2, 2), 2))
    assert "unknown converter" in table.rejected["/meshware/v1/instances/s/1"]


def test_stale_update_is_ignored() -> None:
    r = rec("s", "1", "http://a:1", ("/x", GET))
    table = put(RoutingTable.empty(), r, 5)
    assert delete(table, r, 4).resolve("GET", "/x").service == "s"


def test_apply_leaves_the_old_table_unchanged() -> None:
    old = RoutingTable.empty()
    new = put(old, rec("s", "1", "http://a:1", ("/x", GET)), 2)
    with pytest.raises(NoRouteError):
        old.resolve("GET", "/x")
    assert new.resolve("GET", "/x").service == "s"


# --------------------------------------------------------------------------- increments == rebuild

SERVICES = ["a", "b", "c"]
TEMPLATES = ["/x", "/x/{id:int}", "/x/{name}", "/y/{p:path}", "/x/me", "/z/"]
METHODS = [("GET", "HEAD"), ("POST",), ("*",)]


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, InstanceRecord]]:
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        service = draw(st.sampled_from(SERVICES))
        iid = str(draw(st.integers(1, 3)))
        if draw(st.booleans()):
            routes = draw(
                st.lists(
                    st.tuples(st.sampled_from(TEMPLATES), st.sampled_from(METHODS)),
                    max_size=4,
                    unique_by=lambda t: t[0],
                )
            )
            state = draw(st.sampled_from(["serving", "draining"]))
            url = f"http://{service}{draw(st.integers(1, 2))}:1"
            routing = draw(st.sampled_from(["ordered", "specificity"]))
            ops.append(("put", rec(service, iid, url, *routes, state=state, routing=routing)))
        else:
            ops.append(("delete", rec(service, iid, "http://gone:1")))
    return ops


def _answers(table: RoutingTable) -> list[object]:
    out: list[object] = []
    for method in ("GET", "POST", "PUT"):
        for path in ("/x", "/x/1", "/x/me", "/x/bob", "/y/a/b", "/z/", "/z", "/none"):
            got = table.match(method, path)
            if not isinstance(got, Resolution):
                out.append(got)
            else:
                out.append(
                    (
                        got.service,
                        got.route.template.text,
                        got.params,
                        [i.url for i in got.instances],
                    )
                )
    return out


@settings(max_examples=200, deadline=None)
@given(operations())
def test_incremental_updates_equal_a_rebuild_from_the_final_records(
    ops: list[tuple[str, InstanceRecord]],
) -> None:
    table = RoutingTable.empty()
    live: dict[str, Entry] = {}
    created: dict[str, int] = {}
    for rev, (op, record) in enumerate(ops, start=2):
        key = instance_key(PREFIX, record.service, record.instance_id)
        if op == "put":
            create = created.setdefault(key, rev)
            entry = Entry(key, record.encode(), create, rev)
            live[key] = entry
            table = table.apply(Upsert(entry, rev))
        else:
            live.pop(key, None)
            created.pop(key, None)
            table = table.apply(Delete(key, rev))
    rebuilt = RoutingTable.empty().apply(Reset(tuple(live.values()), len(ops) + 1))
    assert _answers(table) == _answers(rebuilt)
    assert _conflicts(table) == _conflicts(rebuilt)
    assert len(table) == len(rebuilt)


def _conflicts(table: RoutingTable) -> list[object]:
    return [
        (c.method, c.shape, c.winner.service, [r.service for r in c.losers])
        for c in table.conflicts()
    ]


def test_random_garbage_never_breaks_the_table() -> None:
    rng = random.Random(7)
    table = put(RoutingTable.empty(), rec("good", "1", "http://g:1", ("/good", GET)), 2)
    for rev in range(3, 300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        table = table.apply(Upsert(Entry(f"/meshware/v1/instances/x/{rev}", blob, rev, rev), rev))
    assert table.resolve("GET", "/good").service == "good"
    assert len(table.rejected) == 297
