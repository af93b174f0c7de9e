"""Weights and zones through the real mesh client on the fake mesh (concurrent async callers)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import meshware
from meshware.integrations.starlette import Mesh as StarletteMesh
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


@pytest.mark.parametrize("status", [429, 503])
def test_a_service_shedding_everything_gets_at_most_half_the_attempts_after_two_seconds(
    status: int,
) -> None:
    """200 calls/s from one client; the service sheds everything from t=1 s on."""
    clock = MeshClock()
    with FakeMesh(clock=clock, seed=1) as mesh:
        mesh.add("users", make_users(), replicas=3)
        with mesh.client() as client:
            start = clock()
            made = attempts_before = 0
            throttled = 0
            last: meshware.Throttled | None = None
            while clock() - start < 5.0:
                shedding_for = clock() - start - 1.0
                if shedding_for >= 0 and not mesh._faults:
                    mesh.fail("users", with_=status)
                if shedding_for >= 2.0 and not made:
                    attempts_before = len(mesh.calls)
                if shedding_for >= 2.0:
                    made += 1
                try:
                    client.get("/users/1")
                except meshware.Throttled as exc:
                    last = exc
                    throttled += 1
                clock.advance(0.005)
            received = len(mesh.calls) - attempts_before
    assert made > 300
    assert throttled > 0
    assert isinstance(last, httpx.TransportError)
    assert last.service == "users"
    assert received <= 0.5 * made, (received, made)


def limited_app() -> Starlette:
    @meshware.rate_limit("2/s", burst=1)
    async def login(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @meshware.concurrency_limit(1)
    async def report(request: Request) -> PlainTextResponse:
        return PlainTextResponse("report")

    app = Starlette(routes=[Route("/login", login), Route("/report", report)])
    StarletteMesh(app, service="auth")  # its own middleware stands down in the fake mesh
    return app


def test_the_fake_mesh_enforces_declared_limits_on_its_clock() -> None:
    clock = MeshClock()
    exact = meshware.ClientPolicy(throttle_k=0, retries=0)  # what the member answers, as is
    with FakeMesh(clock=clock, seed=1, policy=exact) as mesh:
        mesh.add("auth", limited_app(), replicas=1)
        noisy = {"X-Meshware-Caller": "noisy"}
        with mesh.client() as client:
            got = [client.get("/login", headers=noisy).status_code for _ in range(4)]
            assert got == [200, 200, 429, 429]  # the burst, then 429
            r = client.get("/login", headers=noisy)
            assert r.headers["retry-after"] == "1"
            assert client.get("/login", headers={"X-Meshware-Caller": "quiet"}).status_code == 200
            clock.advance(1.0)  # the fake clock refills the bucket: nobody waits
            assert client.get("/login", headers=noisy).status_code == 200
            assert client.get("/report").status_code == 200  # gates are released after a call
            assert client.get("/report").status_code == 200
        assert [c.status for c in mesh.calls_to("auth")].count(429) == 3


def test_a_429_with_retry_after_is_retried_after_it_on_the_fake_clock() -> None:
    clock = MeshClock()
    with FakeMesh(clock=clock, seed=1) as mesh:
        mesh.add("auth", limited_app(), replicas=1)
        with mesh.client() as client:
            assert client.get("/login").status_code == 200
            assert client.get("/login").status_code == 200
            start = clock()
            assert client.get("/login").status_code == 200  # 429, Retry-After: 1, then 200
            assert clock() - start >= 1.0


def test_the_local_router_answers_503_with_retry_after_when_its_client_throttles() -> None:
    from meshware.edge.proxy import MeshProxy

    async def run(mesh: FakeMesh) -> list[httpx.Response]:
        client = mesh.async_client()
        proxy = MeshProxy(client, mesh)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=proxy), base_url="http://router"
        ) as c:
            out = []
            for _ in range(100):
                out.append(await c.get("/users/1"))
                mesh.clock.advance(0.01)
            return out

    with FakeMesh(clock=MeshClock(), seed=2) as mesh:
        mesh.add("users", make_users(), replicas=2)
        mesh.fail("users", with_=503)
        answers = asyncio.run(run(mesh))
    assert {r.status_code for r in answers} == {503}
    throttled = [r for r in answers if "overloaded" in r.text]
    assert throttled
    assert all(r.headers["retry-after"] == "1" for r in throttled)
