"""etcd stalled longer than the lease TTL under a steady GET load (issue 12, finding 3).

When the stalled etcd resumes it revokes every lease at once; every member registers again
within a fraction of a second. Before the hold rule every table was empty meanwhile and
hundreds of calls failed with NoRouteError; now the departed records are held: 0 failed calls.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

import meshware
from meshware import RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._member import Member
from meshware._view import MeshView
from meshware.registry.etcd import EtcdRegistry
from meshware.testing.etcd import EtcdServer, find_etcd_binary

from .conftest import HTTPServers

pytestmark = pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary")

TTL = 2
STALL = 2 * TTL + 1.0


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:  # our own: this test stops it
        yield server


def start_member(etcd: EtcdServer, prefix: str, url: str) -> Member:
    settings = MemberSettings(
        service="users",
        etcd=EtcdSettings(endpoints=(etcd.endpoint,), prefix=prefix, timeout=0.5),
        advertise_url=url,
        lease_ttl=TTL,
        drain_delay=0,
    )
    m = Member(
        settings,
        routes=lambda: [RouteSpec("/users/{id:int}", ("GET",))],
        routing="specificity",
        framework="test",
    )
    m.start()
    assert m.wait_registered(5)
    return m


def test_an_etcd_stalled_longer_than_the_lease_ttl_fails_no_call(
    etcd: EtcdServer, mesh_prefix: str, http_servers: HTTPServers
) -> None:
    members = [start_member(etcd, mesh_prefix, http_servers.start()) for _ in range(3)]
    smallest = [3]

    def track(table: meshware.RoutingTable) -> None:  # every table the view swaps in
        smallest[0] = min(smallest[0], len(table.instances("users")))

    registry = EtcdRegistry.from_settings(EtcdSettings(endpoints=(etcd.endpoint,), timeout=0.5))
    view = MeshView(registry, mesh_prefix, on_change=track).start()
    stop = threading.Event()
    done: list[float] = []
    failures: list[BaseException] = []

    def load() -> None:
        with meshware.Client(mesh=view) as client:
            while not stop.is_set():
                try:
                    client.get("/users/1").raise_for_status()
                    done.append(time.monotonic())
                except Exception as exc:  # counted: the figure is the count
                    failures.append(exc)
                time.sleep(0.001)

    loader = threading.Thread(target=load, daemon=True)
    try:
        view.wait_for(lambda t: len(t.instances("users")) == 3, timeout=5)
        loader.start()
        time.sleep(0.3)
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGSTOP)
        time.sleep(STALL)
        os.kill(etcd.pid, signal.SIGCONT)
        resumed = time.monotonic()
        # every member lost its lease and registered again
        deadline = time.monotonic() + 10
        while not all(m.registrar and m.registrar._registrations >= 2 for m in members):
            assert time.monotonic() < deadline, "the leases were not lost: the drill did nothing"
            time.sleep(0.02)
        reregistered = time.monotonic() - resumed
        time.sleep(0.5)
        view.wait_for(lambda t: len(t.instances("users")) == 3, timeout=5)
    finally:
        stop.set()
        loader.join(5)
        view.stop()
        registry.close()
        for m in members:
            m.stop()
    during = sum(1 for t in done if t >= resumed)
    print(
        f"stall {STALL:.0f} s (ttl {TTL} s): {len(done)} calls, {len(failures)} failed, "
        f"members registered again {reregistered * 1000:.0f} ms after etcd resumed, "
        f"{during} calls after it; fewest instances in the table: {smallest[0]}"
    )
    assert failures == [], failures[:5]
    assert smallest[0] >= 1  # the live service never left the table (before: 0 for ~80 ms)
    assert during > 50
