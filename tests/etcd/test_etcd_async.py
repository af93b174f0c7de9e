"""The async client against a real etcd: the main paths of the blocking client's tests."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from meshware import EtcdCompacted, LeaseLost
from meshware.etcd import AsyncEtcdClient
from meshware.testing.etcd import EtcdServer


async def test_put_get_prefix_and_delete(aclient: AsyncEtcdClient, prefix: str) -> None:
    put = await aclient.put(prefix + "a", "1")
    await aclient.put(prefix + "b", b"2")
    kv = await aclient.get(prefix + "a")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"1", put.revision)
    listing = await aclient.get_prefix(prefix)
    assert [(kv.key, kv.value) for kv in listing.kvs] == [
        (prefix + "a", b"1"),
        (prefix + "b", b"2"),
    ]
    assert (await aclient.delete_prefix(prefix)).deleted == 2
    assert await aclient.get(prefix + "a") is None


async def test_lease_keepalive_and_revoke(aclient: AsyncEtcdClient, prefix: str) -> None:
    lease = await aclient.lease_grant(30)
    await aclient.put(prefix + "k", "v", lease=lease.id)
    assert await aclient.lease_keepalive(lease.id) == 30
    assert (await aclient.lease_time_to_live(lease.id)).keys == [prefix + "k"]
    await aclient.lease_revoke(lease.id)
    assert await aclient.get(prefix + "k") is None
    with pytest.raises(LeaseLost):
        await aclient.lease_keepalive(lease.id)
    await aclient.lease_revoke(lease.id)  # already gone: fine


async def test_watch_receives_put_and_delete(aclient: AsyncEtcdClient, prefix: str) -> None:
    async with aclient.watch_prefix(prefix, prev_kv=True) as watch:
        assert (await anext(watch)).created
        sent = time.perf_counter()
        await aclient.put(prefix + "k", "v")
        [put] = (await anext(watch)).events
        latency = time.perf_counter() - sent
        await aclient.delete(prefix + "k")
        [delete] = (await anext(watch)).events
    assert (put.type, put.kv.value) == ("PUT", b"v")
    assert (delete.type, delete.prev_kv.value) == ("DELETE", b"v")  # type: ignore[union-attr]
    assert latency < 0.5


async def test_watch_resumes_from_a_revision(aclient: AsyncEtcdClient, prefix: str) -> None:
    first = await aclient.put(prefix + "a", "1")
    await aclient.put(prefix + "a", "2")
    async with aclient.watch_prefix(prefix, start_revision=first.revision) as watch:
        assert (await anext(watch)).created
        assert [e.kv.value for e in (await anext(watch)).events] == [b"1", b"2"]


async def test_watch_from_a_compacted_revision_raises_compacted(
    aclient: AsyncEtcdClient, prefix: str, etcd_server: EtcdServer
) -> None:
    old = await aclient.put(prefix + "k", "1")
    new = await aclient.put(prefix + "k", "2")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            etcd_server.endpoint + "/v3/kv/compaction", json={"revision": str(new.revision)}
        )
        response.raise_for_status()
    watch = aclient.watch_prefix(prefix, start_revision=old.revision)
    with pytest.raises(EtcdCompacted) as info:
        async for _ in watch:
            pass
    assert info.value.compact_revision == new.revision


async def test_cancelling_the_iterating_task_closes_the_watch(
    aclient: AsyncEtcdClient, prefix: str
) -> None:
    watch = aclient.watch_prefix(prefix)
    assert (await anext(watch)).created

    async def consume() -> None:
        async for _ in watch:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watch._http is None  # its connection was released
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_aclose_from_another_task_ends_the_iteration(
    aclient: AsyncEtcdClient, prefix: str
) -> None:
    watch = aclient.watch_prefix(prefix)
    assert (await anext(watch)).created
    reader = asyncio.create_task(anext(watch, None))
    await asyncio.sleep(0.05)
    await watch.aclose()
    assert await asyncio.wait_for(reader, 1) is None
