"""Operator controls beside the records (weight overrides, live edges): pure state, the view
that keeps it, the nginx watcher that re-renders on it, and edges registering under a lease."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshware import InstanceRecord, MeshView, RouteSpec, RoutingTable
from meshware._core.limits import RouteLimits
from meshware._core.records import instance_key
from meshware._core.table import Delete, Entry, Instance, Reset, Upsert
from meshware._core.traffic import TrafficState, edge_key, weight_override_key
from meshware.edge.nginx import NginxOptions, Watcher
from meshware.edge.presence import EdgePresence
from meshware.registry import MemoryRegistry

P = "/meshware"


def inst(
    records: tuple[str, ...] = ("r1",), version: str | None = None, weight: int = 100
) -> Instance:
    return Instance("users", "http://a:1", "serving", records, version=version, weight=weight)


def put(state: TrafficState, key: str, value: object) -> TrafficState:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    new, rest = state.split(Upsert(Entry(key, raw), 1))
    assert rest is None
    return new


def test_no_override_keeps_the_fast_path() -> None:
    assert TrafficState.empty(P).weight_of is None


def test_the_most_specific_override_wins() -> None:
    s = put(TrafficState.empty(P), weight_override_key(P, "users"), {"weight": 50})
    s = put(s, weight_override_key(P, "users", version="v2"), {"weight": 5})
    s = put(s, weight_override_key(P, "users", instance="r2"), {"weight": 0})
    assert s.weight_of is not None
    assert s.weight_of(inst()) == 50
    assert s.weight_of(inst(version="v2")) == 5
    assert s.weight_of(inst(records=("r1", "r2"), version="v2")) == 0  # any worker's id
    assert s.weight_of(Instance("orders", "http://b:1", "serving", ("x",), weight=7)) == 7
    s, _ = s.split(Delete(weight_override_key(P, "users"), 2))
    assert s.weight_of is not None
    assert s.weight_of(inst()) == 100


def test_records_and_unknown_keys_go_on_to_the_table() -> None:
    record = Upsert(Entry(instance_key(P, "users", "i1"), b"{}"), 1)
    state, rest = TrafficState.empty(P).split(record)
    assert rest is record
    other = Upsert(Entry(P + "/v1/routesets/users/abc", b"{}"), 2)
    assert state.split(other)[1] is other


def test_a_snapshot_is_split_between_the_controls_and_the_table() -> None:
    entries = (
        Entry(instance_key(P, "users", "i1"), b"{}"),
        Entry(weight_override_key(P, "users"), b'{"weight": 1}'),
        Entry(edge_key(P, "e1"), b"{}"),
        Entry(edge_key(P, "e2"), b"{}"),
    )
    state, rest = TrafficState.empty(P).split(Reset(entries, 9))
    assert isinstance(rest, Reset)
    assert [e.key for e in rest.entries] == [instance_key(P, "users", "i1")]
    assert state.edges == 2
    assert state.overrides == {("users", "service", ""): 1}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.binary(max_size=200)
    | st.builds(lambda v: json.dumps(v).encode(), JSON | st.fixed_dictionaries({"weight": JSON}))
    | st.just(b"[" * 10_000)
)
def test_a_bad_override_is_listed_never_raised(value: bytes) -> None:
    key = weight_override_key(P, "users")
    state = put(TrafficState.empty(P), key, value)
    assert (key in state.rejected) == (state.weight_of is None)


def test_override_keys_must_name_a_scope() -> None:
    state = put(TrafficState.empty(P), P + "/v1/overrides/weights/users/zone/a", {"weight": 1})
    assert state.weight_of is None
    assert "key is not" in next(iter(state.rejected.values()))


def test_the_view_keeps_controls_out_of_the_table() -> None:
    registry = MemoryRegistry()
    rec = InstanceRecord("users", "i1", "http://users:1", (RouteSpec("/x", ("GET",)),))
    registry.put(instance_key(P, "users", "i1"), rec.encode())
    registry.put(edge_key(P, "e1"), b"{}")
    with MeshView(registry, P) as view:
        assert view.traffic.edges == 1
        registry.put(weight_override_key(P, "users", instance="i1"), b'{"weight": 0}')
        registry.put(edge_key(P, "e2"), b"{}")
        deadline = time.monotonic() + 5
        while view.traffic.edges != 2 and time.monotonic() < deadline:
            view.wait_for(lambda t: True, timeout=0.05)
        assert view.traffic.edges == 2
        weight_of = view.traffic.weight_of
        assert weight_of is not None
        assert weight_of(view.table.instances("users")[0]) == 0
        assert view.table.rejected == {}


def test_edges_register_under_a_lease_and_leave_when_they_stop() -> None:
    registry = MemoryRegistry()
    with MeshView(registry, P) as view:
        a = EdgePresence(registry, P, "nginx").start()
        b = EdgePresence(registry, P, "proxy").start()
        deadline = time.monotonic() + 5
        while view.traffic.edges != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert view.traffic.edges == 2
        b.stop()
        while view.traffic.edges != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert view.traffic.edge_ids == frozenset({a.key})
        a.stop()


def test_the_nginx_watcher_re_renders_when_the_number_of_edges_changes(tmp_path: Path) -> None:
    spec = RouteSpec("/login", ("POST",), public=True, limits=RouteLimits(rate=20, burst=10))
    table = RoutingTable.from_records(
        [InstanceRecord("users", "i1", "http://127.0.0.1:8001", (spec,))]
    )
    state = [TrafficState.empty(P)]
    reloads: list[str] = []
    out = tmp_path / "nginx.conf"
    watcher = Watcher(
        out, NginxOptions(), lambda: reloads.append(out.read_text()), traffic=lambda: state[0]
    )
    assert watcher.apply(table)
    assert "rate=20r/s" in reloads[-1]
    assert "burst=10" in reloads[-1]
    state[0], _ = state[0].split(
        Reset((Entry(edge_key(P, "a"), b"{}"), Entry(edge_key(P, "b"), b"{}")), 2)
    )
    assert watcher.apply(table)
    assert "rate=10r/s" in reloads[-1]
    assert "burst=5" in reloads[-1]
    assert not watcher.apply(table)  # nothing changed: no reload
