"""`meshware weight` and `meshware edge nginx` against a real etcd: overrides are stored where
the contract says, listed, cleared; a one-shot render takes the overrides and the live edges."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from meshware import InstanceRecord, RouteSpec
from meshware._core.limits import RouteLimits
from meshware._core.records import instance_key
from meshware._core.traffic import edge_key
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer

LOGIN = RouteSpec("/login", ("POST",), public=True, limits=RouteLimits(rate=20, burst=10))


@pytest.fixture
def mesh(etcd_server: EtcdServer, mesh_prefix: str) -> list[str]:
    with EtcdClient(etcd_server.endpoint) as client:
        for i, version in enumerate(("v1", "v2")):
            rec = InstanceRecord(
                "users", f"u{i}", f"http://127.0.0.1:{8001 + i}", (LOGIN,), version=version
            )
            client.put(instance_key(mesh_prefix, "users", rec.instance_id), rec.encode())
        client.put(edge_key(mesh_prefix, "other-edge"), b"{}")
        client.put(edge_key(mesh_prefix, "third-edge"), b"{}")
    return ["--etcd", etcd_server.endpoint, "--prefix", mesh_prefix]


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_weight_set_list_and_clear(mesh: list[str], etcd_server: EtcdServer) -> None:
    assert "no weight overrides" in run("weight", *mesh)
    run("weight", "users", "5", "--version", "v2", *mesh)
    run("weight", "users", "0", "--instance", "u0", *mesh)
    rows = json.loads(run("weight", "--json", *mesh))
    assert {(r["scope"], r["name"], r["weight"]) for r in rows} == {
        ("version", "v2", 5),
        ("instance", "u0", 0),
    }
    with EtcdClient(etcd_server.endpoint) as client:
        value = client.get(f"{mesh[3]}/v1/overrides/weights/users/version/v2")
    assert value is not None
    assert json.loads(value.value) == {"weight": 5}
    assert "removed 2" in run("weight", "users", "--clear", *mesh)
    assert "no weight overrides" in run("weight", *mesh)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["users"], "WEIGHT"),
        (["users", "10001"], "0-10000"),
        (["users", "1", "--instance", "a", "--version", "b"], "not both"),
        (["Users", "1"], "SERVICE"),
        (["--instance", "a"], "need a SERVICE"),
    ],
)
def test_weight_usage_errors_say_what_is_wrong(
    mesh: list[str], args: list[str], problem: str
) -> None:
    result = CliRunner().invoke(main, ["weight", *args, *mesh])
    assert result.exit_code == 2
    assert problem in result.output


def test_a_one_shot_render_shares_the_rate_with_the_registered_edges(mesh: list[str]) -> None:
    run("weight", "users", "0", "--instance", "u0", *mesh)
    text = run("edge", "nginx", "--no-check", *mesh)
    assert "rate=10r/s" in text  # 20/s over the 2 registered edges
    assert "burst=5" in text
    assert "server 127.0.0.1:8001 down" in text
    assert "rate=20r/s" in run("edge", "nginx", "--no-check", "--edges", "1", *mesh)
