"""Growth benchmark (issue 13): the routing table from 100 to 50,000 routes, and instance events.

Run: ``python bench/bench_scale.py`` (``--sizes 100,1000`` for a quick look, ``--rounds N``).
Prints two tables in one run:

(a) growth: a synthetic mesh of services of 50 routes, 3 instances each, half ordered
    (Starlette-like), half specificity (Flask-like). For each size: memory held by the table
    (tracemalloc, a second build so module caches are not counted as the first one's), bytes
    per route, GC-tracked objects added, the time of one full ``gc.collect()`` with the table
    alive, cold build time (decode the stored bytes + build, as ``connect()`` does after its
    fetch), and resolve latency (a hot set of 50 routes, and uniform over every route), side by
    side with werkzeug's ``Map`` on the same rules (its build, memory, objects, match).
(b) events: one instance joining or leaving a service of 50 / 200 / 1,000 routes (the same
    route set as its 3 siblings) in a 10,000-route mesh, for both router kinds.

Medians of interleaved rounds; the machine is shared and noisy. It asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._core.records import _SHARED_SPECS, instance_key
from meshware._core.routesets import Assembler, chunk_key, encode_record, encode_routeset
from meshware._core.table import Delete, Entry, Reset, Upsert
from meshware._core.templates import parse_template
from meshware._gc import freeze_after_build

PREFIX = "/meshware"
SHAPES = [
    ("/{svc}/r{j}", "/{svc}/r{j}"),
    ("/{svc}/r{j}/{{id:int}}", "/{svc}/r{j}/{n}"),
    ("/{svc}/r{j}/{{id:int}}/items/{{name}}", "/{svc}/r{j}/{n}/items/x{n}"),
    ("/{svc}/r{j}/by-name/{{name}}", "/{svc}/r{j}/by-name/n{n}"),
    ("/{svc}/r{j}/files/{{rest:path}}", "/{svc}/r{j}/files/a/b/c{n}.txt"),
]


def service_routes(svc: str, n: int, rng: random.Random) -> tuple[list[RouteSpec], list[str]]:
    routes, paths = [], []
    for k in range(n):
        template, sample = SHAPES[k % len(SHAPES)]
        j = k // len(SHAPES)
        routes.append(RouteSpec(template.format(svc=svc, j=j), ("GET", "HEAD")))
        paths.append(sample.format(svc=svc, j=j, n=rng.randrange(1, 10_000)))
    return routes, paths


def build_mesh(
    n_routes: int, per_service: int = 50, instances: int = 3
) -> tuple[list[InstanceRecord], list[str], list[str]]:
    """Records (half ordered, half specificity), sample paths, and the rules for werkzeug."""
    records: list[InstanceRecord] = []
    paths: list[str] = []
    rules: list[str] = []
    rng = random.Random(1)
    for s in range(max(1, n_routes // per_service)):
        svc = f"svc{s}"
        routes, sample = service_routes(svc, per_service, rng)
        paths += sample
        rules += [r.template for r in routes]
        for i in range(instances):
            records.append(
                InstanceRecord(
                    svc,
                    f"i{i}",
                    f"http://10.{s // 62500}.{s // 250 % 250}.{s % 250}:{8000 + i}",
                    tuple(routes),
                    routing="ordered" if s % 2 else "specificity",
                )
            )
    rng.shuffle(paths)
    return records, paths, rules


def entries_of(records: list[InstanceRecord], schema: int = 1) -> tuple[Entry, ...]:
    """What etcd holds for ``records``: inline records (schema 1), or records naming route sets
    stored once per service and digest (schema 2)."""
    if schema == 1:
        return tuple(
            Entry(instance_key(PREFIX, r.service, r.instance_id), r.encode(), i + 1, i + 1)
            for i, r in enumerate(records)
        )
    out: list[Entry] = []
    written: set[str] = set()
    for i, r in enumerate(records):
        rs = encode_routeset(r)
        if (r.service, rs.digest) not in written:
            written.add((r.service, rs.digest))  # type: ignore[arg-type]
            for k, chunk in enumerate(rs.chunks):
                key = chunk_key(PREFIX, r.service, rs.digest, k)
                out.append(Entry(key, chunk, i + 1, i + 1))
        out.append(
            Entry(
                instance_key(PREFIX, r.service, r.instance_id), encode_record(r, rs), i + 1, i + 1
            )
        )
    return tuple(out)


def cold_build(entries: tuple[Entry, ...]) -> RoutingTable:
    """What a view does with its first listing: the assembler, then the table."""
    table = RoutingTable.empty(PREFIX)
    for change in Assembler(PREFIX).feed(Reset(entries, len(entries))):
        table = table.apply(change)
    return table


def to_werkzeug(t: str) -> str:
    return (
        t.replace("{id:int}", "<int:id>")
        .replace("{name}", "<name>")
        .replace("{rest:path}", "<path:rest>")
    )


def werkzeug_map(rules: list[str]) -> Any:
    from werkzeug.routing import Map, Rule

    return Map([Rule(to_werkzeug(t), endpoint=t) for t in rules])


def per_call_us(func: Callable[[str], object], paths: list[str]) -> float:
    start = time.perf_counter_ns()
    for p in paths:
        func(p)
    return (time.perf_counter_ns() - start) / len(paths) / 1000


def clear_caches() -> None:
    _SHARED_SPECS.clear()
    parse_template.cache_clear()
    from meshware._core import matcher

    matcher.template_parts.cache_clear()
    matcher.precedence_key.cache_clear()


def held(build: Callable[[], Any]) -> tuple[Any, int, int]:
    """Build once under tracemalloc: (object, bytes held, GC-tracked objects added)."""
    clear_caches()
    gc.collect()
    before = len(gc.get_objects())
    tracemalloc.start()
    obj = build()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    return obj, size, len(gc.get_objects()) - before


def full_collect_ms(rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def growth_row(n: int, rounds: int) -> dict[str, Any]:
    records, paths, rules = build_mesh(n)
    entries = entries_of(records)
    entries2 = entries_of(records, 2)
    n_routes = len(rules)
    builds, builds2 = [], []
    for _ in range(3 if n <= 10_000 else 1):
        for es, out in ((entries, builds), (entries2, builds2)):
            clear_caches()
            t0 = time.perf_counter()
            cold_build(es)
            out.append(time.perf_counter() - t0)
    wz_builds = []
    for _ in range(3 if n <= 10_000 else 1):
        t0 = time.perf_counter()
        werkzeug_map(rules).bind("localhost")
        wz_builds.append(time.perf_counter() - t0)
    gc.collect()
    base_gc = full_collect_ms()
    table, size, objs = held(lambda: RoutingTable.empty(PREFIX).apply(Reset(entries, len(entries))))
    gc_ms = full_collect_ms()
    frozen = freeze_after_build(len(table), env={})  # as the view does after a full listing
    gc_frozen_ms = full_collect_ms() if frozen else float("nan")  # nan: too small to freeze
    gc.unfreeze()
    rng = random.Random(3)
    hot_ids = rng.sample(range(len(paths)), 50)
    hot = [paths[rng.choice(hot_ids)] for _ in range(2000)]
    uniform = paths[:2000] if len(paths) >= 2000 else (paths * (2000 // len(paths) + 1))[:2000]
    for p in hot + uniform:
        table.resolve("GET", p)
    del table
    wmap, wsize, wobjs = held(lambda: werkzeug_map(rules))
    wz_gc_ms = full_collect_ms()
    adapter = wmap.bind("localhost")
    table = RoutingTable.empty(PREFIX).apply(Reset(entries, len(entries)))

    def wz(p: str) -> object:
        return adapter.match(p, "GET")

    def ours(p: str) -> object:
        return table.resolve("GET", p)

    res: dict[str, list[float]] = {"hot": [], "uniform": [], "wz_hot": [], "wz_uniform": []}
    for _ in range(rounds):  # interleaved
        res["hot"].append(per_call_us(ours, hot))
        res["wz_hot"].append(per_call_us(wz, hot))
        res["uniform"].append(per_call_us(ours, uniform))
        res["wz_uniform"].append(per_call_us(wz, uniform))
    return {
        "routes": n_routes,
        "mib": size / 2**20,
        "bpr": size / n_routes,
        "objs": objs,
        "gc_ms": gc_ms,
        "gc_frozen_ms": gc_frozen_ms,
        "base_gc_ms": base_gc,
        "build_s": statistics.median(builds),
        "build2_s": statistics.median(builds2),
        "hot": statistics.median(res["hot"]),
        "uniform": statistics.median(res["uniform"]),
        "wz_mib": wsize / 2**20,
        "wz_objs": wobjs,
        "wz_gc_ms": wz_gc_ms,
        "wz_build_s": statistics.median(wz_builds),
        "wz_hot": statistics.median(res["wz_hot"]),
        "wz_uniform": statistics.median(res["wz_uniform"]),
    }


def event_costs(per_service: int, kind: str, rounds: int, schema: int) -> tuple[float, float]:
    """Median ms of one instance joining, then leaving, a service of ``per_service`` routes
    (3 siblings, same route set) in a 10,000-route mesh of 50-route services: the registry
    event through the assembler and the table, as a view applies it."""
    records, _, _ = build_mesh(10_000)
    rng = random.Random(5)
    routes, _ = service_routes("big", per_service, rng)
    for i in range(3):
        records.append(
            InstanceRecord(
                "big", f"i{i}", f"http://10.99.0.1:{8000 + i}", tuple(routes), routing=kind
            )  # type: ignore[arg-type]
        )
    entries = entries_of(records, schema)
    assembler = Assembler(PREFIX)
    table = RoutingTable.empty(PREFIX)
    for change in assembler.feed(Reset(entries, len(entries))):
        table = table.apply(change)
    joining = InstanceRecord(
        "big",
        "new",
        "http://10.99.0.2:9000",
        tuple(routes),
        routing=kind,  # type: ignore[arg-type]
    )
    key = instance_key(PREFIX, "big", "new")
    value = joining.encode() if schema == 1 else encode_record(joining, encode_routeset(joining))
    joins, leaves = [], []
    rev = 10_000_000
    for _ in range(rounds):
        rev += 1
        t0 = time.perf_counter()
        for change in assembler.feed(Upsert(Entry(key, value, rev, rev), rev)):
            table = table.apply(change)
        joins.append(time.perf_counter() - t0)
        assert len(table.instances("big")) == 4
        rev += 1
        t0 = time.perf_counter()
        for change in assembler.feed(Delete(key, rev)):
            table = table.apply(change)
        leaves.append(time.perf_counter() - t0)
        assert len(table.instances("big")) == 3
    return statistics.median(joins) * 1000, statistics.median(leaves) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000,50000")
    parser.add_argument("--events", default="50,200,1000")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print()
    print("(a) growth: 50 routes/service, 3 instances/service, half ordered, half specificity")
    print("    meshware table | werkzeug Map on the same rules")
    header = (
        "| routes | MiB | B/route | GC objects | gc.collect() | gc.collect(), frozen | cold build, schema 1 | resolve hot | "
        "resolve uniform | cold build, schema 2 | wz MiB | wz GC objects | wz gc.collect() | wz build | wz hot | wz uniform |"
    )
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    for n in (int(x) for x in args.sizes.split(",") if x):
        r = growth_row(n, args.rounds)
        print(
            f"| {r['routes']:,} | {r['mib']:.1f} | {r['bpr']:,.0f} | {r['objs'] / 1000:,.1f} k | "
            f"{r['gc_ms']:.1f} ms | {r['gc_frozen_ms']:.1f} ms | {r['build_s']:.2f} s | {r['hot']:.2f} µs | {r['uniform']:.2f} µs | {r['build2_s']:.2f} s | "
            f"{r['wz_mib']:.1f} | {r['wz_objs'] / 1000:,.1f} k | {r['wz_gc_ms']:.1f} ms | "
            f"{r['wz_build_s']:.2f} s | {r['wz_hot']:.2f} µs | {r['wz_uniform']:.2f} µs |",
            flush=True,
        )
    print()
    print("(b) one instance joining / leaving a service (same route set as its 3 siblings),")
    print("    in a 10,000-route mesh; median ms")
    sizes = [int(x) for x in args.events.split(",")]
    print("| router | " + " | ".join(f"{s:,} routes join / leave" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for schema in (2, 1):
        for kind, label in (("ordered", "ordered"), ("specificity", "specificity")):
            cells = []
            for s in sizes:
                j, lv = event_costs(s, kind, args.rounds, schema)
                cells.append(f"{j:.2f} / {lv:.2f}")
            print(f"| {label}, schema {schema} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
