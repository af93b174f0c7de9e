"""Route sets against a real etcd with its default limits: size, bytes per event, GC, formats."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshware import InstanceRecord, MeshView, RouteSpec
from meshware._core.records import instance_key
from meshware._core.routesets import (
    CHUNK_BYTES,
    chunk_key,
    encode_record,
    encode_routeset,
    routesets_prefix,
)
from meshware._errors import EtcdError
from meshware._registrar import Registrar
from meshware.etcd import EtcdClient
from meshware.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.timeout(120) if hasattr(pytest.mark, "timeout") else []


def routes(n: int, tag: str = "r") -> tuple[RouteSpec, ...]:
    return tuple(
        RouteSpec(f"/api/{tag}{i // 100}/n{i}/{{id:int}}/items", ("GET", "POST"), name=f"{tag}{i}")
        for i in range(n)
    )


def record(service: str, iid: str, specs: tuple[RouteSpec, ...], port: int = 80) -> InstanceRecord:
    return InstanceRecord(
        service,
        iid,
        f"http://10.0.0.{port % 250}:{port}",
        specs,
        version="1.0.0",
        zone="z1",
        framework="flask",
        pid=4242,
        hostname="host-a",
        started_at=1764800000.123,
    )


@pytest.fixture
def registry(etcd_server: Any) -> Iterator[EtcdRegistry]:
    reg = EtcdRegistry(EtcdClient(etcd_server.endpoint, timeout=10))
    yield reg
    reg.close()


def set_digests(registry: EtcdRegistry, prefix: str) -> set[str]:
    keys = registry.client.get_prefix(routesets_prefix(prefix), keys_only=True).kvs
    return {kv.key.split("/")[-2] for kv in keys}


class WatchBytes:
    """A raw etcd watch stream on the prefix that counts the bytes of every response it reads."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        key = base64.b64encode(prefix.encode()).decode()
        end = base64.b64encode(prefix[:-1].encode() + bytes([prefix.encode()[-1] + 1])).decode()
        self._client = httpx.Client(timeout=None)
        self._cm = self._client.stream(
            "POST", endpoint + "/v3/watch", json={"create_request": {"key": key, "range_end": end}}
        )
        self._response = self._cm.__enter__()
        self.events: list[tuple[int, dict[str, Any]]] = []  # (bytes of that response, event)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        try:
            for raw in self._response.iter_raw():
                buffer += raw
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    answer = json.loads(line)
                    for event in answer.get("result", {}).get("events", []):
                        with self._cond:
                            self.events.append((len(line) + 1, event))
                            self._cond.notify_all()
        except (httpx.HTTPError, ValueError):
            return

    def wait(self, count: int, timeout: float = 10) -> list[tuple[int, dict[str, Any]]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= count, timeout), self.events
            return list(self.events)

    def close(self) -> None:
        self._client.close()


def test_an_app_of_20000_routes_registers_against_default_limits_and_resolves(
    etcd_server: Any, registry: EtcdRegistry, mesh_prefix: str
) -> None:
    big = record("big", "1", routes(20_000))
    assert len(big.encode()) > 1_572_864  # schema 1 would be over etcd's request limit
    with pytest.raises(EtcdError, match="too large"):  # what schema 1 gets
        registry.put(instance_key(mesh_prefix, "big", "1"), big.encode())
    registrar = Registrar(registry, big, prefix=mesh_prefix, ttl=5)
    assert registrar.start()
    try:
        assert registrar.routeset is not None
        assert len(registrar.routeset.routeset.chunks) > 1
        with MeshView(EtcdRegistry(EtcdClient(etcd_server.endpoint)), mesh_prefix) as view:
            found = view.wait_for(lambda t: "big" in t.services).resolve(
                "GET", "/api/r199/n19999/7/items"
            )
            assert found.service == "big"
            assert found.params == {"id": 7}
            assert len(view.table.routes()) == 20_000
    finally:
        registrar.withdraw()


def test_instance_events_of_a_1000_route_service_cost_each_watcher_under_1_kb(
    etcd_server: Any, registry: EtcdRegistry, mesh_prefix: str
) -> None:
    specs = routes(1000)
    first = Registrar(registry, record("users", "users-1", specs, 8001), prefix=mesh_prefix, ttl=5)
    assert first.start()  # the set is published
    watch = WatchBytes(etcd_server.endpoint, mesh_prefix + "/")
    second = Registrar(registry, record("users", "users-2", specs, 8002), prefix=mesh_prefix, ttl=5)
    try:
        time.sleep(0.2)  # the watch is created (its first answer carries no event)
        assert second.start()  # join
        second.drain()  # drain
        second.withdraw()  # leave: delete, then revoke
        events = watch.wait(2 + 1)
    finally:
        watch.close()
        first.withdraw()
    kinds = [(e.get("type", "PUT"), base64.b64decode(e["kv"]["key"]).decode()) for _, e in events]
    assert all("/v1/instances/" in key for _, key in kinds), kinds  # no route set bytes again
    sizes = [size for size, _ in events]
    print("event bytes", sizes)
    assert max(sizes) <= 1024, sizes
    schema1 = len(base64.b64encode(record("users", "users-2", specs).encode()))
    assert schema1 > 100 * max(sizes)  # the same event under schema 1: the whole table


def test_no_route_set_is_left_after_50_deploys(registry: EtcdRegistry, mesh_prefix: str) -> None:
    current: list[Registrar] = []
    seen: set[str] = set()
    for deploy in range(50):
        specs = routes(20, tag=f"v{deploy}-")
        fresh = [
            Registrar(
                registry,
                record("api", f"api-{deploy}-{i}", specs, 9000 + i),
                prefix=mesh_prefix,
                ttl=2,
                routeset_ttl=2,
            )
            for i in range(2)
        ]
        for r in fresh:
            assert r.start()
            assert r.routeset is not None
            seen.add(r.routeset.routeset.digest)
        for i, old in enumerate(current):
            if deploy % 5 == 0 and i == 0:
                old.forget()  # a process killed with -9: nothing withdrawn, nothing revoked
            else:
                old.withdraw()
        current = fresh
    assert len(seen) == 50
    for r in current:  # the live instances keep their set alive past its TTL
        r._keepalive()
    deadline = time.monotonic() + 10
    while set_digests(registry, mesh_prefix) != {current[0].routeset.routeset.digest}:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"left: {len(set_digests(registry, mesh_prefix))} sets"
        for r in current:
            r._keepalive()
        time.sleep(0.2)
    for r in current:
        r.withdraw()
    deadline = time.monotonic() + 10
    while set_digests(registry, mesh_prefix):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_set_whose_lease_is_lost_is_published_again_and_views_keep_routing(
    etcd_server: Any, registry: EtcdRegistry, mesh_prefix: str
) -> None:
    r = Registrar(registry, record("users", "u1", routes(3)), prefix=mesh_prefix, ttl=5)
    assert r.start()
    assert r.routeset is not None
    with MeshView(EtcdRegistry(EtcdClient(etcd_server.endpoint)), mesh_prefix) as view:
        view.wait_for(lambda t: "users" in t.services)
        (lease,) = r.routeset.leases
        registry.revoke(lease)  # the set's lease is gone (a stalled etcd, an operator...)
        assert not set_digests(registry, mesh_prefix)
        marker = record("marker", "m1", routes(1, "m"))
        registry.put(instance_key(mesh_prefix, "marker", "m1"), marker.encode())
        view.wait_for(lambda t: "marker" in t.services)  # the view has seen the set go
        assert view.resolve("GET", "/api/r0/n1/3/items").service == "users"  # still routes
        r.routeset.refresh(force=True)
        assert set_digests(registry, mesh_prefix) == {r.routeset.routeset.digest}
        assert view.table.rejected == {}
    r.withdraw()


def test_instances_starting_together_write_the_set_once_and_share_its_lease(
    registry: EtcdRegistry, mesh_prefix: str
) -> None:
    specs = routes(50)
    registrars = [
        Registrar(registry, record("users", f"u{i}", specs, 8000 + i), prefix=mesh_prefix, ttl=5)
        for i in range(6)
    ]
    threads = [threading.Thread(target=r.start) for r in registrars]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kvs = registry.client.get_prefix(routesets_prefix(mesh_prefix)).kvs
    assert len(kvs) == 1
    assert kvs[0].version == 1  # written once, never overwritten
    assert {r.routeset.leases for r in registrars} == {frozenset({kvs[0].lease})}  # type: ignore[union-attr]
    for r in registrars:
        r.withdraw()


def test_schema_1_records_written_by_hand_still_route_beside_schema_2(
    etcd_server: Any, registry: EtcdRegistry, mesh_prefix: str
) -> None:
    by_hand = {
        "schema": 1,
        "service": "legacy",
        "instance": "l1",
        "url": "http://10.1.1.1:80",
        "routes": [{"template": "/legacy/{id:int}", "methods": ["GET"]}],
    }
    registry.put(instance_key(mesh_prefix, "legacy", "l1"), json.dumps(by_hand).encode())
    r = Registrar(registry, record("users", "u1", routes(3)), prefix=mesh_prefix, ttl=5)
    old = Registrar(
        registry, record("users", "u0", routes(3), 81), prefix=mesh_prefix, ttl=5, schema=1
    )
    assert r.start()
    assert old.start()
    with MeshView(EtcdRegistry(EtcdClient(etcd_server.endpoint)), mesh_prefix) as view:
        table = view.wait_for(lambda t: {"legacy", "users"} <= set(t.services))
        assert table.resolve("GET", "/legacy/3").service == "legacy"
        assert (
            len(table.resolve("GET", "/api/r0/n1/3/items").instances) == 2
        )  # schema 1 and 2 together
        assert table.rejected == {}
    r.withdraw()
    old.withdraw()


def test_a_hostile_set_is_skipped_with_one_warning_and_costs_only_its_record(
    etcd_server: Any, registry: EtcdRegistry, mesh_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = Registrar(registry, record("orders", "o1", routes(3, "o")), prefix=mesh_prefix, ttl=5)
    assert good.start()
    fake = record("users", "evil", routes(3))
    rs = encode_routeset(fake)
    registry.put(
        chunk_key(mesh_prefix, "users", rs.digest, 0), rs.chunks[0].replace(b"/n1/", b"/x1/")
    )
    with (
        caplog.at_level(logging.WARNING, "meshware.view"),
        MeshView(EtcdRegistry(EtcdClient(etcd_server.endpoint)), mesh_prefix) as view,
    ):
        registry.put(instance_key(mesh_prefix, "users", "evil"), encode_record(fake, rs))
        view.wait_for(lambda t: instance_key(mesh_prefix, "users", "evil") in t.rejected)
        revision = registry.put(
            instance_key(mesh_prefix, "users", "evil"),
            encode_record(fake.with_state("draining"), rs),
        )
        view.wait_for(lambda t: t.revision >= revision)  # the second put was read too
        assert view.table.services == ("orders",)
    warnings = [r.getMessage() for r in caplog.records if "evil" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "does not match its digest" in warnings[0]
    good.withdraw()


def test_chunks_are_below_etcds_request_limit() -> None:
    assert CHUNK_BYTES * 4 // 3 + 4096 < 1_572_864  # even base64-encoded in the gateway's JSON
