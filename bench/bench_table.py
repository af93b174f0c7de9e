"""Routing-table benchmark: resolve latency, watch-event cost and memory at 10,000 routes.

Run: ``python bench/bench_table.py`` (``--routes N`` to change the size). Prints figures, and
ratios against werkzeug's matcher (the state-machine router Flask uses) measured in the same run
on the same routes and paths. Variants are interleaved, batches repeated, medians reported.
It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._core.records import _SHARED_SPECS, instance_key
from meshware._core.table import Delete, Entry, Upsert
from meshware._core.templates import parse_template

PREFIX = "/meshware"
SHAPES = [
    ("/{svc}/r{j}", "/{svc}/r{j}"),
    ("/{svc}/r{j}/{{id:int}}", "/{svc}/r{j}/{n}"),
    ("/{svc}/r{j}/{{id:int}}/items/{{name}}", "/{svc}/r{j}/{n}/items/x{n}"),
    ("/{svc}/r{j}/by-name/{{name}}", "/{svc}/r{j}/by-name/n{n}"),
    ("/{svc}/r{j}/files/{{rest:path}}", "/{svc}/r{j}/files/a/b/c{n}.txt"),
]


def build_records(
    n_routes: int, per_service: int = 100
) -> tuple[list[InstanceRecord], list[str], list[str]]:
    """Records for ``n_routes`` routes in services of ``per_service`` routes; sample paths."""
    records = []
    paths: list[str] = []
    werkzeug_rules: list[str] = []
    services = max(1, n_routes // per_service)
    rng = random.Random(1)
    for s in range(services):
        svc = f"svc{s}"
        routes = []
        for k in range(per_service):
            template, sample = SHAPES[k % len(SHAPES)]
            j = k // len(SHAPES)
            routes.append(RouteSpec(template.format(svc=svc, j=j), ("GET", "HEAD")))
            paths.append(sample.format(svc=svc, j=j, n=rng.randrange(1, 10_000)))
        for i in range(3):
            records.append(
                InstanceRecord(
                    svc, f"i{i}", f"http://10.0.{s // 250}.{s % 250}:{8000 + i}", tuple(routes)
                )
            )
        werkzeug_rules.extend(r.template for r in routes)
    rng.shuffle(paths)
    return records, paths, werkzeug_rules


def per_call_us(func: Callable[[str], object], paths: list[str]) -> float:
    start = time.perf_counter_ns()
    for p in paths:
        func(p)
    return (time.perf_counter_ns() - start) / len(paths) / 1000


def werkzeug_matcher(templates: list[str]) -> Callable[[str], object] | None:
    try:
        from werkzeug.routing import Map, Rule
    except ImportError:
        return None

    def to_werkzeug(t: str) -> str:
        return (
            t.replace("{id:int}", "<int:id>")
            .replace("{name}", "<name>")
            .replace("{rest:path}", "<path:rest>")
        )

    adapter = Map([Rule(to_werkzeug(t), endpoint=t) for t in templates]).bind("localhost")
    return lambda p: adapter.match(p, "GET")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    records, paths, rules = build_records(args.routes)
    t0 = time.perf_counter()
    table = RoutingTable.from_records(records, prefix=PREFIX)
    build_s = time.perf_counter() - t0
    del table
    _SHARED_SPECS.clear()  # the module caches would hold the first build's objects:
    parse_template.cache_clear()  # empty them so the second build is measured in full
    gc.collect()
    tracemalloc.start()  # measured on a second build: tracemalloc slows allocation down
    table = RoutingTable.from_records(records, prefix=PREFIX)
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_routes = sum(len(r.routes) for r in records) // 3
    print(
        f"table: {n_routes} routes, {len(table.services)} services, {len(records)} instance records"
    )
    print(
        f"  full build {build_s * 1000:.0f} ms, memory {size / 2**20:.1f} MiB ({size / n_routes:.0f} B/route)"
    )

    # Two working sets: a caller's hot set (the few dozen routes one service calls, with varying
    # ids: cache-resident), and a uniform draw over every route of the table (the cold worst
    # case: each trie node is a cache miss, so this measures memory latency as much as code).
    rng = random.Random(3)
    hot_templates = rng.sample(range(len(paths)), 50)
    hot = [paths[rng.choice(hot_templates)] for _ in range(2000)]
    cold = paths[:2000]
    for p in hot + cold:  # every sample path resolves
        table.resolve("GET", p)
    wz = werkzeug_matcher(rules)
    for label, sample in (("hot set (50 routes)", hot), ("uniform over all routes", cold)):
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.rounds):  # interleaved
            ours.append(per_call_us(lambda p: table.resolve("GET", p), sample))
            if wz is not None:
                theirs.append(per_call_us(wz, sample))
        med = statistics.median(ours)
        line = f"resolve, {label}: median {med:.2f} us/call ({args.rounds} interleaved rounds of {len(sample)})"
        if theirs:
            wmed = statistics.median(theirs)
            line += f"; werkzeug {wmed:.2f} us; ratio meshware/werkzeug {med / wmed:.2f}"
        print(line)

    # Watch events on the full table: an instance joins, a new version adds a route, one leaves.
    joins, adds, leaves = [], [], []
    rev = 10_000_000
    rng = random.Random(2)
    for _ in range(args.rounds * 4):
        victim = records[rng.randrange(len(records))]
        rev += 1
        joined = InstanceRecord(victim.service, "new", "http://10.9.9.9:1", victim.routes)
        key = instance_key(PREFIX, victim.service, "new")
        t0 = time.perf_counter()
        t1 = table.apply(Upsert(Entry(key, joined.encode(), rev, rev), rev))
        joins.append(time.perf_counter() - t0)
        rev += 1
        v2 = InstanceRecord(
            victim.service,
            "new",
            "http://10.9.9.9:1",
            (*victim.routes, RouteSpec(f"/{victim.service}/avatar/{{id:int}}", ("GET",))),
        )
        t0 = time.perf_counter()
        t2 = t1.apply(Upsert(Entry(key, v2.encode(), rev - 1, rev), rev))
        adds.append(time.perf_counter() - t0)
        rev += 1
        t0 = time.perf_counter()
        t2.apply(Delete(key, rev))
        leaves.append(time.perf_counter() - t0)
    for name, xs in (
        ("instance joins", joins),
        ("new version adds a route", adds),
        ("instance leaves", leaves),
    ):
        print(
            f"watch event applied ({name}): median {statistics.median(xs) * 1000:.2f} ms, max {max(xs) * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
