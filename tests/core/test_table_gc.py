"""A routing table holds no reference cycle: reference counting alone frees it.

This is what makes ``gc.freeze()`` after a build safe (meshware/_gc.py): a frozen table that is
replaced must still be freed, though the cyclic collector no longer looks at it.
"""

from __future__ import annotations

import gc

from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._gc import FREEZE_MIN_ROUTES, freeze_after_build


def records() -> list[InstanceRecord]:
    out = []
    for s in range(6):
        routes = tuple(
            RouteSpec(t, ("GET",))
            for j in range(20)
            for t in (f"/s{s}/r{j}", f"/s{s}/r{j}/{{id:int}}", f"/s{s}/r{j}/f/{{rest:path}}")
        )
        for i in range(3):
            out.append(
                InstanceRecord(
                    f"s{s}",
                    f"i{i}",
                    f"http://10.0.{s}.{i}:80",
                    routes,
                    routing="ordered" if s % 2 else "specificity",
                )
            )
    return out


def test_a_dropped_table_is_freed_without_the_cyclic_collector() -> None:
    recs = records()
    RoutingTable.from_records(recs)  # warm the module caches (templates, parts)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        table = RoutingTable.from_records(recs)
        table.resolve("GET", "/s1/r3/7")
        built = len(gc.get_objects())
        del table
        after = len(gc.get_objects())
        unreachable = gc.collect()  # what refcounting left behind: cycles
    finally:
        gc.enable()
    assert built - before > 1_000  # the table was big enough to tell
    assert after - before < 50
    assert unreachable == 0


def test_freeze_only_big_tables_and_only_when_enabled() -> None:
    try:
        assert not freeze_after_build(FREEZE_MIN_ROUTES - 1, env={})
        assert not freeze_after_build(FREEZE_MIN_ROUTES, env={"MESHWARE_GC_FREEZE": "0"})
        assert freeze_after_build(FREEZE_MIN_ROUTES, env={})
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
