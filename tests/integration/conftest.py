"""Real servers as subprocesses, registered in a real etcd, watched by a real MeshView."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import meshware
from meshware.testing.etcd import EtcdServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Servers:
    """Starts servers with the mesh settings in their environment; stops them by PID."""

    def __init__(self, etcd: EtcdServer, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MESHWARE_ETCD_ENDPOINTS=self.etcd.endpoint,
            MESHWARE_PREFIX=self.prefix,
            MESHWARE_LEASE_TTL="2",
            PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(APPS)]),
        )
        env.update(extra)
        return env

    def start(self, *args: str, cwd: Path = EXAMPLES, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=cwd, env=self.env(**env), start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def gunicorn(self, app: str, port: int, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start(
            "gunicorn", "-b", f"127.0.0.1:{port}", "--log-level", "warning", *extra, app, **env
        )

    def uvicorn(self, app: str, port: int, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start(
            "uvicorn", app, "--port", str(port), "--log-level", "warning", *extra, **env
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(
                    proc.pid, signal.SIGKILL
                )  # the group we started: the server and its workers
                proc.wait()


@pytest.fixture
def servers(etcd_server: EtcdServer, mesh_prefix: str) -> Iterator[Servers]:
    s = Servers(etcd_server, mesh_prefix)
    yield s
    s.stop_all()


@pytest.fixture
def mesh(etcd_server: EtcdServer, mesh_prefix: str) -> Iterator[meshware.MeshView]:
    with meshware.connect(etcd_endpoints=etcd_server.endpoint, prefix=mesh_prefix) as view:
        yield view


def wait_table(
    mesh: meshware.MeshView,
    predicate: Callable[[meshware.RoutingTable], bool],
    *,
    procs: tuple[subprocess.Popen[bytes], ...] = (),
    timeout: float = 20.0,
) -> meshware.RoutingTable:
    """Wait for the table to satisfy ``predicate``, failing early if a server died."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"server {proc.args} exited with {proc.returncode}")
        try:
            return mesh.wait_for(predicate, timeout=0.25)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
