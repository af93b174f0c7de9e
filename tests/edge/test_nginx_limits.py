"""Route limits at a real nginx rendered from the table, and at the public-only proxy: one
client hammering a route limited to 20/s with burst 10 gets 20/s (+ burst) through within 10 %
and 429 with Retry-After for the rest, other routes are unaffected, and two edges together
still let 20/s through."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import meshware
from meshware import InstanceRecord, RoutingTable
from meshware._core.limits import RouteLimits
from meshware.edge.nginx import NginxOptions, find_nginx, render
from meshware.integrations._starlette_routes import starlette_routes

from . import upstream_app
from .conftest import free_port, stop, wait_port

LIMIT = RouteLimits(rate=20, burst=10)
SECONDS = 3.0


@pytest.fixture(scope="module")
def limited_table(upstream: str) -> RoutingTable:
    routes = [
        dataclasses.replace(r, limits=LIMIT) if r.template == "/users/{id:int}" else r
        for r in starlette_routes(upstream_app.app)
    ]
    record = InstanceRecord("users", "u1", upstream, tuple(routes), routing="ordered")
    return RoutingTable.from_records([record])


def start_nginx(
    table: RoutingTable, prefix: Path, edges: int
) -> tuple[subprocess.Popen[bytes], int]:
    binary = find_nginx()
    port = free_port()
    options = NginxOptions(
        listen=f"127.0.0.1:{port}", prefix=str(prefix), user="root" if os.geteuid() == 0 else None
    )
    conf = prefix / "nginx.conf"
    conf.write_text(render(table, options, edges=edges))
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)])
    wait_port(port, proc)
    return proc, port


@pytest.fixture(scope="module")
def edges(
    limited_table: RoutingTable, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, list[int]]]:
    """One nginx alone (edges=1), and two nginx that share the rate (edges=2)."""
    try:
        find_nginx()
    except meshware.ConfigError as exc:
        pytest.skip(str(exc))
    procs = []
    try:
        proc, single = start_nginx(limited_table, tmp_path_factory.mktemp("edge1"), 1)
        procs.append(proc)
        pair = []
        for k in range(2):
            proc, port = start_nginx(limited_table, tmp_path_factory.mktemp(f"pair{k}"), 2)
            procs.append(proc)
            pair.append(port)
        yield single, pair
    finally:
        for proc in procs:
            stop(proc)


def hammer(ports: list[int], path: str, seconds: float) -> tuple[Counter[int], set[str]]:
    """One client, as fast as it can, round robin over ``ports``; statuses and Retry-Afters."""
    got: Counter[int] = Counter()
    retry_after: set[str] = set()
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}") for p in ports]
    try:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            r = clients[i % len(clients)].get(path)
            i += 1
            got[r.status_code] += 1
            if r.status_code == 429:
                retry_after.add(r.headers.get("retry-after", "missing"))
    finally:
        for c in clients:
            c.close()
    return got, retry_after


def expected() -> float:
    return LIMIT.per_second * SECONDS + LIMIT.burst + 1


def test_one_client_gets_the_rate_and_burst_through_and_429_with_retry_after_beyond(
    edges: tuple[int, list[int]],
) -> None:
    single, _ = edges
    other: list[int] = []
    stop_other = threading.Event()

    def other_route() -> None:  # another client of another route meanwhile
        with httpx.Client(base_url=f"http://127.0.0.1:{single}") as c:
            while not stop_other.is_set():
                other.append(c.get("/files/a.txt").status_code)
                time.sleep(0.01)

    t = threading.Thread(target=other_route)
    t.start()
    try:
        got, retry_after = hammer([single], "/users/1", SECONDS)
    finally:
        stop_other.set()
        t.join()
    print(f"one edge: {dict(got)} (expected {expected():.0f} through)")
    assert abs(got[200] - expected()) <= 0.10 * expected(), got
    assert got[429] > 0
    assert set(got) == {200, 429}
    assert retry_after == {"1"}
    assert other
    assert set(other) == {200}  # other routes are unaffected


def test_two_edges_together_still_let_the_rate_through(edges: tuple[int, list[int]]) -> None:
    _, pair = edges
    time.sleep(1.0)  # the buckets of earlier tests refill
    got, _ = hammer(pair, "/users/2", SECONDS)
    print(f"two edges: {dict(got)} (expected {expected():.0f} through)")
    assert abs(got[200] - expected()) <= 0.10 * expected(), got
    assert got[429] > 0


class _Mesh:
    """A table and the number of live edges, as a MeshView gives them to the proxy."""

    def __init__(self, table: RoutingTable, edges: int) -> None:
        self.table = table
        self.traffic = type("Traffic", (), {"edges": edges})()


@contextlib.contextmanager
def public_proxy(table: RoutingTable, edges: int) -> Iterator[int]:
    import uvicorn

    from meshware.edge.proxy import MeshProxy

    port = free_port()
    client = meshware.AsyncClient(table, total_timeout=10)
    app = MeshProxy(client, _Mesh(table, edges), public_only=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_public_only_proxy_enforces_the_same_limits(limited_table: RoutingTable) -> None:
    with public_proxy(limited_table, 1) as port:
        got, retry_after = hammer([port], "/users/1", SECONDS)
        assert httpx.get(f"http://127.0.0.1:{port}/files/a.txt").status_code == 200
    print(f"public-only proxy: {dict(got)} (expected {expected():.0f} through)")
    assert abs(got[200] - expected()) <= 0.10 * expected(), got
    assert got[429] > 0
    assert retry_after == {"1"}


def test_two_public_only_proxies_share_the_rate(limited_table: RoutingTable) -> None:
    with public_proxy(limited_table, 2) as a, public_proxy(limited_table, 2) as b:
        got, _ = hammer([a, b], "/users/1", SECONDS)
    print(f"two public-only proxies: {dict(got)} (expected {expected():.0f} through)")
    assert abs(got[200] - expected()) <= 0.10 * expected(), got
