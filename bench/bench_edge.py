"""Edge benchmark: the two edges of the README's "Exposing routes to the public", measured.

Run: ``python bench/bench_edge.py`` (about a minute; ``--quick`` for about 20 s). Real servers on
loopback ports, started here as subprocesses and stopped by PID at the end (the process helpers of
``bench_client.py``): the tiny upstream app of ``bench/_upstream.py`` under uvicorn, nginx running
configurations *rendered by meshware* (:func:`meshware.edge.nginx.render`), and the public-only
``meshware proxy`` (:class:`~meshware.edge.proxy.MeshProxy` under uvicorn, ``bench/_proxy_server.py``).
No etcd: the tables are built directly.

What is measured, every figure and ratio from the same run:

1. the latency each edge adds: sequential keep-alive ``GET /users/42`` with a plain
   ``httpx.Client`` (a) straight to the upstream, (b) through nginx running the rendered
   configuration of a table holding the service ``users`` with the public route
   ``GET /users/{id:int}``, (c) through the public-only proxy over the same table; p50 and p90 of
   each, the added latency (b - a, c - a) and the ratio proxy-added / nginx-added;
2. re-rendering and reloading at 1,000 public routes (10 services x 100 routes of varied shapes,
   at loopback URLs nothing answers): :func:`~meshware.edge.nginx.render`, ``nginx -t``
   (:func:`~meshware.edge.nginx.validate`), and "table change -> served by nginx" on a RUNNING
   nginx: the table changes (the watch event of ``users``, at the real upstream so that it
   answers 200, now publishing one new public route, applied as the view applies it), then
   render, :func:`~meshware.edge.nginx.write_if_changed`, ``nginx -s reload``, and probes of the
   new route on fresh connections until nginx stops answering 404 for it. ``--watch``'s debounce
   (0.5 s by default) is not counted; its ``nginx -t`` check is shown added on.

The machine is assumed noisy: in 1 the variants are interleaved round by round, each after its own
warm-up on an already-open connection, and a variant's figure is the median over rounds of its
per-round value; in 2 every figure is the median of repetitions. Clients use ``trust_env=False``
(all traffic stays on 127.0.0.1). It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import meshware
from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._core.records import instance_key
from meshware._core.table import Entry, Upsert
from meshware.edge.nginx import NginxOptions, render, validate, write_if_changed

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _proxy_server import users_table  # noqa: E402
from bench_client import (  # noqa: E402
    FILLER_SHAPES,
    PATH,
    Processes,
    free_port,
    interleaved_rounds,
    spread,
    start_upstream,
    wait_ready,
)

SERVICES = 10
ROUTES_PER_SERVICE = 100
DEFAULT_PREFIX = "/meshware"
FIRST_REVISION = 1000  # after the 10 records of public_table()


# ---------------------------------------------------------------------------- processes


def status_of(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status nginx answers ``GET path`` with on a fresh connection (None: no answer)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request)
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def start_rendered_nginx(
    procs: Processes, nginx: str, name: str, table: RoutingTable, probe: str, want: int
) -> tuple[int, NginxOptions, Path]:
    """nginx running ``render(table)``; its port, options and configuration file, once ``GET
    probe`` answers ``want``."""
    prefix = procs.tmp / name
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    for _ in range(5):
        port = free_port()
        options = NginxOptions(
            listen=f"127.0.0.1:{port}",
            prefix=str(prefix),
            user="root" if os.geteuid() == 0 else None,
        )
        conf.write_text(render(table, options))
        proc = procs.start(name, [nginx, "-p", str(prefix), "-c", str(conf)])
        end = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < end:
            if status_of(port, probe) == want:
                return port, options, conf
            time.sleep(0.05)
        if proc.poll() is None:
            break  # running but not answering: report below
    error_log = prefix / "error.log"
    raise RuntimeError(
        f"nginx ({name}) did not start:\n"
        + (error_log.read_text(errors="replace")[-2000:] if error_log.exists() else "")
        + procs.log_tail(proc)
    )


def start_proxy(procs: Processes, upstream: str) -> str:
    """The public-only ``meshware proxy`` over :func:`users_table` in its own process."""
    for _ in range(5):
        port = free_port()
        proc = procs.start(
            "proxy", [sys.executable, str(HERE / "_proxy_server.py"), str(port), upstream]
        )
        url = f"http://127.0.0.1:{port}"
        if wait_ready(procs, proc, url + PATH):
            return url
    raise RuntimeError(f"the proxy did not start:\n{procs.log_tail(proc)}")


# ---------------------------------------------------------------------------- 1. added latency


def bench_added_latency(
    args: argparse.Namespace, direct: str, via_nginx: str, via_proxy: str
) -> None:
    variants: dict[str, httpx.Client] = {
        "direct": httpx.Client(base_url=direct, trust_env=False),
        "via nginx": httpx.Client(base_url=via_nginx, trust_env=False),
        "via meshware proxy": httpx.Client(base_url=via_proxy, trust_env=False),
    }
    p50, p90, _cpu = interleaved_rounds(variants, args.rounds, args.requests)
    med50 = {k: statistics.median(v) for k, v in p50.items()}
    med90 = {k: statistics.median(v) for k, v in p90.items()}
    a, b, c = (med50[k] for k in variants)
    a90, b90, c90 = (med90[k] for k in variants)
    nginx_rounds = [n - d for d, n in zip(p50["direct"], p50["via nginx"], strict=True)]
    proxy_rounds = [p - d for d, p in zip(p50["direct"], p50["via meshware proxy"], strict=True)]
    print(
        f"1. sequential keep-alive GET {PATH}, plain httpx.Client, one upstream "
        f"({args.rounds} interleaved rounds of {args.requests} per variant; medians of per-round figures)"
    )
    for name in variants:
        print(f"  {name:<19} p50 {med50[name]:6.0f} us   p90 {med90[name]:6.0f} us")
    print(
        f"  added at p50: nginx {b - a:+.0f} us, proxy {c - a:+.0f} us "
        f"(at p90: nginx {b90 - a90:+.0f} us, proxy {c90 - a90:+.0f} us)"
    )
    print(
        f"  per-round added p50: nginx {spread(nginx_rounds, '+.0f')} us, "
        f"proxy {spread(proxy_rounds, '+.0f')} us"
    )
    ratio = f"{(c - a) / (b - a):.1f}" if b - a > 0 else "n/a (nginx added nothing measurable)"
    per_round = ""
    if all(x > 0 for x in nginx_rounds):
        per_round = "; per round " + spread(
            [p / n for p, n in zip(proxy_rounds, nginx_rounds, strict=True)], ".1f"
        )
    print(f"  [1] proxy-added / nginx-added at p50: {ratio}{per_round}")


# ---------------------------------------------------------------------------- 2. reload


def public_table() -> RoutingTable:
    """1,000 public routes of 10 services at loopback URLs nothing answers at."""
    records = []
    for s in range(SERVICES):
        svc = f"svc{s}"
        routes = tuple(
            RouteSpec(
                FILLER_SHAPES[k % len(FILLER_SHAPES)].format(svc=svc, j=k // len(FILLER_SHAPES)),
                ("GET", "HEAD"),
                public=True,
            )
            for k in range(ROUTES_PER_SERVICE)
        )
        # Nothing listens there and nothing is sent there (loopback anyway).
        records.append(InstanceRecord(svc, "i0", f"http://127.0.0.1:{20000 + s}", routes))
    return RoutingTable.from_records(records)


def users_change(upstream: str, template: str, revision: int) -> Upsert:
    """The watch event of ``users`` (at ``upstream``) now publishing the public route
    ``GET template``: what the view applies when the registry says so."""
    record = InstanceRecord("users", "u0", upstream, (RouteSpec(template, ("GET",), public=True),))
    key = instance_key(DEFAULT_PREFIX, "users", "u0")
    return Upsert(Entry(key, record.encode(), FIRST_REVISION, revision), revision)


def bench_reload(args: argparse.Namespace, procs: Processes, upstream: str) -> None:
    table = public_table()
    port, options, conf = start_rendered_nginx(
        procs, args.nginx, "nginx-1000", table, "/not-a-route", 404
    )
    prefix = options.prefix
    reload_argv = [args.nginx, "-p", prefix, "-c", str(conf), "-s", "reload"]
    text0 = conf.read_text()

    apply_ms: list[float] = []
    render_ms: list[float] = []
    write_ms: list[float] = []
    signal_ms: list[float] = []
    until_served_ms: list[float] = []
    total_ms: list[float] = []
    check_ms: list[float] = []
    stale = 0
    for k in range(args.reps):
        new_route = f"/users/{7000 + k}"  # a static public route, new in this repetition
        if status_of(port, new_route) != 404:
            raise RuntimeError(f"{new_route} already served before the change")
        gc.collect()
        change = users_change(upstream, new_route, FIRST_REVISION + k)
        t_apply = time.perf_counter()
        table = table.apply(change)  # replaces the previous repetition's route
        t0 = time.perf_counter()  # the table changed
        text = render(table, options)
        t1 = time.perf_counter()
        if not write_if_changed(conf, text):
            raise RuntimeError("the rendered configuration did not change")
        t2 = time.perf_counter()
        result = subprocess.run(reload_argv, capture_output=True, text=True, timeout=30)
        t3 = time.perf_counter()
        if result.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed: {result.stderr.strip()}")
        deadline = t3 + 20
        while True:
            status = status_of(port, new_route)
            if status not in (404, None):
                break
            stale += 1
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{new_route} still {status} 20 s after the reload")
            time.sleep(0.001)
        t4 = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"{new_route} answered {status} after the reload, not 200")
        apply_ms.append((t0 - t_apply) * 1000)
        render_ms.append((t1 - t0) * 1000)
        write_ms.append((t2 - t1) * 1000)
        signal_ms.append((t3 - t2) * 1000)
        until_served_ms.append((t4 - t3) * 1000)
        total_ms.append((t4 - t0) * 1000)
        # nginx -t on the same text, as `meshware edge nginx --watch` runs before writing
        c0 = time.perf_counter()
        validate(text, nginx=args.nginx)
        check_ms.append((time.perf_counter() - c0) * 1000)
        time.sleep(args.settle)  # let the old worker exit before the next repetition

    def ms(xs: list[float]) -> str:
        return spread(xs, ".1f") + " ms"

    n_routes = len(table.routes())
    print(
        f"2. re-render and reload, {SERVICES * ROUTES_PER_SERVICE:,} public routes of {SERVICES} "
        f"services (+1 route of users per change: {n_routes:,} in the table); configuration "
        f"{len(text0) / 1024:.0f} KiB, {text0.count(chr(10)):,} lines; "
        f"{args.reps} repetitions, median (min..max)"
    )
    print(f"  table.apply(watch event)     {ms(apply_ms)} (not counted below)")
    print(f"  render()                     {ms(render_ms)}")
    print(f"  nginx -t (validate())        {ms(check_ms)}")
    print(f"  write_if_changed()           {ms(write_ms)}")
    print(f"  nginx -s reload (command)    {ms(signal_ms)}")
    print(
        f"  reload command -> new route 200   {ms(until_served_ms)} ({stale} probes saw 404 first)"
    )
    print(f"  [2] table change -> served by nginx (render+write+reload+first 200): {ms(total_ms)}")
    with_check = [t + c for t, c in zip(total_ms, check_ms, strict=True)]
    print(
        f"      with the nginx -t check --watch runs first (debounce not counted): {ms(with_check)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 20 s)")
    parser.add_argument("--rounds", type=int, help="rounds of 1 (default 31; quick 11)")
    parser.add_argument(
        "--requests", type=int, help="requests per variant per round in 1 (default 500; quick 400)"
    )
    parser.add_argument("--reps", type=int, help="repetitions of 2 (default 25; quick 9)")
    parser.add_argument(
        "--settle", type=float, default=0.3, help="seconds between the reloads of 2"
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args()
    defaults = {"rounds": (31, 11), "requests": (500, 400), "reps": (25, 9)}  # (default, quick)
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="meshware-bench-edge-"))
    tmp.chmod(0o755)  # nginx workers may run as another user
    procs = Processes(tmp)
    try:
        upstream = start_upstream(procs, "upstream")
        nginx_port, _, _ = start_rendered_nginx(
            procs, args.nginx, "nginx-users", users_table(upstream), PATH, 200
        )
        via_proxy = start_proxy(procs, upstream)
        version = subprocess.run([args.nginx, "-v"], capture_output=True, text=True).stderr
        print(
            f"meshware {meshware.__version__}, httpx {httpx.__version__}, Python "
            f"{sys.version.split()[0]}, {version.strip().removeprefix('nginx version: ')}, "
            f"{os.cpu_count()} CPUs; upstream: uvicorn (bench/_upstream.py); nginx: rendered "
            "configuration, 1 worker; proxy: MeshProxy public-only under uvicorn"
        )
        bench_added_latency(args, upstream, f"http://127.0.0.1:{nginx_port}", via_proxy)
        bench_reload(args, procs, upstream)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
