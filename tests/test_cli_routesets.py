"""`meshware routes`, `instances` and the edge read schema-1 and schema-2 records side by side."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from meshware import InstanceRecord, RouteSpec
from meshware._core.records import instance_key
from meshware._registrar import Registrar
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.registry.etcd import EtcdRegistry
from meshware.testing.etcd import EtcdServer

ROUTES = (RouteSpec("/users/{id:int}", ("GET",), name="get_user", public=True),)


@pytest.fixture
def mixed(etcd_server: EtcdServer, mesh_prefix: str) -> Iterator[tuple[list[str], str]]:
    """users: one schema-1 record written by hand, one schema-2 member; the CLI options."""
    by_hand = InstanceRecord("users", "u1", "http://127.0.0.1:8001", ROUTES)
    registry = EtcdRegistry(EtcdClient(etcd_server.endpoint))
    registry.put(instance_key(mesh_prefix, "users", "u1"), by_hand.encode())
    member = Registrar(
        registry,
        InstanceRecord("users", "u2", "http://127.0.0.1:8002", ROUTES),
        prefix=mesh_prefix,
        ttl=5,
    )
    assert member.start()
    assert member.routeset is not None
    yield ["--etcd", etcd_server.endpoint, "--prefix", mesh_prefix], member.routeset.routeset.digest
    member.withdraw()
    registry.close()


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_routes_counts_the_instances_of_both_schemas(mixed: tuple[list[str], str]) -> None:
    options, _ = mixed
    (route,) = json.loads(run("routes", "--json", *options))["routes"]
    assert (route["template"], route["instances"]) == ("/users/{id:int}", 2)
    assert "warning" not in run("routes", *options)


def test_instances_say_which_route_set_each_uses(mixed: tuple[list[str], str]) -> None:
    options, digest = mixed
    found = json.loads(run("instances", "users", "--json", *options))["instances"]
    by_url = {i["url"]: i["routesets"] for i in found}
    assert by_url == {"http://127.0.0.1:8001": [None], "http://127.0.0.1:8002": [digest]}


def test_the_edge_upstream_holds_both_instances(mixed: tuple[list[str], str]) -> None:
    options, _ = mixed
    out = run("edge", "nginx", "--no-check", "--listen", "127.0.0.1:8099", *options)
    assert '"^/users/([0-9]+)$"' in out
    assert "127.0.0.1:8001" in out
    assert "127.0.0.1:8002" in out
