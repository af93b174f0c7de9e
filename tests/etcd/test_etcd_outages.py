"""What the clients do when etcd goes away, comes back, or only some endpoints work."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from meshware import RegistryUnavailable
from meshware.etcd import AsyncEtcdClient, EtcdClient
from meshware.testing.etcd import EtcdServer


def test_stopped_server_raises_registry_unavailable_fast(
    make_etcd: Callable[..., EtcdServer],
) -> None:
    server = make_etcd()
    with EtcdClient(server.endpoint) as client:
        client.put("/k", "v")
        server.stop(keep_data=True)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=server.endpoint) as info:
            client.get("/k")
    assert time.monotonic() - started < 0.5
    assert "refused" in str(info.value).lower()


def test_client_works_again_after_a_restart(make_etcd: Callable[..., EtcdServer]) -> None:
    server = make_etcd()
    with EtcdClient(server.endpoint) as client:
        client.put("/k", "v")
        server.kill()
        with pytest.raises(RegistryUnavailable):
            client.get("/k")
        server.start()
        assert client.get("/k").value == b"v"  # type: ignore[union-attr]


def test_watch_raises_unavailable_when_etcd_dies_and_resumes_after_restart(
    make_etcd: Callable[..., EtcdServer],
) -> None:
    server = make_etcd()
    with EtcdClient(server.endpoint) as client:
        watch = client.watch_prefix("/p/")
        assert next(watch).created
        client.put("/p/a", "1")
        next(watch)
        server.kill()
        with pytest.raises(RegistryUnavailable, match="watch again from revision"):
            next(watch)
        server.start()
        missed = client.put("/p/b", "2")  # written while nobody watched
        with client.watch_prefix("/p/", start_revision=watch.next_revision) as resumed:
            assert next(resumed).created
            [event] = next(resumed).events
    assert (event.kv.key, event.kv.mod_revision) == ("/p/b", missed.revision)


def test_gracefully_stopped_etcd_ends_a_watch_with_unavailable(
    make_etcd: Callable[..., EtcdServer],
) -> None:
    # etcd's gateway then sends {"error": {"grpc_code": 14, ...}} on the stream.
    server = make_etcd()
    with EtcdClient(server.endpoint) as client, client.watch_prefix("/p/") as watch:
        assert next(watch).created
        server.stop(keep_data=True)
        with pytest.raises(RegistryUnavailable):
            next(watch)


def test_failover_skips_a_dead_endpoint_and_sticks_to_the_live_one(
    etcd_server: EtcdServer, dead_endpoint: str, prefix: str
) -> None:
    with EtcdClient([dead_endpoint, etcd_server.endpoint]) as client:
        client.put(prefix + "k", "v")
        assert client.current_endpoint == etcd_server.endpoint
        assert client.get(prefix + "k").value == b"v"  # type: ignore[union-attr]


def test_failover_goes_back_to_an_endpoint_that_failed_earlier(
    make_etcd: Callable[..., EtcdServer], dead_endpoint: str
) -> None:
    second = make_etcd()
    with EtcdClient([dead_endpoint, second.endpoint]) as client:
        client.put("/k", "second")
        second.stop()
        port = urlsplit(dead_endpoint).port
        make_etcd(client_port=port)  # the first endpoint comes to life; no lock-out
        assert client.get("/k") is None
        assert client.current_endpoint == dead_endpoint


def test_every_endpoint_dead_names_them_all(dead_endpoint: str) -> None:
    other = dead_endpoint.replace("127.0.0.1", "localhost")
    client = EtcdClient([dead_endpoint, other], timeout=1)
    with client, pytest.raises(RegistryUnavailable) as info:
        client.status()
    assert dead_endpoint in str(info.value)
    assert other in str(info.value)


async def test_async_client_reports_outage_and_recovers(
    make_etcd: Callable[..., EtcdServer],
) -> None:
    server = make_etcd()
    async with AsyncEtcdClient(server.endpoint) as client:
        watch = client.watch_prefix("/p/")
        assert (await anext(watch)).created
        server.kill()
        with pytest.raises(RegistryUnavailable):
            await anext(watch)
        with pytest.raises(RegistryUnavailable):
            await client.get("/k")
        server.start()
        await client.put("/k", "v")
        assert (await client.get("/k")).value == b"v"  # type: ignore[union-attr]


async def test_async_failover_skips_a_dead_endpoint(
    etcd_server: EtcdServer, dead_endpoint: str, prefix: str
) -> None:
    async with AsyncEtcdClient([dead_endpoint, etcd_server.endpoint]) as client:
        await client.put(prefix + "k", "v")
        assert client.current_endpoint == etcd_server.endpoint
