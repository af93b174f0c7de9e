"""Data-plane benchmark (issue 14): every path of one request, side by side, paired per round.

Run: ``python bench/bench_dataplane.py`` (about 2 minutes; ``--quick`` for about 40 s). Real
servers on loopback ports, started here and stopped by PID at the end: three uvicorn instances of
``bench/_upstream.py``, a hand-written minimal nginx (``proxy_pass`` with keep-alive), nginx
running the configurations meshware renders (``--scope public`` and ``--scope node``), HAProxy
when installed, and the Python ``meshware proxy`` as ``meshware proxy`` runs it (uvicorn, its
guarded h11 protocol) on asyncio's loop, and on uvloop when installed. No etcd: tables are built directly and hold 10,000 routes.

1. **Latency of one request** (sequential keep-alive ``GET /users/42``): every row takes its turn
   in every round (A, B, C, ..., A, B, C, ...), each round's p50 and p90 are kept, and a row's
   figure is the median over rounds; "added" figures are medians of the per-round differences
   with the row's baseline measured in the same round (``httpx direct`` for one instance, httpx
   taking the three instances in turn for three, ``minimal nginx`` for the rendered nginx).
2. **Async under concurrency**: 32 and 256 requests in flight (asyncio tasks) over the three
   instances, in interleaved rounds of a fixed duration: ``meshware.AsyncClient`` against 32
   separate one-connection ``httpx.AsyncClient`` s (task *i* uses client *i* mod 32, each client
   bound to one instance), one ``httpx.AsyncClient()`` with default limits, and one sized pool;
   requests/s and p99 latency (medians over rounds).

With ``--pin`` (the default on 2+ CPUs) the servers run on CPU 1 and this process on CPU 0
(``os.sched_setaffinity``; nginx's and HAProxy's workers inherit it). The machine is assumed
noisy: run it several times and compare the spreads it prints. It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _proxy_server import users_table  # noqa: E402
from bench_client import (  # noqa: E402
    PATH,
    Processes,
    build_table,
    free_port,
    pct,
    spread,
    start_nginx,
    start_upstream,
    wait_ready,
)
from bench_edge import status_of  # noqa: E402

import meshware  # noqa: E402
from meshware.edge.nginx import NginxOptions, render  # noqa: E402

Get = Callable[[], int]


# ---------------------------------------------------------------------------- servers


def start_rendered(
    procs: Processes, nginx: str, name: str, text_for: Callable[[str, str], str]
) -> str:
    """nginx running ``text_for(listen, prefix)``; its URL once ``GET PATH`` answers 200."""
    prefix = procs.tmp / name
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    for _ in range(5):
        port = free_port()
        conf.write_text(text_for(f"127.0.0.1:{port}", str(prefix)))
        proc = procs.start(name, [nginx, "-p", str(prefix), "-c", str(conf)])
        end = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < end:
            if status_of(port, PATH) == 200:
                return f"http://127.0.0.1:{port}"
            time.sleep(0.05)
    err = prefix / "error.log"
    raise RuntimeError(
        f"nginx {name} did not start: {err.read_text()[-2000:] if err.exists() else ''}"
    )


HAPROXY_CONF = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    http-reuse always
    server s0 {upstream}
"""


def start_haproxy(procs: Processes, binary: str, upstream: str) -> str:
    for _ in range(5):
        port = free_port()
        cfg = procs.tmp / "haproxy.cfg"
        cfg.write_text(HAPROXY_CONF.format(port=port, upstream=upstream.removeprefix("http://")))
        proc = procs.start("haproxy", [binary, "-f", str(cfg), "-db"])
        url = f"http://127.0.0.1:{port}"
        if wait_ready(procs, proc, url + PATH):
            return url
    raise RuntimeError(f"haproxy did not start:\n{procs.log_tail(proc)}")


def start_proxy(procs: Processes, upstream: str, loop: str) -> str:
    for _ in range(5):
        port = free_port()
        proc = procs.start(
            f"proxy-{loop}",
            [sys.executable, str(HERE / "_proxy_server.py"), str(port), upstream, loop],
        )
        url = f"http://127.0.0.1:{port}"
        if wait_ready(procs, proc, url + PATH):
            return url
    raise RuntimeError(f"the proxy did not start:\n{procs.log_tail(proc)}")


# ---------------------------------------------------------------------------- 1. latency


class RawSocket:
    """A keep-alive HTTP/1.1 client in a few lines: the floor under every other row."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.sock = self._connect()
        self.request = f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def get(self) -> int:
        self.sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:  # uvicorn closed the idle connection (5 s): reconnect, resend
                self.sock.close()
                self.sock = self._connect()
                return self.get()
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def sync_get(client: httpx.Client, paths: list[str]) -> Get:
    turn = [0]

    def get() -> int:
        turn[0] += 1
        return client.get(paths[turn[0] % len(paths)]).status_code

    return get


def async_get(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient, path: str) -> Get:
    def get() -> int:
        return loop.run_until_complete(client.get(path)).status_code

    return get


def run_rows(
    rows: dict[str, Get], rounds: int, requests: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per-round p50 and p90 (us) of each row, the rows taking turns within each round."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in rows}
    clock = time.perf_counter_ns
    gc.collect()
    gc.freeze()  # the 10,000-route tables: out of every later collection (it took seconds)
    for get in rows.values():  # connections open, code warm
        for _ in range(max(50, requests // 3)):
            get()
    for _ in range(rounds):
        for name, get in rows.items():
            gc.collect()
            xs = []
            for _ in range(requests):
                t0 = clock()
                status = get()
                xs.append((clock() - t0) / 1000)
                if status != 200:
                    raise RuntimeError(f"{name}: answer {status}")
            xs.sort()
            out[name][0].append(pct(xs, 0.5))
            out[name][1].append(pct(xs, 0.9))
    return out


def bench_latency(args: argparse.Namespace, urls: list[str], fronts: dict[str, str]) -> None:
    table1, table3 = build_table(urls[:1]), build_table(urls)
    loop = asyncio.new_event_loop()
    closers: list[Callable[[], object]] = []

    def keep(c: httpx.Client) -> httpx.Client:
        closers.append(c.close)
        return c

    def akeep(c: httpx.AsyncClient) -> httpx.AsyncClient:
        closers.append(lambda: loop.run_until_complete(c.aclose()))
        return c

    raw = RawSocket(urls[0])
    closers.append(raw.close)
    rows: dict[str, Get] = {
        "raw socket -> uvicorn": raw.get,
        "httpx direct": sync_get(keep(httpx.Client(base_url=urls[0], trust_env=False)), [PATH]),
        "meshware.Client, 1 instance": sync_get(
            keep(meshware.Client(table1, trust_env=False)), [PATH]
        ),
        "httpx, 3 instances in turn": sync_get(
            keep(httpx.Client(trust_env=False)), [u + PATH for u in urls]
        ),
        "meshware.Client, 3 instances": sync_get(
            keep(meshware.Client(table3, trust_env=False)), [PATH]
        ),
        "httpx.AsyncClient direct": async_get(
            loop, akeep(httpx.AsyncClient(base_url=urls[0], trust_env=False)), PATH
        ),
        "meshware.AsyncClient, 1 instance": async_get(
            loop, akeep(meshware.AsyncClient(table1, trust_env=False)), PATH
        ),
    }
    for name, url in fronts.items():
        rows[f"httpx -> {name}"] = sync_get(
            keep(httpx.Client(base_url=url, trust_env=False)), [PATH]
        )
    try:
        res = run_rows(rows, args.rounds, args.requests)
    finally:
        for close in closers:
            close()
        loop.close()
    p50 = {k: v[0] for k, v in res.items()}
    med = {k: statistics.median(v[0]) for k, v in res.items()}
    med90 = {k: statistics.median(v[1]) for k, v in res.items()}
    base_of = {
        "meshware.Client, 1 instance": "httpx direct",
        "meshware.Client, 3 instances": "httpx, 3 instances in turn",
        "meshware.AsyncClient, 1 instance": "httpx.AsyncClient direct",
        "httpx, 3 instances in turn": "httpx direct",
    }
    for name in fronts:
        base_of[f"httpx -> {name}"] = "httpx direct"
    print(
        f"1. one request: sequential keep-alive GET {PATH}, 10,000-route tables "
        f"({args.rounds} interleaved rounds of {args.requests} per row; medians over rounds; "
        "added = median of per-round differences with the baseline row)"
    )
    print(f"  {'path of one request':<40} {'p50 us':>7} {'p90 us':>7}   added at p50 (spread) over")
    for name in rows:
        extra = ""
        base = base_of.get(name)
        if base is not None:
            diffs = [a - b for a, b in zip(p50[name], p50[base], strict=True)]
            ratios = [a / b for a, b in zip(p50[name], p50[base], strict=True)]
            extra = f"   {spread(diffs, '+.0f')} us, x{statistics.median(ratios):.2f} over {base}"
        print(f"  {name:<40} {med[name]:7.0f} {med90[name]:7.0f}{extra}")
    if "node nginx (rendered)" in fronts and "minimal nginx" in fronts:
        a, b = p50["httpx -> node nginx (rendered)"], p50["httpx -> minimal nginx"]
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        print(
            f"  [node] rendered node nginx / minimal nginx p50: {spread(ratios, '.3f')} "
            "(target <= 1.05)"
        )
    hop = [
        a - b
        for a, b in zip(p50.get("httpx -> minimal nginx", []), p50["httpx direct"], strict=True)
    ]
    for name in fronts:
        if name.startswith("meshware proxy") and hop and statistics.median(hop) > 0:
            mine = [
                a - b for a, b in zip(p50[f"httpx -> {name}"], p50["httpx direct"], strict=True)
            ]
            print(
                f"  [proxy] {name}: hop {statistics.median(mine):.0f} us = "
                f"x{statistics.median(mine) / statistics.median(hop):.1f} nginx's hop "
                f"({statistics.median(hop):.0f} us) (target <= 5)"
            )


# ---------------------------------------------------------------------------- 2. concurrency


async def in_flight(
    send: Callable[[int], Awaitable[httpx.Response]], seconds: float, n: int
) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of ``n`` tasks sending in turn for ``seconds``."""
    lat: list[float] = []
    errors = [0]
    end = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        clock = time.perf_counter
        while clock() < end:
            t0 = clock()
            try:
                r = await send(next(counter))
            except httpx.TransportError:  # an idle connection uvicorn closed (5 s) as it was reused
                errors[0] += 1
                continue
            lat.append(clock() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"answer {r.status_code}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n)))
    wall = time.perf_counter() - t0
    lat.sort()
    return len(lat) / wall, pct(lat, 0.99) * 1000


def bench_concurrency(args: argparse.Namespace, urls: list[str]) -> None:
    table3 = build_table(urls)
    targets = [u + PATH for u in urls]

    async def run(n: int) -> dict[str, list[tuple[float, float]]]:
        mesh = meshware.AsyncClient(table3, trust_env=False)
        singles = [
            httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=1))
            for _ in range(32)
        ]
        default = httpx.AsyncClient(trust_env=False)
        sized = httpx.AsyncClient(
            trust_env=False, limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
        )
        sends: dict[str, Callable[[int], Awaitable[httpx.Response]]] = {
            "meshware.AsyncClient": lambda i: mesh.get(PATH),
            "32 one-connection httpx clients": lambda i: singles[i % 32].get(targets[i % 32 % 3]),
            "httpx.AsyncClient() defaults": lambda i: default.get(targets[i % 3]),
            f"httpx.AsyncClient, one pool of {n}": lambda i: sized.get(targets[i % 3]),
        }
        out: dict[str, list[tuple[float, float]]] = {k: [] for k in sends}
        gc.collect()
        gc.freeze()
        try:
            for send in sends.values():
                await in_flight(send, args.async_seconds / 2, n)
            for _ in range(args.async_rounds):
                for name, send in sends.items():
                    gc.collect()
                    out[name].append(await in_flight(send, args.async_seconds, n))
        finally:
            for c in [mesh, default, sized, *singles]:
                await c.aclose()
        return out

    for n in args.in_flight:
        res = asyncio.run(run(n))
        base = res["32 one-connection httpx clients"]
        print(
            f"2. {n} requests in flight over 3 instances ({args.async_rounds} interleaved rounds "
            f"of {args.async_seconds:g} s per row; medians)"
        )
        for name, figures in res.items():
            rps = statistics.median(f[0] for f in figures)
            p99 = statistics.median(f[1] for f in figures)
            ratios = [a[0] / b[0] for a, b in zip(figures, base, strict=True)]
            print(
                f"  {name:<36} {rps:7,.0f} req/s   p99 {p99:6.1f} ms   "
                f"x{statistics.median(ratios):.2f} of 32 one-connection clients "
                f"(per round {spread(ratios, '.2f')})"
            )


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 40 s)")
    parser.add_argument("--rounds", type=int, help="rounds of 1 (default 9; quick 3)")
    parser.add_argument(
        "--requests", type=int, help="requests per row per round (default 300; quick 150)"
    )
    parser.add_argument("--async-rounds", type=int, help="rounds of 2 (default 5; quick 2)")
    parser.add_argument(
        "--async-seconds", type=float, help="seconds per row per round of 2 (default 2; quick 1)"
    )
    parser.add_argument("--in-flight", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    args = parser.parse_args()
    defaults = {
        "rounds": (9, 3),
        "requests": (300, 150),
        "async_rounds": (5, 2),
        "async_seconds": (2.0, 1.0),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    pin = args.pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="meshware-dataplane-"))
    tmp.chmod(0o755)  # nginx workers may run as another user
    procs = Processes(tmp)
    user = "root" if os.geteuid() == 0 else None
    try:
        if pin:
            os.sched_setaffinity(0, {cpus[1]})  # the servers started now inherit it
        urls = [start_upstream(procs, f"i{k}") for k in range(3)]
        fronts: dict[str, str] = {}
        if not args.skip_latency:  # the fronts are rows of 1 only
            fronts["minimal nginx"] = start_nginx(procs, args.nginx, urls[0])
            node_table = build_table(urls[:1])
            fronts["node nginx (rendered)"] = start_rendered(
                procs,
                args.nginx,
                "node",
                lambda listen, prefix: render(
                    node_table, NginxOptions(listen=listen, prefix=prefix, user=user, scope="node")
                ),
            )
            fronts["public nginx (rendered)"] = start_rendered(
                procs,
                args.nginx,
                "public",
                lambda listen, prefix: render(
                    users_table(urls[0]), NginxOptions(listen=listen, prefix=prefix, user=user)
                ),
            )
            if os.access(args.haproxy, os.X_OK):
                fronts["HAProxy"] = start_haproxy(procs, args.haproxy, urls[0])
            fronts["meshware proxy (asyncio)"] = start_proxy(procs, urls[0], "asyncio")
            if importlib.util.find_spec("uvloop"):
                fronts["meshware proxy (uvloop)"] = start_proxy(procs, urls[0], "uvloop")
        if pin:
            os.sched_setaffinity(0, {cpus[0]})
        print(
            f"meshware {meshware.__version__}, httpx {httpx.__version__}, Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
            + (f" (caller on CPU {cpus[0]}, servers on CPU {cpus[1]})" if pin else " (not pinned)")
            + f"; upstream: 3 x uvicorn; fronts: {', '.join(fronts)}"
        )
        if not args.skip_latency:
            bench_latency(args, urls, fronts)
        if not args.skip_concurrency:
            bench_concurrency(args, urls)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
