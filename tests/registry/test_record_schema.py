"""MESHWARE_RECORD_SCHEMA: members write schema 2 by default, schema 1 during a migration."""

from __future__ import annotations

import json

import pytest

from meshware import ConfigError, InstanceRecord, MeshView, RouteSpec
from meshware._config import MemberSettings
from meshware._core.records import instance_key
from meshware._registrar import Registrar
from meshware.registry import MemoryRegistry

PREFIX = "/meshware"
RECORD = InstanceRecord("users", "u1", "http://u:1", (RouteSpec("/users/{id:int}", ("GET",)),))


def stored(registry: MemoryRegistry) -> dict[str, object]:
    (entry,) = [e for e in registry.snapshot(PREFIX + "/v1/instances/").entries]
    return json.loads(entry.value)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("env", "schema"), [({}, 2), ({"MESHWARE_RECORD_SCHEMA": "1"}, 1)])
def test_the_setting_chooses_what_members_write(env: dict[str, str], schema: int) -> None:
    settings = MemberSettings.load({"service": "users"}, env=env)
    registry = MemoryRegistry()
    registrar = Registrar(registry, RECORD, prefix=PREFIX, ttl=5, schema=settings.record_schema)
    assert registrar.start()
    data = stored(registry)
    assert data["schema"] == schema
    assert ("routes" in data) == (schema == 1)
    sets = registry.snapshot(PREFIX + "/v1/routesets/").entries
    assert len(sets) == (schema == 2)
    registrar.withdraw()


@pytest.mark.parametrize("value", ["3", "0", "1.5", "two"])
def test_a_wrong_schema_setting_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="MESHWARE_RECORD_SCHEMA"):
        MemberSettings.load({"service": "users"}, env={"MESHWARE_RECORD_SCHEMA": value})


def test_a_view_follows_a_schema_2_member_through_join_drain_and_leave() -> None:
    registry = MemoryRegistry()
    with MeshView(registry, PREFIX) as view:
        registrar = Registrar(registry, RECORD, prefix=PREFIX, ttl=5)
        assert registrar.start()
        found = view.wait_for(lambda t: "users" in t.services).resolve("GET", "/users/1")
        assert [i.url for i in found.instances] == ["http://u:1"]
        registrar.drain()
        view.wait_for(lambda t: not t.resolve("GET", "/users/1").instances)
        registrar.withdraw()
        view.wait_for(lambda t: not t.services)
        assert view.table.rejected == {}
        assert registry.revision  # the set stays until its lease expires; nothing is rejected
    assert instance_key(PREFIX, "users", "u1") not in {
        e.key for e in registry.snapshot(PREFIX + "/").entries
    }
