"""The edge: nginx in front of the example services, exposing their public routes only.

    python examples/edge_demo.py

Starts a private etcd (unless $MESHWARE_ETCD_ENDPOINTS is set), the `users` (Flask, gunicorn)
and `orders` (FastAPI, uvicorn) services, renders an nginx configuration from the live table
with `meshware edge nginx` (validated by `nginx -t`), runs nginx with it, and calls through it:
public routes answer, everything else is a 404 from nginx itself. Then the same through
`meshware proxy --public-only`. Needs nginx (`apt-get install nginx-light`). Stops everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from demo import HERE, free_port, start, stop

import meshware
from meshware.testing.etcd import EtcdServer


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args} exited with status {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    sys.exit(f"nothing answered at {url}")


def show(base: str, method: str, path: str) -> None:
    r = httpx.request(method, base + path, timeout=5, trust_env=False)
    text = " ".join(r.text.split())
    if "<title>" in text:  # nginx's own error page: its title says it
        text = text.split("<title>", 1)[1].split("</title>", 1)[0]
    print(f"  {method} {path} -> {r.status_code} {text[:90]}")


def main() -> None:
    nginx = os.environ.get("NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        sys.exit("this demo needs nginx: apt-get install nginx-light (or set NGINX_BIN)")
    with ExitStack() as stack:
        endpoints = os.environ.get("MESHWARE_ETCD_ENDPOINTS")
        if not endpoints:
            endpoints = stack.enter_context(EtcdServer()).endpoint
        env = dict(os.environ, MESHWARE_ETCD_ENDPOINTS=endpoints, MESHWARE_LEASE_TTL="3")
        users_port, orders_port, edge_port, proxy_port = (free_port() for _ in range(4))
        for cmd in (
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{users_port}",
             "--log-level", "warning", "users_service:app"],
            [sys.executable, "-m", "uvicorn", "orders_service:app", "--port", str(orders_port),
             "--log-level", "warning"],
        ):  # fmt: skip
            stack.callback(stop, start(cmd, env))
        with meshware.connect(etcd_endpoints=endpoints) as mesh:
            mesh.wait_for(lambda t: {"users", "orders"} <= set(t.services), timeout=30)

        prefix = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshware-edge-")))
        conf = prefix / "nginx.conf"
        print("\n== meshware edge nginx (public routes only, checked with nginx -t)")
        subprocess.run(
            [sys.executable, "-m", "meshware.cli", "edge", "nginx", "--etcd", endpoints,
             "--listen", f"127.0.0.1:{edge_port}", "--nginx-prefix", str(prefix),
             "--out", str(conf), "--nginx", nginx],
            check=True,
        )  # fmt: skip
        print("".join(f"  {line}\n" for line in conf.read_text().splitlines() if "location" in line))
        user = ["-g", "user root;"] if os.geteuid() == 0 else []
        proc = start([nginx, "-p", str(prefix), "-c", str(conf), *user], env)
        stack.callback(stop, proc)
        base = f"http://127.0.0.1:{edge_port}"
        wait_http(base + "/", proc)
        print(f"\n== through nginx at {base}")
        for method, path in [
            ("GET", "/orders/7"),
            ("GET", "/users/1"),
            ("GET", "/users"),
            ("POST", "/users/admin/reindex"),
            ("DELETE", "/users/1"),
            ("GET", "/users/1/../admin/reindex"),
        ]:
            show(base, method, path)

        proxy = start(
            [sys.executable, "-m", "meshware.cli", "proxy", "--public-only", "--etcd", endpoints,
             "--listen", f"127.0.0.1:{proxy_port}"],
            env,
        )  # fmt: skip
        stack.callback(stop, proxy)
        base = f"http://127.0.0.1:{proxy_port}"
        wait_http(base + "/", proxy)
        print(f"\n== through meshware proxy --public-only at {base}")
        for method, path in [("GET", "/orders/7"), ("POST", "/users/admin/reindex")]:
            show(base, method, path)


if __name__ == "__main__":
    os.chdir(HERE)
    main()
