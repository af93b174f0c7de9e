"""Traffic-control benchmark: the cost of a member's limit check, and weighted share accuracy.

Run: ``python bench/bench_limits.py`` (``--rounds``, ``--n``). It asserts nothing: it prints.

1. **Limit check** (per request, in process): :meth:`meshware._enforce.Enforcer.admit` for a
   request to a rate-limited route (route match + token bucket + lock), to an unlimited route of
   the same app, and through the pure ASGI middleware, each against a baseline measured in the
   same round (``RoutingTable.match`` of the same path alone; the bare ASGI app). Variants are
   interleaved round by round; medians of per-round figures.
2. **Weighted shares**: the real engine (``Engine`` / ``Call.pick``) in a simulated closed loop
   (fake clock, exponential service times) for weights 100/300 at 1-64 requests in flight, 4,000
   calls each, several seeds; then 4,000 concurrent calls through the real async client on the
   fake mesh. The target is 25 % ± 3 points for the weight-100 instance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from meshware import ClientPolicy, InstanceRecord, RouteSpec, RoutingTable
from meshware._core.limits import RouteLimits
from meshware._enforce import Enforcer, LimitMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _routes() -> tuple[RouteSpec, ...]:
    specs = [RouteSpec(f"/r{j}/{{id:int}}", ("GET",)) for j in range(50)]
    specs.append(RouteSpec("/login", ("POST",), limits=RouteLimits(rate=1_000_000, burst=10)))
    specs.append(RouteSpec("/users/{id:int}", ("GET",)))
    return tuple(specs)


def per_call_us(fn: Callable[[], object], n: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        gc.enable()


def limit_check(rounds: int, n: int) -> None:
    specs = _routes()
    table = RoutingTable.from_records([InstanceRecord("svc", "self", "http://127.0.0.1:1", specs)])
    enforcer = Enforcer("svc", lambda: specs, instances=lambda: 2)
    callers = [f"caller-{i}" for i in range(100)]
    it = iter(range(1 << 62))

    async def bare(scope: object, receive: object, send: object) -> None:
        return None

    middleware = LimitMiddleware(bare, enforcer)

    async def send(message: object) -> None:  # a refusal (the caller over its rate) is sent here
        return None

    scope_limited = {
        "type": "http",
        "method": "POST",
        "path": "/login",
        "raw_path": b"/login",
        "headers": [(b"host", b"x"), (b"x-meshware-caller", b"caller-7")],
        "client": ("10.0.0.1", 5000),
    }
    loop = asyncio.new_event_loop()

    def run_asgi(app: Callable[..., object]) -> Callable[[], object]:
        coro_fn = app

        def one() -> object:
            c = coro_fn(scope_limited, None, send)
            with contextlib.suppress(StopIteration):
                c.send(None)  # type: ignore[attr-defined]
            return None

        return one

    variants: dict[str, Callable[[], object]] = {
        "baseline: table.match /login": lambda: table.match("POST", "/login"),
        "admit, limited route": lambda: enforcer.admit(
            "POST", "/login", callers[next(it) % 100], "10.0.0.1"
        ),
        "baseline: table.match /users/7": lambda: table.match("GET", "/users/7"),
        "admit, unlimited route": lambda: enforcer.admit("GET", "/users/7", "caller-1", None),
        "baseline: bare ASGI app": run_asgi(bare),
        "LimitMiddleware, limited route": run_asgi(middleware),
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            results[name].append(per_call_us(fn, n))
    loop.close()
    print(f"1. limit check, us per request ({rounds} interleaved rounds of {n}; medians)")
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in med.items():
        print(f"   {k:36s} {v:6.2f}")
    print(
        f"   => a limit check costs {med['admit, limited route']:.2f} us (a route match alone: "
        f"{med['baseline: table.match /login']:.2f} us); the ASGI middleware adds "
        f"{med['LimitMiddleware, limited route'] - med['baseline: bare ASGI app']:.2f} us per request"
    )


def weighted_shares(calls: int) -> None:
    from client.test_weights_zones import closed_loop, instances  # tests/client

    from meshware._core.call import Engine

    insts = instances((100, None), (300, None))
    print(f"2. weighted shares: weight-100 instance's share of {calls} calls (target 25 % +- 3)")
    for in_flight in (1, 4, 16, 64):
        shares = []
        for seed in range(5):
            engine = Engine(ClientPolicy(), rng=random.Random(seed))
            counts = closed_loop(engine, insts, in_flight=in_flight, calls=calls, seed=seed + 100)
            shares.append(counts[insts[0].url] / calls * 100)
        print(
            f"   engine, {in_flight:2d} in flight: "
            + " ".join(f"{x:.1f}" for x in shares)
            + f"  (worst {max(abs(x - 25) for x in shares):.1f} points off)"
        )

    from testing.apps import make_users  # tests/testing/apps.py

    from meshware.testing import FakeMesh, MeshClock

    async def spread(mesh: FakeMesh) -> Counter[str]:
        async with mesh.async_client() as client:
            queue = iter(range(calls))

            async def worker() -> None:
                for _ in queue:
                    await client.get("/users/1")

            await asyncio.gather(*(worker() for _ in range(16)))
        return Counter(c.instance for c in mesh.calls)

    for seed in range(3):
        with FakeMesh(clock=MeshClock(), seed=seed) as mesh:
            light = mesh.add("users", make_users(), weight=100)[0]
            mesh.add("users", make_users(), weight=300)
            counts = asyncio.run(spread(mesh))
        print(
            f"   fake mesh, async client, 16 in flight, seed {seed}: {counts[light] / calls * 100:.1f} %"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    limit_check(args.rounds, args.n)
    weighted_shares(args.calls)


if __name__ == "__main__":
    main()
