"""The registry conformance suite passes on the in-memory fake and on a real etcd."""

from __future__ import annotations

import time

import httpx

from meshware.etcd import EtcdClient
from meshware.registry import MemoryRegistry, Registry
from meshware.registry.etcd import EtcdRegistry
from meshware.testing.conformance import check_registry
from meshware.testing.etcd import EtcdServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_registry_conforms() -> None:
    clock = FakeClock()

    def expire(registry: Registry, ttl: int) -> None:
        clock.now += ttl + 0.001
        assert isinstance(registry, MemoryRegistry)
        registry.expire_leases()

    def compact(registry: Registry, revision: int) -> None:
        assert isinstance(registry, MemoryRegistry)
        registry.compact(revision)

    ran = check_registry(
        lambda: MemoryRegistry(clock=clock), wait_lease_expiry=expire, compact=compact
    )
    assert len(ran) == 10
    assert {"create_never_overwrites", "route_sets_join_their_records"} <= set(ran)


def test_etcd_registry_conforms(etcd_server: EtcdServer) -> None:
    def expire(registry: Registry, ttl: int) -> None:
        # a real lease: poll until etcd has expired it (etcd checks expiry every 500 ms)
        deadline = time.monotonic() + ttl + 5
        prefix = "/conformance/"
        while time.monotonic() < deadline:
            if not any(
                e.key.startswith(prefix)
                for e in registry.snapshot(prefix).entries
                if e.value == b"v"
            ):
                return
            time.sleep(0.05)

    def compact(registry: Registry, revision: int) -> None:
        httpx.post(
            f"{etcd_server.endpoint}/v3/kv/compaction", json={"revision": str(revision)}
        ).raise_for_status()

    ran = check_registry(
        lambda: EtcdRegistry(EtcdClient(etcd_server.endpoint)),
        wait_lease_expiry=expire,
        compact=compact,
    )
    assert len(ran) == 10
    assert {"create_never_overwrites", "route_sets_join_their_records"} <= set(ran)
