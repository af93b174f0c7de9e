"""Strict mode refuses to start (issue 12, finding 7): under gunicorn, uvicorn and Flask's dev
server, a service whose route another service already holds exits non-zero with the conflict
named (before, it logged "could not register" and kept serving, out of the mesh)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import meshware
from meshware import InstanceRecord, RouteSpec
from meshware._core.records import instance_key
from meshware.etcd import EtcdClient

from .conftest import APPS, Servers, free_port

COMMANDS = {
    "gunicorn": ["gunicorn", "-w", "2", "--log-level", "warning", "strict_apps:flask_app()"],
    "uvicorn": ["uvicorn", "--factory", "--log-level", "warning", "strict_apps:starlette_app"],
    "flask run": ["flask", "--app", "strict_apps:flask_app()", "run"],
}


@pytest.mark.parametrize("server", sorted(COMMANDS))
def test_strict_mode_exits_non_zero_naming_the_conflict(
    server: str, servers: Servers, mesh: meshware.MeshView
) -> None:
    users = InstanceRecord(
        "users", "u1", "http://127.0.0.1:9", (RouteSpec("/users/{id:int}", ("GET",)),)
    )
    with EtcdClient(servers.etcd.endpoint) as client:
        client.put(instance_key(servers.prefix, "users", "u1"), users.encode())
    mesh.wait_for(lambda t: "users" in t.services)
    port = str(free_port())
    bind = {"gunicorn": ["-b", f"127.0.0.1:{port}"], "uvicorn": ["--port", port]}
    command = COMMANDS[server] + bind.get(server, ["--port", port])
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=APPS,
        env=servers.env(MESHWARE_STRICT="true"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(f"{server}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1][:160]}")
    assert done.returncode != 0, done.stderr
    assert "GET /users/{:int} (held by users)" in done.stderr, done.stderr[-2000:]
    assert "clash" not in mesh.table.services
