"""The public-only proxy under idle connections: good requests while 1,000 idle ones are held.

Run: ``python bench/bench_proxy_hostile.py`` (about 30 s). Real servers on loopback, started here
and stopped by PID (the process helpers of ``bench_client.py``): the upstream of
``bench/_upstream.py`` and ``meshware proxy --public-only`` as ``bench/_proxy_server.py`` runs it
(:func:`meshware.edge.serve.uvicorn_config`, default limits: 1,024 connections).

1. Latency of a good ``GET /users/42`` on a fresh connection, sequential: with no idle
   connection, and while 1,000 idle connections (TCP open, nothing sent) are held. Interleaved
   rounds; per round the median, then the median over rounds; failures counted.
2. The issue's setting: a proxy whose descriptor limit is 1,024 (``ulimit -n 1024``) and 1,100
   idle connections. How many are refused at once with ``503``, what good requests get while
   they are held and after they are gone, and how many bytes the proxy logged.

It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_client import Processes, free_port, start_upstream, wait_ready  # noqa: E402

GOOD = b"GET /users/42 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"


def good(port: int, timeout: float = 5.0) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(GOOD)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return 0, time.perf_counter() - started
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    return status, time.perf_counter() - started


def hold(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        out.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return out


def start_proxy(procs: Processes, upstream: str, nofile: int | None = None) -> tuple[int, Path]:
    for _ in range(5):
        port = free_port()
        argv = [sys.executable, str(HERE / "_proxy_server.py"), str(port), upstream]
        if nofile is not None:
            argv = ["sh", "-c", f'ulimit -n {nofile} && exec "$0" "$@"', *argv]
        name = f"proxy-{nofile or 'default'}"
        proc = procs.start(name, argv)
        if wait_ready(procs, proc, f"http://127.0.0.1:{port}/users/42"):
            return port, procs.tmp / f"{name}.log"
    raise RuntimeError("the proxy did not start")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="meshware-bench-"))
    procs = Processes(tmp)
    try:
        upstream = start_upstream(procs, "u")
        port, _ = start_proxy(procs, upstream)
        rounds: dict[str, list[float]] = {"no idle connection": [], "1,000 idle held": []}
        failed = dict.fromkeys(rounds, 0)
        for _ in range(5):
            for name in rounds:
                idle = hold(port, 1000) if name != "no idle connection" else []
                try:
                    times = []
                    for _ in range(40):
                        status, took = good(port)
                        failed[name] += status != 200
                        times.append(took)
                    rounds[name].append(statistics.median(times))
                finally:
                    for s in idle:
                        s.close()
        print("1. good GET on a fresh connection through the public-only proxy (5 rounds x 40)")
        base = statistics.median(rounds["no idle connection"])
        for name, xs in rounds.items():
            med = statistics.median(xs)
            print(
                f"   {name:20s} median {med * 1e3:6.2f} ms ({med / base:.2f}x)"
                f"   not 200: {failed[name]} of 200"
            )

        port2, log = start_proxy(procs, upstream, nofile=1024)
        idle = hold(port2, 1100)
        time.sleep(1.0)  # let the proxy accept and answer what it refuses
        poller = select.poll()
        for s in idle:
            poller.register(s, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(0)}
        refused = sum(
            1 for s in idle if s.fileno() in ready and s.recv(64).startswith(b"HTTP/1.1 503")
        )
        during = [good(port2)[0] for _ in range(10)]
        for s in idle:
            s.close()
        time.sleep(0.5)  # the proxy sees the closes
        after = [good(port2)[0] for _ in range(10)]
        print("2. ulimit -n 1024, 1,100 idle connections")
        print(f"   refused at once with 503: {refused} of 1,100 (the rest held)")
        print(f"   good requests while held: {during}")
        print(f"   good requests after:      {after}")
        print(f"   proxy log: {log.stat().st_size} bytes")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
