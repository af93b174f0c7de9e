"""A real server says, in one INFO line each, that it registered and re-registered."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time

import meshware
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer

from .conftest import EXAMPLES, Servers, free_port, wait_table


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            out.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_line(lines: queue.Queue[str], pattern: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(seen))


def test_gunicorn_worker_logs_registered_then_re_registered(
    servers: Servers, mesh: meshware.MeshView, etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "users_service:app"],
        cwd=EXAMPLES,
        env=servers.env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    servers.procs.append(proc)  # type: ignore[arg-type]  # stopped by PID with the others
    lines = lines_of(proc)
    url = f"http://127.0.0.1:{port}"
    first = wait_line(lines, r"\] \[meshware\] INFO registered users: ")
    assert f"3 routes at {url}" in first  # /users, /users/{user_id:int}, /users/admin/reindex
    table = wait_table(mesh, lambda t: bool(t.instances("users")), procs=(proc,))
    ((entry, record),) = table.records()
    key = entry.key
    with EtcdClient(etcd_server.endpoint) as client:
        kv = client.get(key)
        assert kv is not None
        client.lease_revoke(kv.lease)  # the lease is lost under the running worker
    again = wait_line(lines, r"INFO re-registered users: ")
    assert f"3 routes at {url}" in again
    assert record.instance_id in again
