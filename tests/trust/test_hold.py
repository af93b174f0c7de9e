"""The hold rule in a real view on a real etcd: what is held, and how it leaves."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

import meshware
from meshware import InstanceRecord, RouteSpec
from meshware._core.records import instance_key
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def client(etcd_server: EtcdServer) -> Iterator[EtcdClient]:
    with EtcdClient(etcd_server.endpoint) as c:
        yield c


def publish(
    client: EtcdClient, prefix: str, service: str, url: str
) -> tuple[str, int, InstanceRecord]:
    record = InstanceRecord(service, "i1", url, (RouteSpec(f"/{service}", ("GET",)),))
    key = instance_key(prefix, service, "i1")
    lease = client.lease_grant(30).id
    client.put(key, record.encode(), lease=lease)
    return key, lease, record


def test_a_crash_of_one_instance_is_removed_after_settling(
    client: EtcdClient, etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    _, lease, _ = publish(client, mesh_prefix, "users", dead_url())
    with meshware.connect(etcd_endpoints=etcd_server.endpoint, prefix=mesh_prefix) as view:
        view.wait_for(lambda t: bool(t.instances("users")))
        client.lease_revoke(lease)  # as etcd does when a lease expires
        started = time.monotonic()
        view.wait_for(lambda t: not t.instances("users"), timeout=2)
        assert 0.45 < time.monotonic() - started < 1.5  # SETTLE_SECONDS, then gone


def test_a_burst_is_held_until_a_caller_is_refused(
    client: EtcdClient, etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    users, orders = dead_url(), dead_url()
    leases = [
        publish(client, mesh_prefix, "users", users)[1],
        publish(client, mesh_prefix, "orders", orders)[1],
    ]
    with meshware.connect(etcd_endpoints=etcd_server.endpoint, prefix=mesh_prefix) as view:
        view.wait_for(lambda t: bool(t.instances("users")) and bool(t.instances("orders")))
        for lease in leases:  # every lease ends at once: an etcd stall
            client.lease_revoke(lease)
        time.sleep(1.0)  # past SETTLE_SECONDS: they are held, not removed
        assert [i.url for i in view.table.instances("users")] == [users]
        with meshware.Client(mesh=view) as c, pytest.raises(httpx.ConnectError):
            c.get("/users")
        assert view.table.instances("users") == ()  # refused: gone at once
        assert [i.url for i in view.table.instances("orders")] == [orders]  # still held


def test_a_draining_record_leaves_at_once(
    client: EtcdClient, etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    key, lease, record = publish(client, mesh_prefix, "users", dead_url())
    with meshware.connect(etcd_endpoints=etcd_server.endpoint, prefix=mesh_prefix) as view:
        view.wait_for(lambda t: bool(t.instances("users")))
        client.put(key, record.with_state("draining").encode(), lease=lease)
        client.delete(key)
        started = time.monotonic()
        view.wait_for(lambda t: not t.instances("users"), timeout=2)
        assert time.monotonic() - started < 0.3


def test_a_held_burst_ends_after_the_hold(
    etcd_server: EtcdServer, client: EtcdClient, mesh_prefix: str
) -> None:
    from meshware._view import MeshView
    from meshware.registry.etcd import EtcdRegistry

    leases = [publish(client, mesh_prefix, s, dead_url())[1] for s in ("users", "orders")]
    registry = EtcdRegistry(EtcdClient(etcd_server.endpoint))
    with MeshView(registry, mesh_prefix, hold=1.5) as view:
        view.wait_for(lambda t: bool(t.instances("users")))
        for lease in leases:
            client.lease_revoke(lease)
        time.sleep(0.8)
        assert view.table.instances("users")  # held
        view.wait_for(lambda t: not t.instances("users") and not t.instances("orders"), timeout=3)
    registry.close()
