"""The `meshware` command against a real etcd: tables for people, JSON for scripts, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from meshware import InstanceRecord, RouteSpec
from meshware._core.records import instance_key
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer


@pytest.fixture
def mesh(etcd_server: EtcdServer, mesh_prefix: str) -> list[str]:
    """Two services in etcd, one conflicting route; the CLI options that reach them."""
    users = InstanceRecord(
        "users",
        "u1",
        "http://127.0.0.1:8001",
        (
            RouteSpec("/users/{id:int}", ("GET", "HEAD"), name="get_user", public=True),
            RouteSpec("/shared", ("GET",)),
        ),
    )
    other = InstanceRecord(
        "other", "o1", "http://127.0.0.1:8002", (RouteSpec("/shared", ("GET",)),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        for r in (users, other):
            client.put(instance_key(mesh_prefix, r.service, r.instance_id), r.encode())
    return ["--etcd", etcd_server.endpoint, "--prefix", mesh_prefix]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_routes_lists_every_route_with_its_service_and_conflict(mesh: list[str]) -> None:
    code, out = run("routes", *mesh)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["METHODS", "TEMPLATE", "SERVICE", "INSTANCES", "PUBLIC", "CONFLICT"]
    assert any("/users/{id:int}" in line and "users" in line and "yes" in line for line in lines)
    assert any("/shared" in line and "other" in line and "lost to users" in line for line in lines)


def test_routes_json_is_machine_readable(mesh: list[str]) -> None:
    code, out = run("routes", "--json", *mesh)
    assert code == 0
    routes = json.loads(out)["routes"]
    user = next(r for r in routes if r["template"] == "/users/{id:int}")
    assert (user["service"], user["instances"], user["public"]) == ("users", 1, True)


def test_instances_of_one_service(mesh: list[str]) -> None:
    code, out = run("instances", "users", "--json", *mesh)
    assert code == 0
    (instance,) = json.loads(out)["instances"]
    assert (instance["url"], instance["state"]) == ("http://127.0.0.1:8001", "serving")


def test_resolve_prints_service_route_params_and_instances(mesh: list[str]) -> None:
    code, out = run("resolve", "GET", "/users/42", *mesh)
    assert code == 0
    assert "service:   users" in out
    assert '{"id": 42}' in out  # typed as the Python API gives it: {'id': 42}
    assert "http://127.0.0.1:8001" in out


def test_resolve_params_are_typed_as_in_the_python_api(mesh: list[str]) -> None:
    code, out = run("resolve", "GET", "/users/7", "--json", *mesh)
    assert code == 0
    assert json.loads(out)["params"] == {"id": 7}


def test_resolve_without_a_method_says_the_method_is_missing(mesh: list[str]) -> None:
    code, out = run("resolve", "/users/42", *mesh)
    assert code == 2
    assert "the HTTP method is missing before the path" in out
    assert "meshware resolve GET /users/42" in out
    assert "Missing argument" not in out


def test_resolve_with_arguments_swapped_says_which_comes_first(mesh: list[str]) -> None:
    code, out = run("resolve", "/users/42", "GET", *mesh)
    assert code == 2
    assert "the method comes first: meshware resolve GET /users/42" in out


def test_resolve_rejects_an_unknown_method_and_lists_the_expected_ones(mesh: list[str]) -> None:
    code, out = run("resolve", "GTE", "/users/42", *mesh)
    assert code == 2
    assert "unknown HTTP method 'GTE'" in out
    assert "GET, HEAD, POST" in out
    code, out = run("resolve", "get", "/users/42", *mesh)  # case does not matter
    assert code == 0


def test_resolve_unknown_path_exits_1_with_the_reason(mesh: list[str]) -> None:
    code, out = run("resolve", "GET", "/nope", *mesh)
    assert code == 1
    assert "no route for GET /nope" in out


def test_unreachable_etcd_exits_3_naming_the_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, out = run("routes", "--etcd", dead)
    assert code == 3
    assert dead in out


def test_bad_endpoint_setting_exits_2() -> None:
    code, out = run("routes", "--etcd", "etcd.example:2379")
    assert code == 2
    assert "http:// or https:// URL" in out


def test_dev_runs_an_etcd_until_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshware.cli", "dev", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"etcd http://127.0.0.1:{port}" in proc.stdout.readline()
        assert (
            httpx.post(f"http://127.0.0.1:{port}/v3/kv/range", json={"key": "eA=="}).status_code
            == 200
        )
        members = httpx.post(f"http://127.0.0.1:{port}/v3/cluster/member/list").json()
        assert members["members"][0]["name"].startswith("meshware-dev-")  # not meshware-test
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/v3/kv/range", json={"key": "eA=="})


def test_dev_on_a_busy_port_says_so_in_one_line_and_suggests_another() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "meshware.cli", "dev", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no etcd JSON log lines
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0]
    assert f"--port {port + 1}" in lines[0]


def test_edge_nginx_prints_a_checked_configuration_of_the_public_routes(
    mesh: list[str], tmp_path: object
) -> None:
    from meshware.edge.nginx import find_nginx

    try:
        find_nginx()
    except Exception as exc:
        pytest.skip(str(exc))
    code, out = run("edge", "nginx", "--listen", "127.0.0.1:8099", *mesh)
    assert code == 0, out
    assert '"^/users/([0-9]+)$"' in out
    assert "/shared" not in out  # not public


def test_edge_nginx_writes_a_file_and_says_when_it_did_not_change(
    mesh: list[str], tmp_path: object
) -> None:
    out_file = f"{tmp_path}/mesh.conf"
    args = ["edge", "nginx", "--no-check", "--include", "--out", out_file, *mesh]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "written" in result.output
    result = CliRunner().invoke(main, args)
    assert "unchanged" in result.output


def test_edge_nginx_rejects_a_bad_rewrite(mesh: list[str]) -> None:
    code, out = run("edge", "nginx", "--no-check", "--rewrite", "users", *mesh)
    assert code == 2
    assert "SERVICE:PUBLIC=INTERNAL" in out


def test_routes_watch_redraws_when_a_record_is_added_and_removed(
    etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    import queue
    import threading
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshware.cli",
            "routes",
            "--watch",
            "--etcd",
            etcd_server.endpoint,
            "--prefix",
            mesh_prefix,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()

    def screen_with(text: str, timeout: float = 10.0) -> list[str]:
        """The lines up to and including the first screen that shows ``text``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return seen
        raise AssertionError(f"{text!r} never shown; output:\n" + "\n".join(seen))

    record = InstanceRecord(
        "inventory", "i1", "http://127.0.0.1:8009", (RouteSpec("/stock/{sku}", ("GET",)),)
    )
    key = instance_key(mesh_prefix, "inventory", "i1")
    try:
        first = screen_with("(no routes yet")
        assert "etcd connected" in "\n".join(first)
        with EtcdClient(etcd_server.endpoint) as client:
            client.put(key, record.encode())
            added = screen_with("/stock/{sku}")
            assert added[-1].split() == ["GET", "/stock/{sku}", "inventory", "1"]
            client.delete(key)
        screen_with("(no routes yet")  # redrawn again when it leaves
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_routes_survives_a_record_holding_a_lone_surrogate(
    mesh: list[str], etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    bad = InstanceRecord(
        "sur", "s1", "http://127.0.0.1:8004", (RouteSpec("/x\ud800", ("GET",), public=True),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        client.put(instance_key(mesh_prefix, "sur", "s1"), bad.encode())
        client.put(instance_key(mesh_prefix, "s\udcff", "s2"), bad.encode())  # in the key too
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as a terminal takes it
    for args in (("routes",), ("routes", "--json"), ("resolve", "GET", "/users/1")):
        proc = subprocess.run(
            [sys.executable, "-m", "meshware.cli", *args, *mesh],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert b"users" in proc.stdout
