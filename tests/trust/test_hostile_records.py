"""A hostile record written by hand into a real etcd changes nothing but its own entry
(issue 12, finding 1): the view, the client, a starting member, the CLI and the edge go on."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import meshware
from meshware import InstanceRecord, RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._core.records import instance_key
from meshware._member import Member
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer

from .conftest import HTTPServers

HOSTILE = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "segments": json.dumps(
        {
            "schema": 1,
            "service": "evil",
            "instance": "e1",
            "url": "http://127.0.0.1:9",
            "routes": [{"template": "/s" * 1000, "methods": ["GET"]}],
        }
    ).encode(),
    "newline-url": json.dumps(
        {
            "schema": 1,
            "service": "evil",
            "instance": "e1",
            "url": "http://127.0.0.1:9\n",
            "routes": [{"template": "/users/{id}", "methods": ["GET"]}],
        }
    ).encode(),
    "metadata-url": json.dumps(
        {
            "schema": 1,
            "service": "evil",
            "instance": "e1",
            "url": "http://169.254.169.254",
            "routes": [{"template": "/evil", "methods": ["GET"], "public": True}],
        }
    ).encode(),
    "surrogate": b'{"schema":1,"service":"evil","instance":"e1","url":"http://127.0.0.1:9",'
    b'"routes":[{"template":"/evil","methods":["GET"],"name":"\\ud800","public":true}]}',
}


@pytest.fixture(params=sorted(HOSTILE))
def hostile_mesh(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    mesh_prefix: str,
    http_servers: HTTPServers,
) -> tuple[list[str], str]:
    """etcd holds a good ``users`` record with a live server, and one hostile record."""
    url = http_servers.start()
    users = InstanceRecord(
        "users", "u1", url, (RouteSpec("/users/{id:int}", ("GET",), public=True),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        client.put(instance_key(mesh_prefix, "users", "u1"), users.encode())
        client.put(instance_key(mesh_prefix, "evil", "e1"), HOSTILE[request.param])
    return ["--etcd", etcd_server.endpoint, "--prefix", mesh_prefix], url


def test_the_view_and_the_client_go_on(
    hostile_mesh: tuple[list[str], str], etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    with meshware.connect(etcd_endpoints=etcd_server.endpoint, prefix=mesh_prefix) as view:
        assert view.resolve("GET", "/users/7").service == "users"
        assert any("evil" in key for key in view.table.rejected)
        with meshware.Client(mesh=view) as client:
            assert client.get("/users/7").status_code == 200
        # the view is not stuck on the hostile revision: a later record is seen
        later = InstanceRecord(
            "later", "l1", "http://127.0.0.1:1", (RouteSpec("/later", ("GET",)),)
        )
        with EtcdClient(etcd_server.endpoint) as c:
            c.put(instance_key(mesh_prefix, "later", "l1"), later.encode())
            c.put(instance_key(mesh_prefix, "evil", "e2"), HOSTILE["deep"])
        view.wait_for(lambda t: "later" in t.services, timeout=5)
        assert view.connected


def test_a_member_starts_and_registers_even_in_strict_mode(
    hostile_mesh: tuple[list[str], str], etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    settings = MemberSettings(
        service="orders",
        etcd=EtcdSettings(endpoints=(etcd_server.endpoint,), prefix=mesh_prefix),
        advertise_url="http://127.0.0.1:8123",
        lease_ttl=2,
        strict=True,
        drain_delay=0,
    )
    member = Member(
        settings,
        routes=lambda: [RouteSpec("/orders", ("GET",))],
        routing="specificity",
        framework="test",
    )
    member.start()
    try:
        assert member.wait_registered(5)
    finally:
        member.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["routes"],
        ["routes", "--json"],
        ["resolve", "GET", "/users/7"],
        ["instances"],
        ["instances", "--json"],
    ],
)
def test_the_cli_goes_on(hostile_mesh: tuple[list[str], str], command: list[str]) -> None:
    options, url = hostile_mesh
    result = CliRunner().invoke(main, [*command, *options])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    assert "users" in result.output or url in result.output


def test_the_edge_goes_on(hostile_mesh: tuple[list[str], str]) -> None:
    from meshware.edge.nginx import find_nginx

    options, _ = hostile_mesh
    check: list[str] = []
    try:
        find_nginx()
    except Exception:
        check = ["--no-check"]
    result = CliRunner().invoke(
        main, ["edge", "nginx", "--listen", "127.0.0.1:8099", *check, *options]
    )
    assert result.exit_code == 0, result.output
    config = result.output[result.output.index("# Generated") :]  # after the warnings
    assert "/users/" in config
    assert "evil" not in config
    assert "169.254" not in config
