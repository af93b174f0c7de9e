"""Instance events on a service whose instances share one route set: the shortcut that keeps the
compiled matcher gives the same table as a build from scratch (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshware import InstanceRecord, Resolution, RouteSpec, RoutingTable
from meshware._core.records import instance_key
from meshware._core.table import Delete, Entry, Reset, Upsert

PREFIX = "/meshware"
GET = ("GET", "HEAD")
ROUTES = (
    RouteSpec("/shop/items/{id:int}", GET),
    RouteSpec("/shop/items/{name}", GET),
    RouteSpec("/shop/{rest:path}", ("GET",)),
    RouteSpec("/shared/{x}", GET),
)
OTHER = (RouteSpec("/shared/{x}", GET), RouteSpec("/shop/items/new", GET))
PATHS = ["/shop/items/7", "/shop/items/abc", "/shop/a/b", "/shared/z", "/shop/items/new"]


def record(iid: str, kind: str, state: str = "serving") -> InstanceRecord:
    return InstanceRecord(
        "shop",
        iid,
        f"http://10.0.0.{iid}:80",
        ROUTES,
        routing=kind,
        state=state,  # type: ignore[arg-type]
    )


def view(table: RoutingTable) -> Any:
    """Everything a caller can observe, in comparable form."""
    out: list[Any] = []
    for path in PATHS:
        got = table.match("GET", path)
        if isinstance(got, Resolution):
            out.append(
                (
                    path,
                    got.service,
                    got.route.template.text,
                    got.route.rank,
                    got.params,
                    [i.url for i in got.endpoints.all],
                    [i.url for i in got.instances],
                )
            )
        else:
            out.append((path, got))
    out.append([(r.service, r.route_id, r.rank, [i.url for i in e.all]) for r, e in table.routes()])
    out.append(
        [
            (c.kind, c.method, c.shape, c.winner.key, [r.key for r in c.losers])
            for c in table.conflicts()
        ]
    )
    out.append([(i.url, i.state) for i in table.instances()])
    return out


@pytest.mark.parametrize("kind", ["ordered", "specificity"])
@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from("12345"), st.sampled_from(["up", "drain", "gone"])), max_size=12
    )
)
def test_instance_events_give_the_table_a_fresh_build_gives(
    kind: str, events: list[tuple[str, str]]
) -> None:
    # another service with an older registration competes for /shared/{x}: ranks decide
    other = InstanceRecord("other", "o1", "http://10.1.0.1:80", OTHER)
    live: dict[str, tuple[Entry, int]] = {}
    other_entry = Entry(instance_key(PREFIX, "other", "o1"), other.encode(), 5, 5)
    table = RoutingTable.empty(PREFIX).apply(Upsert(other_entry, 5))
    rev = 10
    for iid, what in events:
        rev += 1
        key = instance_key(PREFIX, "shop", iid)
        if what == "gone":
            table = table.apply(Delete(key, rev))
            live.pop(iid, None)
            continue
        create = live[iid][1] if iid in live else (1 if iid == "1" else rev)  # "1" is oldest
        entry = Entry(
            key, record(iid, kind, "serving" if what == "up" else "draining").encode(), create, rev
        )
        table = table.apply(Upsert(entry, rev))
        live[iid] = (entry, create)
    fresh = RoutingTable.empty(PREFIX).apply(
        Reset((other_entry, *(e for e, _ in live.values())), rev)
    )
    assert view(table) == view(fresh)
