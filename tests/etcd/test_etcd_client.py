"""The blocking client against a real etcd: keys, leases, watches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from meshware import EtcdCompacted, LeaseLost, RegistryUnavailable
from meshware.etcd import EtcdClient, WatchResponse
from meshware.testing.etcd import EtcdServer


def test_put_then_get_returns_value_and_revisions(client: EtcdClient, prefix: str) -> None:
    first = client.put(prefix + "k", "v1")
    second = client.put(prefix + "k", b"v2")
    kv = client.get(prefix + "k")
    assert kv is not None
    assert kv.value == b"v2"
    assert (kv.create_revision, kv.mod_revision, kv.version) == (
        first.revision,
        second.revision,
        2,
    )


def test_get_of_a_missing_key_is_none(client: EtcdClient, prefix: str) -> None:
    assert client.get(prefix + "missing") is None


def test_get_prefix_returns_only_keys_under_the_prefix_sorted(
    client: EtcdClient, prefix: str
) -> None:
    for name in ("b", "a", "c/d"):
        client.put(prefix + name, name)
    client.put(prefix.rstrip("/") + "0", "outside")  # the key right after the prefix range
    result = client.get_prefix(prefix)
    assert [kv.key for kv in result.kvs] == [prefix + "a", prefix + "b", prefix + "c/d"]
    assert result.count == 3
    assert result.revision >= max(kv.mod_revision for kv in result.kvs)


def test_get_prefix_keys_only_leaves_values_out(client: EtcdClient, prefix: str) -> None:
    client.put(prefix + "a", "value")
    assert [kv.value for kv in client.get_prefix(prefix, keys_only=True).kvs] == [b""]


def test_delete_and_delete_prefix_report_how_many_keys_went(
    client: EtcdClient, prefix: str
) -> None:
    for name in ("a", "b", "c"):
        client.put(prefix + name, "v")
    assert client.delete(prefix + "a").deleted == 1
    assert client.delete(prefix + "a").deleted == 0
    assert client.delete_prefix(prefix).deleted == 2
    assert client.get_prefix(prefix).kvs == []


def test_status_names_the_member_and_version(client: EtcdClient, etcd_server: EtcdServer) -> None:
    status = client.status()
    assert status.member_id == etcd_server.member_id == status.leader
    assert status.version.startswith("3.")


# -- leases ------------------------------------------------------------------------------------


def test_lease_grant_and_time_to_live_list_the_leased_keys(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(30)
    client.put(prefix + "k", "v", lease=lease.id)
    info = client.lease_time_to_live(lease.id)
    assert (info.id, info.granted_ttl, info.keys) == (lease.id, 30, [prefix + "k"])
    assert 0 < info.ttl <= 30
    assert client.get(prefix + "k").lease == lease.id  # type: ignore[union-attr]


def test_lease_expiry_deletes_its_keys(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(1)
    client.put(prefix + "k", "v", lease=lease.id)
    with client.watch_prefix(prefix) as watch:
        assert next(watch).created
        started = time.monotonic()
        event = next(watch).events[0]  # no keep-alive: etcd deletes the key after ~1 s
    assert (event.type, event.kv.key) == ("DELETE", prefix + "k")
    assert time.monotonic() - started < 3
    with pytest.raises(LeaseLost):
        client.lease_keepalive(lease.id)


def test_keepalive_keeps_a_lease_past_its_ttl(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(1)
    client.put(prefix + "k", "v", lease=lease.id)
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        assert client.lease_keepalive(lease.id) == 1
        time.sleep(0.25)
    assert client.get(prefix + "k") is not None


def test_revoke_deletes_the_keys_and_a_second_revoke_is_fine(
    client: EtcdClient, prefix: str
) -> None:
    lease = client.lease_grant(30)
    client.put(prefix + "k", "v", lease=lease.id)
    client.lease_revoke(lease.id)
    assert client.get(prefix + "k") is None
    client.lease_revoke(lease.id)


def test_put_under_a_revoked_lease_raises_lease_lost(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(30)
    client.lease_revoke(lease.id)
    with pytest.raises(LeaseLost, match="requested lease not found"):
        client.put(prefix + "k", "v", lease=lease.id)


# -- watches -----------------------------------------------------------------------------------


def test_watch_receives_put_and_delete_within_milliseconds(client: EtcdClient, prefix: str) -> None:
    with client.watch_prefix(prefix, prev_kv=True) as watch:
        assert next(watch).created
        sent = time.perf_counter()
        put = client.put(prefix + "k", "v")
        response = next(watch)
        latency = time.perf_counter() - sent
        client.delete(prefix + "k")
        deleted = next(watch)
    [event] = response.events
    assert (event.type, event.kv.key, event.kv.value) == ("PUT", prefix + "k", b"v")
    assert event.kv.mod_revision == response.revision == put.revision
    assert latency < 0.5
    [gone] = deleted.events
    assert (gone.type, gone.kv.key, gone.prev_kv.value) == ("DELETE", prefix + "k", b"v")  # type: ignore[union-attr]


def test_watch_ignores_keys_outside_the_prefix(client: EtcdClient, prefix: str) -> None:
    with client.watch_prefix(prefix + "in/") as watch:
        next(watch)
        client.put(prefix + "out", "x")
        client.put(prefix + "in/k", "y")
        assert [e.kv.key for e in next(watch).events] == [prefix + "in/k"]


def test_watch_resumes_from_a_revision_without_missing_events(
    client: EtcdClient, prefix: str
) -> None:
    first = client.put(prefix + "a", "1")
    client.put(prefix + "a", "2")
    client.delete(prefix + "a")
    with client.watch_prefix(prefix, start_revision=first.revision) as watch:
        assert next(watch).created
        events = next(watch).events
    assert [(e.type, e.kv.value) for e in events] == [("PUT", b"1"), ("PUT", b"2"), ("DELETE", b"")]
    assert watch.next_revision == events[-1].kv.mod_revision + 1


def test_watch_from_a_compacted_revision_raises_compacted(
    client: EtcdClient, prefix: str, etcd_server: EtcdServer
) -> None:
    old = client.put(prefix + "k", "1")
    new = client.put(prefix + "k", "2")
    httpx.post(
        etcd_server.endpoint + "/v3/kv/compaction", json={"revision": str(new.revision)}
    ).raise_for_status()
    watch = client.watch_prefix(prefix, start_revision=old.revision)
    with watch, pytest.raises(EtcdCompacted) as info:
        list(watch)
    assert info.value.compact_revision == new.revision


def test_watch_closed_from_another_thread_stops_the_iterating_thread(
    client: EtcdClient, prefix: str
) -> None:
    watch = client.watch_prefix(prefix)
    assert next(watch).created
    seen: list[WatchResponse] = []
    reader = threading.Thread(target=lambda: seen.extend(watch))
    reader.start()
    time.sleep(0.05)  # let the reader block in its read
    closed_at = time.monotonic()
    watch.close()
    reader.join(2)
    assert not reader.is_alive()
    assert time.monotonic() - closed_at < 0.5
    assert seen == []
    assert list(watch) == []


def test_idle_watch_gets_progress_notifications(
    make_etcd: Callable[..., EtcdServer], prefix: str
) -> None:
    server = make_etcd(extra_args=["--experimental-watch-progress-notify-interval=200ms"])
    with EtcdClient(server.endpoint) as client:
        revision = client.put("/elsewhere", "x").revision
        with client.watch_prefix(prefix) as watch:
            assert next(watch).created
            progress = next(watch)
    assert (progress.events, progress.revision) == ([], revision)
    assert watch.next_revision == revision + 1


def test_silent_watch_raises_unavailable_after_read_timeout(
    client: EtcdClient, prefix: str
) -> None:
    with client.watch_prefix(prefix, read_timeout=0.3) as watch:
        assert next(watch).created
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="ReadTimeout"):
            next(watch)
    assert 0.25 < time.monotonic() - started < 2
