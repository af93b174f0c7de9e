"""Weights and zones through the real mesh client on the fake mesh (concurrent async callers)."""

from __future__ import annotations

import asyncio
from collections import Counter

import meshware
from meshware.testing import FakeMesh, MeshClock

from .apps import make_users


async def _spread(mesh: FakeMesh, calls: int, in_flight: int) -> Counter[str]:
    async with mesh.async_client() as client:
        queue = iter(range(calls))

        async def worker() -> None:
            for _ in queue:
                assert (await client.get("/users/1")).status_code == 200

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return Counter(c.instance for c in mesh.calls)


def test_weights_100_and_300_share_4000_concurrent_calls_a_quarter_and_three_quarters() -> None:
    with FakeMesh(clock=MeshClock(), seed=3) as mesh:
        light = mesh.add("users", make_users(), weight=100)[0]
        mesh.add("users", make_users(), weight=300)
        counts = asyncio.run(_spread(mesh, 4000, 16))
    assert abs(counts[light] / 4000 - 0.25) <= 0.03, counts


def test_a_caller_in_zone_a_stays_in_zone_a_and_loses_nothing_when_it_dies() -> None:
    policy = meshware.ClientPolicy(zone="a")
    with FakeMesh(clock=MeshClock(), seed=4, policy=policy) as mesh:
        local = set(mesh.add("users", make_users(), replicas=2, zone="a"))
        mesh.add("users", make_users(), replicas=2, zone="b")
        counts = asyncio.run(_spread(mesh, 1000, 8))
        assert sum(n for url, n in counts.items() if url in local) >= 0.95 * 1000
        mesh.calls.clear()
        mesh.kill("users", replica=0)
        mesh.kill("users", replica=1)
        with mesh.client() as client:
            for _ in range(300):
                assert client.get("/users/1").status_code == 200  # never an error
        ok = [c for c in mesh.calls if c.status == 200]
        assert len(ok) == 300
        assert all(c.instance not in local for c in ok)
        assert sum(1 for c in mesh.calls if c.error is not None) <= 12  # until both are ejected
