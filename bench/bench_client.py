"""Client benchmark: meshware.Client/AsyncClient against plain httpx, direct and through nginx.

Run: ``python bench/bench_client.py`` (1.5 minutes; ``--quick`` for about 20 s). Real
servers on loopback ports, started here as subprocesses and stopped by PID at the end: three
instances of a tiny plain-ASGI app (``bench/_upstream.py``) under uvicorn, and an nginx reverse
proxy in front of the first one (the "sidecar hop": an upstream block with keepalive, HTTP/1.1 to
the upstream). No etcd: the meshware clients get a :class:`~meshware.RoutingTable` built directly,
holding 10,000 routes (9,999 filler routes of 100 other services, never called, plus
``GET /users/{id:int}`` of the service ``users`` at the real instances' URLs).

What is measured, every figure and its ratio from the same run:

1. per-request latency (p50, p90) of sequential keep-alive ``GET /users/42``, one instance:
   ``meshware.Client`` vs a plain ``httpx.Client`` to the instance's URL (and the client
   process's CPU time per request, which the load on the machine disturbs less);
2. the same meshware figure vs a plain ``httpx.Client`` through nginx (the sidecar design);
3. throughput with 32 requests in flight (32 asyncio tasks) over 3 instances:
   ``meshware.AsyncClient`` vs one plain ``httpx.AsyncClient`` (one pool allowing 64 connections)
   spreading the requests round-robin over the same 3 URLs, in rounds of a fixed duration
   (requests/s, and client CPU per request: the client's one core is the bottleneck here);
4. balancing around a slow instance: every request asks for ``?delay=MS`` of server-side sleep
   and one instance sleeps 10x as long; ``meshware.Client`` (default p2c balancer) shared by
   8 threads under steady load for a fixed time, counting which instance answered each request
   (a warm-up second is left out of the shares).

The machine is assumed noisy: in 1-3 the variants are interleaved round by round (A, B, C, A, B,
C, ...), each after its own warm-up on already-open connections; the figure of a variant is the
median over rounds of its per-round value. Both sides use ``trust_env=False`` (no proxy from the
environment: all traffic stays on 127.0.0.1). It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

import meshware
from meshware import InstanceRecord, RouteSpec, RoutingTable

HERE = Path(__file__).resolve().parent
USERS_ROUTE = "/users/{id:int}"
PATH = "/users/42"
FILLER_SHAPES = (
    "/{svc}/r{j}",
    "/{svc}/r{j}/{{id:int}}",
    "/{svc}/r{j}/{{id:int}}/items/{{name}}",
    "/{svc}/r{j}/by-name/{{name}}",
    "/{svc}/r{j}/files/{{rest:path}}",
)


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` (Linux) so a child dies if this script is killed outright."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


class Processes:
    """The servers this script started; :meth:`stop_all` stops exactly those, by PID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=HERE,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own group: a ^C at the terminal does not reach it
                preexec_fn=_die_with_parent(),
            )
        self.procs.append((name, proc, log))
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        for _, p, log in self.procs:
            if p is proc and log.exists():
                return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop_all(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this script created for it
                proc.wait()
        self.procs.clear()


def wait_ready(
    procs: Processes, proc: subprocess.Popen[bytes], url: str, timeout: float = 20.0
) -> bool:
    """True once ``url`` answers 200; False if the process exited first (a port race)."""
    end = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=1.0) as c:
        while time.monotonic() < end:
            if proc.poll() is not None:
                return False
            try:
                if c.get(url).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{procs.log_tail(proc)}")


def start_upstream(procs: Processes, name: str, slowdown: float = 1.0) -> str:
    for _ in range(5):
        port = free_port()
        proc = procs.start(
            name,
            [sys.executable, "-m", "uvicorn", "_upstream:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            {"INSTANCE": name, "SLOWDOWN": str(slowdown), "PYTHONPATH": str(HERE)},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        if wait_ready(procs, proc, url + PATH):
            return url
    raise RuntimeError(f"{name} did not start:\n{procs.log_tail(proc)}")


NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    upstream users {{
        server {upstream};
        keepalive 16;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://users;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(procs: Processes, nginx: str, upstream: str) -> str:
    prefix = procs.tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    for _ in range(5):
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(tmp=prefix, upstream=upstream.removeprefix("http://"), port=port)
        )
        proc = procs.start(
            "nginx",
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "nginx-error.log"),
             "-g", "daemon off;"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        if wait_ready(procs, proc, url + PATH):
            return url
    raise RuntimeError(
        "nginx did not start:\n" + (prefix / "nginx-error.log").read_text(errors="replace")[-2000:]
    )


# ---------------------------------------------------------------------------- table


def build_table(users_urls: list[str], total_routes: int = 10_000) -> RoutingTable:
    """``users`` at ``users_urls`` plus filler services, ``total_routes`` routes in all."""
    users = (RouteSpec(USERS_ROUTE, ("GET",)),)
    records = [InstanceRecord("users", f"u{i}", url, users) for i, url in enumerate(users_urls)]
    left = total_routes - 1
    s = 0
    while left > 0:
        svc = f"svc{s}"
        n = min(100, left)
        routes = tuple(
            RouteSpec(FILLER_SHAPES[k % 5].format(svc=svc, j=k // 5), ("GET", "HEAD"))
            for k in range(n)
        )
        # Never called (loopback anyway, should anything go wrong).
        records.append(InstanceRecord(svc, "i0", f"http://127.0.0.1:{20000 + s}", routes))
        left -= n
        s += 1
    table = RoutingTable.from_records(records)
    n_routes = len(table.routes())
    assert n_routes == total_routes, n_routes
    assert table.resolve("GET", PATH).service == "users"
    return table


# ---------------------------------------------------------------------------- measuring


def pct(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_xs[min(len(sorted_xs) - 1, max(0, round(q * len(sorted_xs) + 0.5) - 1))]


def sequential_us(get: Callable[[], httpx.Response], n: int) -> tuple[list[float], float]:
    """Per-request latencies (us, sorted) of ``n`` sequential calls; client CPU us per call."""
    clock = time.perf_counter_ns
    out = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = clock()
        r = get()
        out.append((clock() - t0) / 1000)
        if r.status_code != 200:
            raise RuntimeError(f"unexpected answer {r.status_code}: {r.text[:200]}")
    cpu = (time.process_time() - c0) / n * 1e6
    out.sort()
    return out, cpu


async def in_flight_rps(
    send: Callable[[int], Awaitable[httpx.Response]], seconds: float, concurrency: int
) -> tuple[float, float]:
    """Requests per second, and client CPU us per request, of ``concurrency`` tasks sending in
    turn for ``seconds`` (the requests in flight at the end are waited for and counted)."""
    counter = itertools.count()
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        clock = time.perf_counter
        while clock() < end:
            r = await send(next(counter))
            if r.status_code != 200:
                raise RuntimeError(f"unexpected answer {r.status_code}")
            done += 1

    c0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return done / wall, (time.process_time() - c0) / done * 1e6


def interleaved_rounds(
    variants: dict[str, httpx.Client], rounds: int, requests: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Per-round p50, p90 (us) and client CPU per request of sequential ``GET PATH`` for each
    variant, the variants taking turns within each round; closes the clients."""
    p50: dict[str, list[float]] = {k: [] for k in variants}
    p90: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for client in variants.values():  # connections open, code paths warm
            sequential_us(lambda c=client: c.get(PATH), requests)
        for _ in range(rounds):
            for name, client in variants.items():
                gc.collect()
                xs, c = sequential_us(lambda c=client: c.get(PATH), requests)
                p50[name].append(pct(xs, 0.5))
                p90[name].append(pct(xs, 0.9))
                cpu[name].append(c)
    finally:
        for client in variants.values():
            client.close()
    return p50, p90, cpu


def spread(xs: list[float], fmt: str) -> str:
    """``median (min..max)`` of per-round ratios."""
    xs = sorted(xs)
    return f"{statistics.median(xs):{fmt}} ({xs[0]:{fmt}}..{xs[-1]:{fmt}})"


def bench_latency(
    args: argparse.Namespace, table1: RoutingTable, direct: str, via_nginx: str
) -> None:
    variants: dict[str, httpx.Client] = {
        "meshware.Client": meshware.Client(table1, trust_env=False),
        "httpx direct": httpx.Client(base_url=direct, trust_env=False),
        "httpx via nginx": httpx.Client(base_url=via_nginx, trust_env=False),
    }
    p50, p90, cpu = interleaved_rounds(variants, args.rounds, args.requests)
    med = {
        k: (statistics.median(p50[k]), statistics.median(p90[k]), statistics.median(cpu[k]))
        for k in variants
    }
    m, d, n = med["meshware.Client"], med["httpx direct"], med["httpx via nginx"]
    pair = list(zip(p50["meshware.Client"], p50["httpx direct"], strict=True))
    print(
        f"1-2. sequential keep-alive GET {PATH}, one instance, 10,000-route table "
        f"({args.rounds} interleaved rounds of {args.requests} per variant; medians of per-round figures)"
    )
    for name, (a, b, c) in med.items():
        print(f"  {name:<16} p50 {a:6.0f} us   p90 {b:6.0f} us   client CPU {c:4.0f} us/request")
    print(
        f"  [1] meshware/httpx direct: p50 ratio {m[0] / d[0]:.3f} (target <= 1.05), "
        f"p90 ratio {m[1] / d[1]:.3f}; per-round p50 ratio {spread([a / b for a, b in pair], '.3f')}; "
        f"client CPU {m[2] - d[2]:+.0f} us/request"
    )
    print(
        f"  [2] meshware direct vs httpx through nginx: p50 {m[0]:.0f} vs {n[0]:.0f} us, "
        f"ratio meshware/nginx {m[0] / n[0]:.3f} (the nginx hop adds {n[0] - d[0]:.0f} us at p50)"
    )


def bench_throughput(args: argparse.Namespace, table3: RoutingTable, urls: list[str]) -> None:
    Figures = list[tuple[float, float]]

    async def run() -> tuple[Figures, Figures, Counter[str]]:
        mesh = meshware.AsyncClient(table3, trust_env=False)
        plain = httpx.AsyncClient(
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        targets = [u + PATH for u in urls]
        n_urls = len(targets)

        def send_mesh(i: int) -> Awaitable[httpx.Response]:
            return mesh.get(PATH)

        def send_plain(i: int) -> Awaitable[httpx.Response]:
            return plain.get(targets[i % n_urls])

        shares: Counter[str] = Counter()
        try:
            for _ in range(4):  # where the mesh client sends
                for r in await asyncio.gather(*(mesh.get(PATH) for _ in range(args.concurrency))):
                    shares[r.json()["instance"]] += 1
            for send in (send_mesh, send_plain):  # warm-up: open the connections
                await in_flight_rps(send, args.async_seconds / 2, args.concurrency)
            ours: Figures = []
            theirs: Figures = []
            for _ in range(args.async_rounds):
                gc.collect()
                ours.append(await in_flight_rps(send_mesh, args.async_seconds, args.concurrency))
                gc.collect()
                theirs.append(await in_flight_rps(send_plain, args.async_seconds, args.concurrency))
            return ours, theirs, shares
        finally:
            await mesh.aclose()
            await plain.aclose()

    ours, theirs, shares = asyncio.run(run())
    a, b = statistics.median(x for x, _ in ours), statistics.median(x for x, _ in theirs)
    a_cpu, b_cpu = statistics.median(c for _, c in ours), statistics.median(c for _, c in theirs)
    print(
        f"3. {args.concurrency} requests in flight (asyncio tasks), 3 instances "
        f"({args.async_rounds} interleaved rounds of {args.async_seconds:g} s per variant; medians)"
    )
    print(f"  meshware.AsyncClient {a:6,.0f} req/s   client CPU {a_cpu:5.0f} us/request")
    print(
        f"  httpx.AsyncClient    {b:6,.0f} req/s   client CPU {b_cpu:5.0f} us/request "
        "(one pool, round-robin over the 3 URLs)"
    )
    print(
        f"  [3] throughput ratio meshware/httpx {a / b:.2f} (target >= 2); per-round "
        f"{spread([x[0] / y[0] for x, y in zip(ours, theirs, strict=True)], '.2f')}; "
        f"CPU/request ratio httpx/meshware {b_cpu / a_cpu:.2f}"
    )
    print(
        f"  meshware's first {sum(shares.values())} requests went to "
        + ", ".join(f"{k} {v}" for k, v in sorted(shares.items()))
    )


def bench_slow_instance(
    args: argparse.Namespace, table3: RoutingTable, urls: list[str], names: list[str]
) -> None:
    target = f"{PATH}?delay={args.delay_ms:g}"
    # How slow each instance is on its own: sequential, interleaved, plain httpx.
    alone: dict[str, list[float]] = {n: [] for n in names}
    with httpx.Client(trust_env=False) as c:
        for _ in range(args.probe):
            for name, url in zip(names, urls, strict=True):
                t0 = time.perf_counter()
                c.get(url + target).raise_for_status()
                alone[name].append((time.perf_counter() - t0) * 1000)
    alone_p50 = {n: statistics.median(xs) for n, xs in alone.items()}

    client = meshware.Client(table3, trust_env=False)
    stop = threading.Event()
    seen: list[list[tuple[float, str, float]]] = [[] for _ in range(args.threads)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        out = seen[k]
        clock = time.perf_counter
        try:
            while not stop.is_set():
                t0 = clock()
                r = client.get(target)
                dt = clock() - t0
                out.append((t0, r.json()["instance"], dt))
        except BaseException as exc:  # reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.threads)]
    t_start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        stop.wait(args.warmup + args.slow_seconds)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        client.close()
    if errors:
        raise errors[0]
    counted = [(inst, dt) for out in seen for t0, inst, dt in out if t0 >= t_start + args.warmup]
    shares = Counter(inst for inst, _ in counted)
    total = len(counted)
    lat = {n: sorted(dt * 1000 for inst, dt in counted if inst == n) for n in names}
    all_lat = sorted(dt * 1000 for _, dt in counted)
    slow = names[-1]
    fast_p50 = statistics.median(alone_p50[n] for n in names[:-1])
    print(
        f"4. one instance of 3 slowed down: every request asks for {args.delay_ms:g} ms of server "
        f"sleep, {slow} sleeps {args.slowdown:g}x; meshware.Client (p2c), {args.threads} threads, "
        f"{args.slow_seconds:g} s after {args.warmup:g} s warm-up"
    )
    print(
        "  alone (sequential p50): "
        + ", ".join(f"{n} {alone_p50[n]:.1f} ms" for n in names)
        + f"; measured slowdown {alone_p50[slow] / fast_p50:.1f}x"
    )
    print(
        f"  {total} requests, {total / args.slow_seconds:,.0f} req/s, p50 {pct(all_lat, 0.5):.1f} ms, "
        f"p99 {pct(all_lat, 0.99):.1f} ms"
    )
    for n in names:
        p50 = f", p50 {pct(lat[n], 0.5):.1f} ms" if lat[n] else ""
        print(f"  {n}: {shares[n]:6d} requests, {100 * shares[n] / total:5.1f} %{p50}")
    print(f"  [4] slow instance's share {100 * shares[slow] / total:.1f} % (target <= 10 %)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 20 s)")
    parser.add_argument("--rounds", type=int, help="rounds of 1-2 (default 21; quick 5)")
    parser.add_argument(
        "--requests",
        type=int,
        help="requests per variant per round in 1-2 (default 300; quick 150)",
    )
    parser.add_argument("--async-rounds", type=int, help="rounds of 3 (default 9; quick 3)")
    parser.add_argument(
        "--async-seconds",
        type=float,
        help="seconds per variant per round in 3 (default 2; quick 1)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight in 3")
    parser.add_argument("--threads", type=int, default=8, help="threads in 4")
    parser.add_argument(
        "--slow-seconds", type=float, help="measured seconds of 4 (default 12; quick 3)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of 4 left out of the shares"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=10.0, help="server sleep per request in 4"
    )
    parser.add_argument(
        "--slowdown", type=float, default=10.0, help="how much slower the slow instance sleeps"
    )
    parser.add_argument(
        "--probe", type=int, help="sequential probes per instance in 4 (default 15; quick 4)"
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args()
    defaults = {  # (default, quick)
        "rounds": (21, 5),
        "requests": (300, 150),
        "async_rounds": (9, 3),
        "async_seconds": (2.0, 1.0),
        "slow_seconds": (12.0, 3.0),
        "probe": (15, 4),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="meshware-bench-"))
    tmp.chmod(0o755)  # nginx workers may run as another user
    procs = Processes(tmp)
    try:
        names = ["i0", "i1", "i2"]
        urls = [start_upstream(procs, n, args.slowdown if n == names[-1] else 1.0) for n in names]
        via_nginx = start_nginx(procs, args.nginx, urls[0])
        table1 = build_table(urls[:1])
        table3 = build_table(urls)
        print(
            f"meshware {meshware.__version__}, httpx {httpx.__version__}, Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; upstream: 3 x uvicorn "
            f"(bench/_upstream.py), nginx -> i0; tables: 10,000 routes"
        )
        bench_latency(args, table1, urls[0], via_nginx)
        bench_throughput(args, table3, urls)
        bench_slow_instance(args, table3, urls, names)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
