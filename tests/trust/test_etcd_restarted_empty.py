"""etcd restarted with an empty data directory (issue 12, finding 2): the view notices that the
history it followed is gone, re-lists, and new instances get traffic; before, the view waited
for a revision from the old history forever while saying it was connected."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import meshware
from meshware import RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._member import Member
from meshware.testing.etcd import EtcdServer, find_etcd_binary

from .conftest import HTTPServers

pytestmark = pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary")


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:  # our own: this test restarts it
        yield server


def member(etcd: EtcdServer, prefix: str, url: str) -> Member:
    settings = MemberSettings(
        service="users",
        etcd=EtcdSettings(endpoints=(etcd.endpoint,), prefix=prefix, timeout=0.5),
        advertise_url=url,
        lease_ttl=2,
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


def test_a_restarted_empty_etcd_is_noticed_within_a_second_and_new_instances_get_traffic(
    etcd: EtcdServer, mesh_prefix: str, http_servers: HTTPServers
) -> None:
    url_a, url_b, url_c = http_servers.start(), http_servers.start(), http_servers.start()
    a, b = member(etcd, mesh_prefix, url_a), member(etcd, mesh_prefix, url_b)
    members = [a, b]
    view = meshware.connect(etcd_endpoints=etcd.endpoint, prefix=mesh_prefix)
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        with meshware.Client(mesh=view, retries=3) as client:
            while not stop.is_set():
                try:
                    r = client.get("/users/1")
                    seen.append(r.json()["port"])
                except Exception as exc:  # counted, not raised: the figure is the count
                    errors.append(exc)
                time.sleep(0.002)

    loader = threading.Thread(target=load, daemon=True)
    try:
        view.wait_for(lambda t: len(t.instances("users")) == 2, timeout=5)
        loader.start()
        time.sleep(0.3)
        etcd.stop()  # the data directory is removed...
        a.stop()  # ...and instance A goes away meanwhile (its withdrawal cannot reach etcd)
        http_servers.stop(url_a)
        etcd.start()  # ...then etcd starts empty, on the same ports
        restarted = time.monotonic()
        view.wait_for(
            lambda t: view.connected and {i.url for i in t.instances("users")} <= {url_b}, timeout=5
        )
        noticed = time.monotonic() - restarted
        members.append(member(etcd, mesh_prefix, url_c))
        view.wait_for(lambda t: url_c in {i.url for i in t.instances("users")}, timeout=5)
        before = len(seen)
        deadline = time.monotonic() + 5
        while str(url_c.rsplit(":", 1)[1]) not in map(str, seen[before:]):
            assert time.monotonic() < deadline, "the new instance got no traffic"
            time.sleep(0.05)
    finally:
        stop.set()
        loader.join(5)
        view.stop()
        for m in members:
            m.stop()
    print(
        f"restart noticed in {noticed * 1000:.0f} ms; {len(errors)} failed of {len(seen) + len(errors)}"
    )
    assert noticed < 1.0
