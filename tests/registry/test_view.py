"""The live view: snapshot then watch; outages, compaction and idle streams change nothing."""

from __future__ import annotations

import logging

import pytest

from meshware import InstanceRecord, MeshView, RouteSpec
from meshware._core.records import instance_key
from meshware.etcd import EtcdClient
from meshware.registry import MemoryRegistry
from meshware.registry.etcd import EtcdRegistry
from meshware.testing.etcd import EtcdServer

PREFIX = "/meshware"


def record(service: str, iid: str = "1", path: str = "/x") -> InstanceRecord:
    return InstanceRecord(service, iid, f"http://{service}:1", (RouteSpec(path, ("GET",)),))


def put(registry: MemoryRegistry, rec: InstanceRecord) -> None:
    registry.put(instance_key(PREFIX, rec.service, rec.instance_id), rec.encode())


def test_start_loads_the_snapshot_before_returning() -> None:
    registry = MemoryRegistry()
    put(registry, record("a"))
    with MeshView(registry, PREFIX) as view:
        assert view.table.services == ("a",)


def test_changes_reach_the_table() -> None:
    registry = MemoryRegistry()
    with MeshView(registry, PREFIX) as view:
        put(registry, record("a"))
        view.wait_for(lambda t: "a" in t.services)
        registry.delete(instance_key(PREFIX, "a", "1"))
        view.wait_for(lambda t: not t.services)


def test_outage_keeps_the_last_known_table_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    registry = MemoryRegistry()
    put(registry, record("a"))
    with MeshView(registry, PREFIX) as view, caplog.at_level(logging.WARNING, "meshware.view"):
        before = view.table
        registry.outage()
        view.wait_for(lambda t: not view.connected, timeout=5)
        assert view.table is before
        assert view.resolve("GET", "/x").service == "a"
        registry.outage(False)
        put(registry, record("b", path="/y"))
        view.wait_for(lambda t: "b" in t.services, timeout=5)
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_compacted_revision_triggers_a_full_relist() -> None:
    registry = MemoryRegistry()
    with MeshView(registry, PREFIX) as view:
        put(registry, record("a"))
        view.wait_for(lambda t: "a" in t.services)
        view.stop()  # fall behind: changes happen while nobody watches, then history is compacted
        put(registry, record("b", path="/y"))
        registry.delete(instance_key(PREFIX, "a", "1"))
        registry.compact()
        view.start()
        view.wait_for(lambda t: t.services == ("b",), timeout=5)


def test_idle_etcd_watch_is_reopened_quietly(
    etcd_server: EtcdServer, mesh_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = EtcdRegistry(EtcdClient(etcd_server.endpoint), watch_idle_timeout=0.2)
    with caplog.at_level(logging.WARNING, "meshware.view"), MeshView(registry, mesh_prefix) as view:
        watch = registry.watch(mesh_prefix + "/", 0)
        assert list(watch) == [[]]  # the `created` confirmation, then a quiet end after 0.2 s
        rec = record("late")
        registry.put(instance_key(mesh_prefix, "late", "1"), rec.encode())
        view.wait_for(lambda t: "late" in t.services, timeout=5)
        assert view.connected
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_a_new_conflict_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = MemoryRegistry()
    put(registry, record("first", path="/same"))
    with caplog.at_level(logging.WARNING, "meshware.view"), MeshView(registry, PREFIX) as view:
        put(registry, record("second", path="/same"))
        view.wait_for(lambda t: "second" in t.services)
        put(registry, record("third", path="/other"))
        view.wait_for(lambda t: "third" in t.services)
    logged = [r.getMessage() for r in caplog.records if "conflict" in r.getMessage()]
    assert logged == [
        "route conflict: GET /same is claimed by first, second; first wins (oldest registration)"
    ]


def test_while_etcd_is_down_the_view_stays_disconnected_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: opening a watch is lazy, so it must not count as the registry answering."""
    seen: list[bool] = []
    with EtcdServer() as etcd:
        registry = EtcdRegistry(EtcdClient(etcd.endpoint, timeout=0.5))
        with MeshView(registry, PREFIX) as view, caplog.at_level(logging.WARNING, "meshware.view"):
            etcd.stop(keep_data=True)
            view.wait_for(lambda t: not view.connected, timeout=10)

            def record_state(t: object) -> bool:
                seen.append(view.connected)  # called at every change of `connected`
                return False

            with pytest.raises(TimeoutError):
                view.wait_for(record_state, timeout=1.5)
            stale = view.staleness
    assert not any(seen)
    assert stale is not None
    assert stale > 1.0
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1


# --------------------------------------------------------------------------- never loaded


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_table_never_loaded_names_its_cause_instead_of_a_missing_route() -> None:
    import time

    import meshware

    view = meshware.connect(etcd_endpoints=f"http://127.0.0.1:{_closed_port()}", prefix=PREFIX)
    try:
        assert not view.loaded
        with meshware.Client(mesh=view) as client, pytest.raises(meshware.TableNotLoaded) as info:
            client.get("/users/1")
        error = info.value
        assert isinstance(error, meshware.MeshError)
        assert not isinstance(error, meshware.NoRouteError)
        text = str(error)
        assert "GET /users/1" in text
        assert "never loaded" in text
        assert time.strftime("%H:", time.localtime(error.since)) in text  # since HH:MM:SS
        assert error.cause
        assert error.cause in text
        assert "MESHWARE_ETCD_ENDPOINTS" in text
        assert error.request.url.path == "/users/1"
        with pytest.raises(meshware.TableNotLoaded):
            view.resolve("GET", "/users/1")
    finally:
        view.stop()


def test_once_loaded_an_unknown_path_is_a_missing_route_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import meshware

    registry = MemoryRegistry()
    registry.outage()
    with caplog.at_level(logging.INFO, "meshware.view"), MeshView(registry, PREFIX) as view:
        with pytest.raises(meshware.TableNotLoaded):
            view.resolve("GET", "/x")
        registry.outage(False)
        put(registry, record("a"))
        view.wait_for(lambda t: "a" in t.services, timeout=5)
        assert view.loaded
        with pytest.raises(meshware.NoRouteError) as info:
            view.resolve("GET", "/nope")
        assert not isinstance(info.value, meshware.TableNotLoaded)
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1, caplog.text  # one INFO line, saying the first table loaded now
    assert recovered[0].levelno == logging.INFO
    assert "first table loaded" in recovered[0].getMessage()
