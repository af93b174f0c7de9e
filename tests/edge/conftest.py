"""A real upstream (uvicorn), a real nginx rendered from the table, and the public-only proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshware
from meshware import InstanceRecord, RoutingTable
from meshware.edge.nginx import NginxOptions, find_nginx, render
from meshware.edge.proxy import MeshProxy
from meshware.edge.public import Rewrite
from meshware.edge.serve import ProxyLimits, uvicorn_config
from meshware.integrations._starlette_routes import starlette_routes

from . import upstream_app

ROOT = Path(__file__).resolve().parents[2]
REWRITES = (Rewrite.parse("users:/u=/user-service/users"),)
# short timeouts so that the slow-client tests finish quickly; 1,100 connections at most
PROXY_LIMITS = ProxyLimits(max_connections=1100, header_timeout=1.5, body_timeout=1.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_nginx(binary: str, prefix: Path, config: str, port: int) -> Iterator[None]:
    """A real nginx on ``config`` (written under ``prefix``), listening on ``port``; stopped after."""
    conf = Path(prefix) / "nginx.conf"
    conf.write_text(config)
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)])
    try:
        wait_port(port, proc)
        yield
    finally:
        stop(proc)


@contextlib.contextmanager
def serving_proxy(app: MeshProxy, port: int, limits: ProxyLimits) -> Iterator[None]:
    """``app`` served as ``meshware proxy`` serves it (uvicorn, guarded h11) in a thread."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """The upstream app under uvicorn; its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.edge.upstream_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def edge_table(upstream: str) -> RoutingTable:
    """The table an edge sees: the upstream's routes as the integration publishes them."""
    record = InstanceRecord(
        "users", "u1", upstream, tuple(starlette_routes(upstream_app.app)), routing="ordered"
    )
    return RoutingTable.from_records([record])


@pytest.fixture(scope="session")
def nginx_port(edge_table: RoutingTable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real nginx running the configuration rendered from ``edge_table``."""
    try:
        binary = find_nginx()
    except meshware.ConfigError as exc:
        pytest.skip(str(exc))
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    options = NginxOptions(
        listen=f"127.0.0.1:{port}",
        rewrites=REWRITES,
        prefix=str(prefix),
        user="root" if os.geteuid() == 0 else None,
        client_max_body_size="64k",
    )
    with running_nginx(binary, prefix, render(edge_table, options), port):
        yield port


@pytest.fixture(scope="session")
def proxy_port(edge_table: RoutingTable) -> Iterator[int]:
    """The public-only local router over ``edge_table``, served by uvicorn in a thread."""

    port = free_port()
    client = meshware.AsyncClient(edge_table, total_timeout=10)
    app = MeshProxy(
        client,
        type("Mesh", (), {"table": edge_table})(),
        public_only=True,
        rewrites=REWRITES,
        max_body=64 * 1024,  # as nginx's client_max_body_size below
    )
    with serving_proxy(app, port, PROXY_LIMITS):
        yield port


def raw(port: int, request: bytes, timeout: float = 5.0, idle: float = 0.25) -> tuple[int, bytes]:
    """Send exact bytes; the first response's status and everything the server sent back.

    Reads until the server closes, or until it has said something and then stayed quiet for
    ``idle`` seconds (a kept-alive connection: a smuggled second answer would have come by then).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # the server may refuse early (a huge body) and close: then read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                s.settimeout(idle)
        except (TimeoutError, ConnectionResetError):
            pass
    if not data.startswith(b"HTTP/1."):
        return 0, data  # closed without an answer
    return int(data.split(b" ", 2)[1]), data
