"""A member defends its record (issue 12, finding 4): deleted or altered by hand in a real etcd
while the member runs, it is back within a second under the same lease; a drain is not undone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from meshware import RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._member import Member
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer


@pytest.fixture
def member(etcd_server: EtcdServer, mesh_prefix: str) -> Iterator[Member]:
    settings = MemberSettings(
        service="users",
        etcd=EtcdSettings(endpoints=(etcd_server.endpoint,), prefix=mesh_prefix),
        advertise_url="http://127.0.0.1:8123",
        lease_ttl=5,
        drain_delay=0,
    )
    m = Member(
        settings,
        routes=lambda: [RouteSpec("/users", ("GET",))],
        routing="specificity",
        framework="test",
    )
    m.start()
    assert m.wait_registered(5)
    yield m
    m.stop()


def back_within(client: EtcdClient, key: str, expected: bytes, lease: int, seconds: float) -> float:
    started = time.monotonic()
    while True:
        kv = client.get(key)
        if kv is not None and kv.value == expected and kv.lease == lease:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{key} not put back: {kv}"
        time.sleep(0.005)


def test_a_record_deleted_by_hand_is_back_within_a_second(
    member: Member, etcd_server: EtcdServer
) -> None:
    registrar = member.registrar
    assert registrar is not None
    with EtcdClient(etcd_server.endpoint) as client:
        expected = client.get(registrar.key).value  # type: ignore[union-attr]
        client.delete(registrar.key)
        took = back_within(client, registrar.key, expected, registrar.lease, 1.0)
    print(f"deleted record back in {took * 1000:.1f} ms")
    deadline = time.monotonic() + 1  # counted just after the put etcd already answered
    while registrar.restored != 1:
        assert time.monotonic() < deadline, registrar.restored
        time.sleep(0.005)


def test_a_record_altered_by_hand_is_put_back(member: Member, etcd_server: EtcdServer) -> None:
    registrar = member.registrar
    assert registrar is not None
    with EtcdClient(etcd_server.endpoint) as client:
        expected = client.get(registrar.key).value  # type: ignore[union-attr]
        client.put(registrar.key, expected.replace(b"8123", b"9999"))  # no lease, other URL
        back_within(client, registrar.key, expected, registrar.lease, 1.0)


def test_a_drained_record_stays_withdrawn(member: Member, etcd_server: EtcdServer) -> None:
    registrar = member.registrar
    assert registrar is not None
    member.drain()
    time.sleep(0.3)  # the defender would have put it back by now (it takes milliseconds)
    with EtcdClient(etcd_server.endpoint) as client:
        assert client.get(registrar.key) is None
    assert registrar.restored == 0


def test_a_record_changed_through_update_is_kept(member: Member, etcd_server: EtcdServer) -> None:
    registrar = member.registrar
    assert registrar is not None
    registrar.update(dataclasses.replace(registrar.record, weight=50))
    with EtcdClient(etcd_server.endpoint) as client:
        expected = client.get(registrar.key).value  # type: ignore[union-attr]
        assert b'"weight":50' in expected
        client.delete(registrar.key)  # the defence now puts back the updated record
        back_within(client, registrar.key, expected, registrar.lease, 1.0)
