"""Registration, withdrawal and expiry of real servers (gunicorn, uvicorn, flask) in a real etcd."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

import meshware
from meshware.testing.etcd import EtcdServer

from .conftest import EXAMPLES, Servers, free_port, wait_table


def has_instances(service: str, n: int = 1, records: int | None = None) -> object:
    def check(table: meshware.RoutingTable) -> bool:
        found = [i for i in table.instances(service) if i.serving]
        return len(found) == n and (
            records is None or sum(len(i.records) for i in found) == records
        )

    return check


def test_gunicorn_with_four_workers_is_one_instance_of_four_records(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    port = free_port()
    proc = servers.gunicorn("users_service:app", port, "-w", "4")
    table = wait_table(mesh, has_instances("users", 1, records=4), procs=(proc,))
    (instance,) = table.resolve("GET", "/users/1").instances
    assert instance.url == f"http://127.0.0.1:{port}"
    pids = {r.pid for _, r in table.records()}
    assert len(pids) == 4
    assert proc.pid not in pids  # workers, not the master


def test_gunicorn_with_uvicorn_workers_serves_fastapi_as_one_instance(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    port = free_port()
    proc = servers.gunicorn(
        "orders_service:app", port, "-w", "2", "-k", "uvicorn.workers.UvicornWorker"
    )
    table = wait_table(mesh, has_instances("orders", 1, records=2), procs=(proc,), timeout=30)
    assert [i.url for i in table.resolve("GET", "/orders").instances] == [
        f"http://127.0.0.1:{port}"
    ]
    proc.send_signal(signal.SIGTERM)
    mesh.wait_for(lambda t: not t.instances("orders"), timeout=5)


def test_gunicorn_preload_registers_each_worker_not_the_master(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    proc = servers.gunicorn("users_service:app", free_port(), "-w", "2", "--preload")
    table = wait_table(mesh, has_instances("users", 1, records=2), procs=(proc,))
    assert proc.pid not in {r.pid for _, r in table.records()}


def test_stopping_gunicorn_withdraws_in_under_a_second(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    proc = servers.gunicorn("users_service:app", free_port(), "-w", "2")
    wait_table(mesh, has_instances("users", 1, records=2), procs=(proc,))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    mesh.wait_for(lambda t: not t.instances("users"), timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert proc.wait(10) == 0


def test_uvicorn_fastapi_registers_and_resolves_with_params(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    port = free_port()
    proc = servers.uvicorn("orders_service:app", port)
    table = wait_table(mesh, has_instances("orders"), procs=(proc,))
    found = table.resolve("GET", "/orders/7")
    assert (found.service, found.route.template.text, found.params) == (
        "orders",
        "/orders/{order_id:int}",
        {"order_id": 7},
    )
    assert found.route.spec.public
    assert [i.url for i in found.instances] == [f"http://127.0.0.1:{port}"]


def test_uvicorn_graceful_stop_withdraws_in_under_a_second(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    proc = servers.uvicorn("orders_service:app", free_port())
    wait_table(mesh, has_instances("orders"), procs=(proc,))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    mesh.wait_for(lambda t: not t.instances("orders"), timeout=5)
    assert time.monotonic() - t0 < 1.0


def test_uvicorn_workers_share_one_instance(servers: Servers, mesh: meshware.MeshView) -> None:
    proc = servers.uvicorn("orders_service:app", free_port(), "--workers", "2")
    wait_table(mesh, has_instances("orders", 1, records=2), procs=(proc,), timeout=30)


def test_kill_9_record_disappears_within_the_lease_ttl(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    proc = servers.uvicorn("orders_service:app", free_port())  # MESHWARE_LEASE_TTL=2
    wait_table(mesh, has_instances("orders"), procs=(proc,))
    t0 = time.monotonic()
    proc.kill()
    proc.wait()
    mesh.wait_for(lambda t: not t.instances("orders"), timeout=6)
    elapsed = time.monotonic() - t0
    assert elapsed < 2 + 1.0, f"record lived {elapsed:.2f} s after kill -9 with a 2 s TTL"


def test_flask_debug_reloader_registers_only_the_serving_child(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    proc = servers.start(
        "flask", "--app", "users_service", "run", "--debug", "--port", str(free_port())
    )
    table = wait_table(mesh, has_instances("users", 1, records=1), procs=(proc,))
    ((_, record),) = table.records()
    assert record.pid != proc.pid  # the reloader's child serves; the parent only watches files


def test_etcdctl_shows_the_documented_record(
    servers: Servers, mesh: meshware.MeshView, etcd_server: EtcdServer
) -> None:
    proc = servers.gunicorn("users_service:app", free_port(), "-w", "1")
    wait_table(mesh, has_instances("users"), procs=(proc,))
    out = etcd_server.etcdctl("get", "--prefix", servers.prefix + "/v1/instances/users/")
    key, value = out.stdout.splitlines()[:2]
    record = json.loads(value)
    assert key == f"{servers.prefix}/v1/instances/users/{record['instance']}"
    header = {k: record[k] for k in ("schema", "service", "state", "framework")}
    assert header == {"schema": 2, "service": "users", "state": "serving", "framework": "flask"}
    assert "routes" not in record  # they are in the route set the record names
    ref = record["routeset"]
    out = etcd_server.etcdctl(
        "get", "--prefix", f"{servers.prefix}/v1/routesets/users/{ref['digest']}/"
    )
    lines = out.stdout.splitlines()
    assert lines[0] == f"{servers.prefix}/v1/routesets/users/{ref['digest']}/0000"
    routeset = json.loads(lines[1])
    assert (routeset["schema"], routeset["service"], routeset["routing"]) == (
        2,
        "users",
        "specificity",
    )
    assert ref["size"] == len(lines[1].encode())
    assert ref["digest"] == hashlib.sha256(lines[1].encode()).hexdigest()
    user_route = next(r for r in routeset["routes"] if r["template"] == "/users/{user_id:int}")
    assert user_route == {
        "template": "/users/{user_id:int}",
        "methods": ["GET", "HEAD", "OPTIONS"],
        "name": "get_user",
        "public": True,
        "timeout": 2.0,
    }


def test_garbage_under_the_prefix_warns_once_and_keeps_the_table(
    servers: Servers,
    mesh: meshware.MeshView,
    etcd_server: EtcdServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = servers.gunicorn("users_service:app", free_port(), "-w", "1")
    wait_table(mesh, has_instances("users"), procs=(proc,))
    bad_key = servers.prefix + "/v1/instances/users/garbage"
    with caplog.at_level("WARNING", logger="meshware.view"):
        etcd_server.etcdctl("put", bad_key, "{not json")
        table = mesh.wait_for(lambda t: bad_key in t.rejected, timeout=5)
    assert table.resolve("GET", "/users/1").service == "users"
    warnings = [r.getMessage() for r in caplog.records if bad_key in r.getMessage()]
    assert len(warnings) == 1
    assert "not JSON" in warnings[0]


def test_a_watching_process_sees_a_change_within_100_ms(
    mesh: meshware.MeshView, etcd_server: EtcdServer
) -> None:
    record = meshware.InstanceRecord(
        "probe", "p1", "http://127.0.0.1:9", (meshware.RouteSpec("/probe", ("GET",)),)
    )
    key = f"{mesh.prefix}/v1/instances/probe/p1"
    delays = []
    for _ in range(5):
        t0 = time.monotonic()
        etcd_server_client = httpx.post(
            f"{etcd_server.endpoint}/v3/kv/put",
            json={"key": _b64(key), "value": _b64(record.encode().decode())},
        )
        etcd_server_client.raise_for_status()
        mesh.wait_for(lambda t: "probe" in t.services, timeout=2)
        delays.append(time.monotonic() - t0)
        httpx.post(
            f"{etcd_server.endpoint}/v3/kv/deleterange", json={"key": _b64(key)}
        ).raise_for_status()
        mesh.wait_for(lambda t: "probe" not in t.services, timeout=2)
    assert sorted(delays)[2] < 0.1, delays


def test_lost_lease_is_replaced_and_the_record_put_again(
    servers: Servers, mesh: meshware.MeshView, etcd_server: EtcdServer
) -> None:
    proc = servers.uvicorn("orders_service:app", free_port())
    table = wait_table(mesh, has_instances("orders"), procs=(proc,))
    ((_, before),) = table.records()
    key = f"{servers.prefix}/v1/instances/orders/{before.instance_id}"
    lease = json.loads(etcd_server.etcdctl("get", key, "-w", "json").stdout)["kvs"][0]["lease"]
    etcd_server.etcdctl("lease", "revoke", format(lease, "x"))  # the record goes with its lease
    # back within ttl/3 + jitter, under a new lease (the view may never show the gap: a record
    # that vanishes without draining settles for 0.5 s before it leaves the table)
    deadline = time.monotonic() + 5
    while True:
        kvs = json.loads(etcd_server.etcdctl("get", key, "-w", "json").stdout).get("kvs", [])
        if kvs and kvs[0]["lease"] != lease:
            break
        assert time.monotonic() < deadline, "the record was not put again under a new lease"
        time.sleep(0.05)
    table = mesh.wait_for(lambda t: bool(t.instances("orders")), timeout=5)
    ((_, after),) = table.records()
    assert after.instance_id == before.instance_id


def test_etcd_down_for_10_s_changes_nothing_and_registrations_come_back(
    servers: Servers, mesh_prefix: str
) -> None:
    with EtcdServer() as etcd:
        servers.etcd = etcd
        port = free_port()
        proc = servers.uvicorn("orders_service:app", port)  # lease TTL 2 s: shorter than the outage
        with meshware.connect(etcd_endpoints=etcd.endpoint, prefix=mesh_prefix) as view:
            wait_table(view, has_instances("orders"), procs=(proc,))
            before = view.table
            etcd.stop(keep_data=True)
            view.wait_for(lambda t: not view.connected, timeout=5)
            outage = time.monotonic()
            with httpx.Client(timeout=2) as http:
                while time.monotonic() - outage < 10:
                    assert view.table is before  # the last-known table stays
                    assert view.resolve("GET", "/orders/7").instances
                    # the app keeps serving and sees no exception (its own mesh view is stale too)
                    assert http.get(f"http://127.0.0.1:{port}/orders").status_code == 200
                    time.sleep(0.5)  # pacing the probe requests, not waiting for an event
            assert proc.poll() is None
            etcd.start()
            view.wait_for(lambda t: view.connected, timeout=10)
            wait_table(view, has_instances("orders"), procs=(proc,), timeout=10)
            # the watch resumed: a new change is seen
            junk = f"{mesh_prefix}/v1/instances/orders/junk"
            etcd.etcdctl("put", junk, "x")
            view.wait_for(lambda t: junk in t.rejected, timeout=5)


def test_strict_mode_refuses_to_start_on_a_conflict(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    from flask import Flask

    from meshware.integrations.flask import Mesh

    first = servers.gunicorn("users_service:app", free_port(), "-w", "1")
    wait_table(mesh, has_instances("users"), procs=(first,))
    app = Flask("clash")
    app.add_url_rule("/users/<int:uid>", "clash", lambda uid: "")
    clash = Mesh(
        app,
        service="clash",
        strict=True,
        autostart=False,
        advertise_url="http://127.0.0.1:1",
        etcd_endpoints=servers.etcd.endpoint,
        prefix=servers.prefix,
    )
    assert clash.member is not None
    with pytest.raises(meshware.RouteConflictError, match=r"GET /users/\{:int\} \(held by users\)"):
        clash.member.start()
    assert "clash" not in mesh.table.services


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_settings_errors_name_the_setting(servers: Servers) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import users_service"],
        cwd=EXAMPLES,
        env=servers.env(MESHWARE_LEASE_TTL="soon"),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert b"MESHWARE_LEASE_TTL must be a number of seconds, got 'soon'" in proc.stderr


def test_flask_run_without_the_reloader_registers_itself(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    # werkzeug sets WERKZEUG_SERVER_FD without the reloader too: the process must not take
    # itself for a reloader parent (it used to, and never registered)
    port = free_port()
    proc = servers.start("flask", "--app", "users_service", "run", "--port", str(port))
    table = wait_table(mesh, has_instances("users", 1, records=1), procs=(proc,))
    ((_, record),) = table.records()
    assert record.pid == proc.pid
    assert record.url == f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_flask_debug_reloader_stopped_by_a_signal_leaves_at_once(
    servers: Servers, mesh: meshware.MeshView, sig: signal.Signals
) -> None:
    # The signal goes to the reloader parent only (as `kill PID` or a process manager does);
    # werkzeug's parent used to SIGKILL its serving child, whose record then lived until its
    # lease expired. The lease TTL is 5 s here, so "at once" is clearly not an expiry.
    proc = servers.start(
        "flask",
        "--app",
        "users_service",
        "run",
        "--debug",
        "--port",
        str(free_port()),
        MESHWARE_LEASE_TTL="5",
    )
    table = wait_table(mesh, has_instances("users", 1, records=1), procs=(proc,))
    ((_, record),) = table.records()
    child = record.pid
    assert child != proc.pid
    t0 = time.monotonic()
    proc.send_signal(sig)
    mesh.wait_for(lambda t: not t.instances("users"), timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"the child's record lived {elapsed:.2f} s after {sig.name}"
    assert proc.wait(10) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the serving child is gone too
