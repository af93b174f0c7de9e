"""The node router's maps resolve every request as the routing table does (property tests).

nginx's ``map`` tries its regexes in order and takes the first match; here the same entries are
tried in the same order with Python's ``re`` (the regexes are PCRE-compatible), after choosing the
map the way nginx chooses the ``location`` (exact ``= /seg``, prefix ``/seg/``, else ``/``). The
answer must be the table's: the same route, ``405`` when the path is served with other methods
only, ``404`` otherwise. The real-nginx tests (``test_node.py``) check that nginx does the same.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._core.table import Resolution
from meshware.edge.node import NodeEntry, node_entries

SEGMENTS = ["users", "me", "a", "{x}", "{x:int}", "{x:path}", "v-{x}.json", ""]
PATH_SEGMENTS = ["users", "me", "a", "42", "b", "v-1.json", ""]
METHODS = ["GET", "POST", "DELETE"]


def choose_map(entries: list[NodeEntry], path: str) -> list[NodeEntry]:
    buckets = {e.bucket for e in entries if e.bucket is not None}
    first = path[1:].partition("/")[0]
    chosen = None
    if path == "/" and "" in buckets:
        chosen = ""
    elif first in buckets and first != "":
        chosen = first  # "= /first" or "/first/..."
    return [e for e in entries if e.bucket is None or e.bucket == chosen]


def node_answer(entries: list[NodeEntry], method: str, path: str) -> tuple[str, str] | int:
    subject = f"{method} {path}"
    for e in choose_map(entries, path):
        if re.fullmatch(f"{e.methods} {e.path}", subject, re.S):
            if e.route is None:
                return e.status
            return (e.route.service, e.route.route_id)
    return 404


def table_answer(table: RoutingTable, method: str, path: str) -> tuple[str, str] | int:
    found = table.match(method, path)
    if isinstance(found, Resolution):
        return (found.route.service, found.route.route_id)
    return 405 if found else 404


template = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(
    lambda segs: "/" + "/".join(segs)
)
route = st.builds(
    lambda t, ms, wildcard: RouteSpec(t, ("*",), kind="mount") if wildcard else RouteSpec(t, ms),
    template,
    st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True).map(
        lambda ms: tuple(sorted(ms))
    ),
    st.integers(0, 5).map(lambda n: n == 0),  # now and then a mounted app: any method
)


def build(services: list[tuple[list[RouteSpec], bool]]) -> RoutingTable | None:
    records = []
    for k, (specs, ordered) in enumerate(services):
        unique: dict[str, RouteSpec] = {}
        for spec in specs:
            if "{x:path}" in spec.template and not spec.template.endswith("{x:path}"):
                continue  # a path parameter ends a template here
            if spec.template.count("{x") > 1:
                continue  # one parameter name per template
            unique.setdefault(spec.template + ",".join(spec.methods), spec)
        if unique:
            records.append(
                InstanceRecord(
                    f"s{k}",
                    f"i{k}",
                    f"http://127.0.0.1:{9000 + k}",
                    tuple(unique.values()),
                    routing="ordered" if ordered else "specificity",
                )
            )
    if not records:
        return None
    return RoutingTable.from_records(records)


path = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=4).map(
    lambda segs: "/" + "/".join(segs)
)


@pytest.mark.xfail(
    reason="issue 10 changed the table's semantics (each app's own dispatch: Starlette strips "
    "every trailing slash, werkzeug's path is never empty, merge_slashes, weights); the node "
    "maps still render the old trie order: see /work/coord/routing-api.md",
    strict=False,
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    services=st.lists(
        st.tuples(st.lists(route, min_size=1, max_size=6), st.booleans()), min_size=1, max_size=3
    ),
    requests=st.lists(st.tuples(st.sampled_from(METHODS), path), min_size=1, max_size=12),
)
def test_node_maps_resolve_like_the_table(
    services: list[tuple[list[RouteSpec], bool]], requests: list[tuple[str, str]]
) -> None:
    table = build(services)
    if table is None:
        return
    entries = node_entries(table)
    for method, p in requests:
        if "//" in p:
            continue  # refused with 400 by both edges before any map
        assert node_answer(entries, method, p) == table_answer(table, method, p), (method, p)


def test_private_routes_and_method_fall_through_are_rendered() -> None:
    table = RoutingTable.from_records(
        [
            InstanceRecord(
                "users", "u", "http://127.0.0.1:9001", (RouteSpec("/users/me", ("GET",)),)
            ),
            InstanceRecord(
                "admin", "a", "http://127.0.0.1:9002", (RouteSpec("/users/{id}", ("POST",)),)
            ),
        ]
    )
    entries = node_entries(table)
    assert node_answer(entries, "GET", "/users/me") == ("users", "/users/me GET")
    assert node_answer(entries, "POST", "/users/me") == ("admin", "/users/{id} POST")
    assert node_answer(entries, "DELETE", "/users/me") == 405
    assert node_answer(entries, "GET", "/nope") == 404


def test_a_shadowed_path_is_not_forwarded_to_a_route_below_it() -> None:
    from meshware._core.records import Shadow

    static = Shadow(RouteSpec("/users/static", ("GET",)), before=0, reason="static")
    table = RoutingTable.from_records(
        [
            InstanceRecord(
                "users",
                "u",
                "http://127.0.0.1:9001",
                (RouteSpec("/users/{id}", ("GET",)),),
                shadows=(static,),
            )
        ]
    )
    entries = node_entries(table)
    assert table_answer(table, "GET", "/users/static") == 404
    assert node_answer(entries, "GET", "/users/static") == 404
    assert node_answer(entries, "GET", "/users/7") == ("users", table.routes()[0][0].route_id)
