"""A conformance suite for registry backends: ``check_registry(make)``.

meshware runs it against :class:`~meshware.registry.MemoryRegistry` and against a real etcd in
its own tests, so the fake mesh cannot drift from the real thing; a third-party backend can run
it too. Each check uses its own key prefix. ``wait_lease_expiry(registry, ttl)`` must make a
lease of ``ttl`` seconds expire: advance a fake clock and call ``expire_leases()``, or, for a
real etcd, wait.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from .._core.table import Delete, Update, Upsert
from .._errors import EtcdCompacted, LeaseLost
from ..registry.base import Registry

__all__ = ["check_registry"]


def _collect(
    registry: Registry, prefix: str, start: int, want: int, timeout: float = 5.0
) -> list[Update]:
    """The first ``want`` updates of a watch from ``start`` (raises AssertionError on timeout)."""
    watch = registry.watch(prefix, start)
    got: list[Update] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            for batch in watch:
                got.extend(batch)
                if len(got) >= want:
                    return
        except BaseException as exc:  # reported below
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    watch.close()
    thread.join(2)
    if error:
        raise error[0]
    assert len(got) >= want, f"watch delivered {len(got)} of {want} updates in {timeout} s"
    return got


def check_registry(
    make: Callable[[], Registry],
    *,
    wait_lease_expiry: Callable[[Registry, int], None],
    compact: Callable[[Registry, int], None] | None = None,
) -> list[str]:
    """Run every check against fresh registries from ``make``; the names of the checks run.

    Raises ``AssertionError`` (or the backend's exception) at the first failure.
    """
    ran = []
    checks: list[Callable[..., None]] = [
        _put_and_snapshot_keep_revisions,
        _delete_removes_a_key,
        _watch_replays_from_a_revision,
        _revoke_deletes_leased_keys,
        _keepalive_of_an_unknown_lease_is_lease_lost,
        _put_with_an_unknown_lease_is_lease_lost,
        _expired_lease_deletes_keys,
        _create_never_overwrites,
        _route_sets_join_their_records,
    ]
    if compact is not None:
        checks.append(_watch_below_compaction_raises)
    for check in checks:
        registry = make()
        prefix = f"/conformance/{uuid.uuid4().hex[:10]}/"
        try:
            kwargs: dict[str, Any] = {}
            if check is _expired_lease_deletes_keys:
                kwargs["wait"] = wait_lease_expiry
            if check is _watch_below_compaction_raises:
                kwargs["compact"] = compact
            check(registry, prefix, **kwargs)
        finally:
            registry.close()
        ran.append(check.__name__.strip("_"))
    return ran


def _put_and_snapshot_keep_revisions(registry: Registry, prefix: str) -> None:
    r1 = registry.put(prefix + "a", b"1")
    r2 = registry.put(prefix + "a", b"2")
    r3 = registry.put(prefix + "b", b"3")
    assert r1 < r2 < r3, "every write must bump the revision"
    snap = registry.snapshot(prefix)
    assert snap.revision >= r3
    by_key = {e.key: e for e in snap.entries}
    assert sorted(by_key) == [prefix + "a", prefix + "b"]
    assert by_key[prefix + "a"].value == b"2"
    assert by_key[prefix + "a"].create_revision == r1, "create_revision is kept across updates"
    assert by_key[prefix + "a"].mod_revision == r2


def _delete_removes_a_key(registry: Registry, prefix: str) -> None:
    registry.put(prefix + "a", b"1")
    registry.delete(prefix + "a")
    registry.delete(prefix + "missing")  # not an error
    assert registry.snapshot(prefix).entries == ()


def _watch_replays_from_a_revision(registry: Registry, prefix: str) -> None:
    start = registry.put(prefix + "a", b"1")
    registry.put(prefix + "other-prefix-is-ignored/../x", b"y")
    registry.put("/elsewhere/" + prefix, b"not ours")
    registry.delete(prefix + "a")
    got = _collect(registry, prefix, start, 3)
    kinds = [
        (type(u).__name__, u.entry.key if isinstance(u, Upsert) else getattr(u, "key", ""))
        for u in got[:3]
    ]
    assert kinds == [
        ("Upsert", prefix + "a"),
        ("Upsert", prefix + "other-prefix-is-ignored/../x"),
        ("Delete", prefix + "a"),
    ], kinds
    revisions = [u.revision for u in got[:3]]
    assert revisions == sorted(revisions) and revisions[0] == start


def _revoke_deletes_leased_keys(registry: Registry, prefix: str) -> None:
    lease = registry.grant(30)
    registry.put(prefix + "leased", b"x", lease=lease)
    registry.put(prefix + "free", b"y")
    registry.revoke(lease)
    registry.revoke(lease)  # already gone: fine
    assert [e.key for e in registry.snapshot(prefix).entries] == [prefix + "free"]


def _keepalive_of_an_unknown_lease_is_lease_lost(registry: Registry, prefix: str) -> None:
    lease = registry.grant(30)
    registry.revoke(lease)
    try:
        registry.keepalive(lease)
    except LeaseLost:
        return
    raise AssertionError("keepalive of a revoked lease must raise LeaseLost")


def _put_with_an_unknown_lease_is_lease_lost(registry: Registry, prefix: str) -> None:
    lease = registry.grant(30)
    registry.revoke(lease)
    try:
        registry.put(prefix + "k", b"v", lease=lease)
    except LeaseLost:
        return
    raise AssertionError("put under a revoked lease must raise LeaseLost")


def _create_never_overwrites(registry: Registry, prefix: str) -> None:
    lease = registry.grant(30)
    assert registry.create(prefix + "k", b"first", lease=lease) is None, "create writes a new key"
    existing = registry.create(prefix + "k", b"second")
    assert existing is not None, "create must not overwrite an existing key"
    assert (existing.value, existing.lease) == (b"first", lease), "create returns the key as is"
    (entry,) = registry.snapshot(prefix).entries
    assert (entry.value, entry.lease) == (b"first", lease), "snapshots carry each key's lease"
    registry.revoke(lease)
    try:
        registry.create(prefix + "other", b"v", lease=lease)
    except LeaseLost:
        return
    raise AssertionError("create under a revoked lease must raise LeaseLost")


def _route_sets_join_their_records(registry: Registry, prefix: str) -> None:
    """A member publishing a schema-2 record (a route set and a small record) is routable."""
    from .._core.records import InstanceRecord, RouteSpec
    from .._core.routesets import assemble
    from .._core.table import RoutingTable
    from .._registrar import Registrar

    base = prefix.rstrip("/")
    routes = (RouteSpec("/conformance/{id:int}", ("GET",)),)
    registrars = [
        Registrar(
            registry, InstanceRecord("svc", f"i{n}", f"http://h{n}:80", routes), prefix=base, ttl=30
        )
        for n in range(2)
    ]
    for registrar in registrars:
        assert registrar.start(), "a schema-2 member registers"
    try:
        table = RoutingTable.empty(base).apply(assemble(base, registry.snapshot(prefix)))
        assert table.rejected == {}, table.rejected
        found = table.resolve("GET", "/conformance/7")
        assert len(found.instances) == 2, found.instances
        sets = [e for e in registry.snapshot(base + "/v1/routesets/").entries]
        assert len(sets) == 1, "instances with the same routes share one route set"
    finally:
        for registrar in registrars:
            registrar.withdraw()


def _expired_lease_deletes_keys(
    registry: Registry, prefix: str, wait: Callable[[Registry, int], None]
) -> None:
    lease = registry.grant(2)
    start = registry.put(prefix + "k", b"v", lease=lease)
    wait(registry, 2)
    assert registry.snapshot(prefix).entries == (), "an expired lease must delete its keys"
    got = _collect(registry, prefix, start, 2)
    assert isinstance(got[1], Delete) and got[1].key == prefix + "k"


def _watch_below_compaction_raises(
    registry: Registry, prefix: str, compact: Callable[[Registry, int], None]
) -> None:
    first = registry.put(prefix + "a", b"1")
    last = registry.put(prefix + "a", b"2")
    compact(registry, last)
    try:
        _collect(registry, prefix, first, 1, timeout=3)
    except EtcdCompacted as exc:
        assert exc.compact_revision >= first
        return
    raise AssertionError("a watch from a compacted revision must raise EtcdCompacted")
