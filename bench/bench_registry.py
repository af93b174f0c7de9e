"""Registry at scale: what one instance event costs etcd and every watcher, schema 1 against 2.

Run: ``python bench/bench_registry.py`` (``--quick`` for 10 and 100 streams, fewer rounds).

It starts its own etcd (default limits), publishes one instance each of two 1,000-route services
(one writing schema-1 records, one schema 2, under the same prefix), then holds N raw watch
streams on the prefix (N = 10, 100, 1,000, all from this process: one socket each, read by one
selector thread) and one real :class:`meshware.MeshView` in a process of its own
(``_view_probe.py``). Each round, for each schema in turn (the order alternates between rounds),
it runs the events of an instance's life:

* ``join``: a second instance of the service registers (for schema 2 its route set is already
  published by the first one);
* ``weight``: that instance's record is put again with another weight;
* ``drain``: it is marked draining;
* ``leave``: it withdraws (delete, then the lease is revoked);
* ``new set``: an instance with 1,000 *new* routes joins (a deploy), then leaves (not measured).

Measured per event, medians over the rounds:

* **bytes per watcher**: every byte read from the N watch sockets (HTTP chunk framing
  included) from the start of the event until every stream has received all its events,
  divided by N: what etcd sends each watcher on the wire (TCP/IP headers aside);
* **etcd CPU**: user + system time of the etcd process over the same span (``/proc``);
* **fan-out**: time from the start of the event until the last of the N streams has it;
* **to view**: time from the start of the event until the MeshView's table shows it (its own
  process, so that reading the N streams here does not slow it down).

Then, with the N streams still held, ``--latency`` events (a schema-2 instance alternately
draining and serving, one etcd event each) give p50/p99 of fan-out and of event-to-view. Last,
the bytes a cold start fetches for 30 instances of the 1,000-route service in each schema.
It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from meshware import InstanceRecord, RouteSpec
from meshware._registrar import Registrar
from meshware.etcd import EtcdClient
from meshware.etcd._protocol import _b64, prefix_range_end
from meshware.registry.etcd import EtcdRegistry
from meshware.testing.etcd import EtcdServer

ROUTES = 1000
SET_TTL = 3600  # no route set expires during the run (its DELETE would land in a measurement)
EVENTS = ["join", "weight", "drain", "leave", "new set"]


def routes(tag: str, n: int = ROUTES) -> tuple[RouteSpec, ...]:
    """A realistic mix: static, typed, str and path parameters, 1-3 methods, names, policy."""
    out = []
    for i in range(n):
        group = f"/api/{tag}/g{i // 50}"
        kind = i % 4
        methods: tuple[str, ...]
        if kind == 0:
            t, methods = f"{group}/items{i}", ("GET", "HEAD", "OPTIONS")
        elif kind == 1:
            t, methods = f"{group}/items{i}/{{item_id:int}}", ("GET", "PUT", "DELETE")
        elif kind == 2:
            t, methods = f"{group}/by-name{i}/{{name}}", ("GET", "HEAD")
        else:
            t, methods = f"{group}/files{i}/{{rest:path}}", ("GET",)
        out.append(
            RouteSpec(
                t,
                methods,
                name=f"{tag}_endpoint_{i}",
                public=i % 3 == 0,
                idempotent=True if kind == 1 else None,
            )
        )
    return tuple(out)


def record(service: str, iid: str, specs: tuple[RouteSpec, ...], port: int) -> InstanceRecord:
    return InstanceRecord(
        service,
        iid,
        f"http://10.1.{port // 250 % 250}.{port % 250}:{port}",
        specs,
        version="2026.12.04-1",
        zone="zone-a",
        framework="flask",
        pid=40000 + port,
        hostname=f"web-{port}",
        started_at=time.time(),
    )


def etcd_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the etcd process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- raw watch streams


class Streams:
    """N raw HTTP watch streams on one prefix, read by one selector thread; bytes counted.

    An etcd event is counted by its ``"kv":`` field (once per event in a watch answer; the
    values are base64, so the text appears nowhere else) once the answer's line has ended.
    """

    MARK = b'"kv":'

    def __init__(self, host: str, port: int, prefix: str, n: int) -> None:
        create = {"key": _b64(prefix), "range_end": _b64(prefix_range_end(prefix))}
        body = json.dumps({"create_request": create}).encode()
        request = (
            f"POST /v3/watch HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.bytes = [0] * n
        self.events = [0] * n
        self._tail = [b""] * n
        self._pending = [0] * n  # events seen in an answer whose line has not ended yet
        self._cond = threading.Condition()
        self._sel = selectors.DefaultSelector()
        self._socks = []
        for i in range(n):
            s = socket.create_connection((host, port))
            s.sendall(request)
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, i)
            self._socks.append(s)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.wait_all(lambda i: self.bytes[i] > 0)  # every stream answered (watch created)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.2):
                i = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self._sel.unregister(sock)
                    continue
                # an event counts once its answer is complete (its line ends): the bytes of a
                # large value still in flight belong to this event, not the next one
                joined = self._tail[i] + data
                self._tail[i] = joined[-(len(self.MARK) - 1) :]
                end = joined.rfind(b"\n")
                with self._cond:
                    self.bytes[i] += len(data)
                    if end < 0:
                        self._pending[i] += joined.count(self.MARK)
                    else:
                        self.events[i] += self._pending[i] + joined.count(self.MARK, 0, end)
                        self._pending[i] = joined.count(self.MARK, end)
                    self._cond.notify_all()

    def snapshot(self) -> tuple[int, list[int]]:
        with self._cond:
            return sum(self.bytes), list(self.events)

    def wait_all(self, done: Callable[[int], bool], timeout: float = 300) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: all(done(i) for i in range(len(self.bytes))), timeout)
        if not ok:
            raise TimeoutError("the watch streams did not all receive the event")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for s in self._socks:
            s.close()
        self._sel.close()


# --------------------------------------------------------------------------- one event


@dataclass
class Cost:
    bytes_per_watcher: float
    cpu_ms: float
    fanout_ms: float
    arrive_ms: float  # the event reached the view's watch (before the table applies it)
    view_ms: float  # the view's table shows it


Expect = tuple[str, str, "str | None", int]  # service, url, state (None: gone), weight


class Bench:
    """One prefix, N streams, a view process; runs events and measures them."""

    def __init__(self, etcd: EtcdServer, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.registry = EtcdRegistry(EtcdClient(etcd.endpoint, timeout=30))
        probe = Path(__file__).with_name("_view_probe.py")
        self.probe = subprocess.Popen(
            [sys.executable, str(probe), etcd.endpoint, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.probe.stdout is not None
        assert self.probe.stdout.readline().strip() == "ready"
        self.streams: Streams | None = None
        self.n = 0

    def ask(self, expect: Expect, since: float = 0.0) -> None:
        """Have the view process report when its table shows ``expect``."""
        assert self.probe.stdin is not None
        service, url, state, weight = expect
        ask = {"service": service, "url": url, "state": state, "weight": weight, "since": since}
        self.probe.stdin.write(json.dumps(ask) + "\n")
        self.probe.stdin.flush()

    def answer(self) -> tuple[float, float]:
        assert self.probe.stdout is not None
        arrived, shown = self.probe.stdout.readline().split()
        return float(arrived), float(shown)

    def event(self, run: Callable[[], object], events: int, expect: Expect) -> Cost:
        """Run one registry event made of ``events`` etcd events; what it cost."""
        streams = self.streams
        assert streams is not None
        assert self.etcd.pid is not None
        total0, counts0 = streams.snapshot()
        cpu0 = etcd_cpu(self.etcd.pid)
        t0 = time.monotonic()
        self.ask(expect, since=t0)
        run()
        streams.wait_all(lambda i: streams.events[i] >= counts0[i] + events)
        t1 = time.monotonic()
        cpu1 = etcd_cpu(self.etcd.pid)
        arrived, shown = self.answer()
        total1, _ = streams.snapshot()
        return Cost(
            (total1 - total0) / self.n,
            (cpu1 - cpu0) * 1000,
            (t1 - t0) * 1000,
            (arrived - t0) * 1000,
            (shown - t0) * 1000,
        )

    def registrar(self, rec: InstanceRecord, schema: int = 2) -> Registrar:
        return Registrar(
            self.registry, rec, prefix=self.prefix, ttl=30, schema=schema, routeset_ttl=SET_TTL
        )

    def close(self) -> None:
        if self.streams is not None:
            self.streams.close()
        if self.probe.stdin is not None:
            self.probe.stdin.close()
        self.probe.wait(10)
        self.registry.close()


def life_of_an_instance(b: Bench, schema: int, rnd: int, results: dict[str, list[Cost]]) -> None:
    service = f"s{schema}"
    port = 20000 + rnd * 10 + schema
    joiner = b.registrar(
        record(service, f"{service}-join-{rnd}", routes(f"{service}base"), port), schema
    )
    url = joiner.record.url
    results[f"join/{schema}"].append(b.event(joiner.start, 1, (service, url, "serving", 100)))

    weighted = dataclasses.replace(joiner.record, weight=50)
    results[f"weight/{schema}"].append(
        b.event(lambda: joiner.update(weighted), 1, (service, url, "serving", 50))
    )
    results[f"drain/{schema}"].append(b.event(joiner.drain, 1, (service, url, "draining", 50)))
    results[f"leave/{schema}"].append(b.event(joiner.withdraw, 1, (service, url, None, 100)))

    specs = routes(f"{service}v{rnd}")
    fresh = b.registrar(record(service, f"{service}-deploy-{rnd}", specs, port + 5), schema)
    events = 1 if fresh.routeset is None else len(fresh.routeset.routeset.chunks) + 1
    new_url = fresh.record.url
    results[f"new set/{schema}"].append(
        b.event(fresh.start, events, (service, new_url, "serving", 100))
    )
    b.event(fresh.withdraw, 1, (service, new_url, None, 100))  # not counted


def latency(b: Bench, count: int) -> list[Cost]:
    """The costs of ``count`` schema-2 state changes of one instance (one etcd event each)."""
    r = b.registrar(record("s2", "s2-latency", routes("s2base"), 29999))
    r.start()
    assert r.routeset is not None
    url = r.record.url
    out = []
    for k in range(count):
        state: Literal["serving", "draining"] = "draining" if k % 2 == 0 else "serving"
        changed = r.record.with_state(state)
        out.append(b.event(lambda changed=changed: r.update(changed), 1, ("s2", url, state, 100)))
    b.event(r.withdraw, 1, ("s2", url, None, 100))
    return out


def cold_start_bytes(etcd: EtcdServer, instances: int = 30) -> dict[int, int]:
    """Bytes of the range answer a cold view fetches for ``instances`` of one service."""
    out = {}
    for schema in (1, 2):
        prefix = f"/bench-cold-{schema}"
        registry = EtcdRegistry(EtcdClient(etcd.endpoint, timeout=30))
        regs = [
            Registrar(
                registry,
                record("cold", f"c{i}", routes("cold"), 30000 + i),
                prefix=prefix,
                ttl=30,
                schema=schema,
                routeset_ttl=SET_TTL,
            )
            for i in range(instances)
        ]
        for r in regs:
            r.start()
        body = {"key": _b64(prefix + "/"), "range_end": _b64(prefix_range_end(prefix + "/"))}
        out[schema] = len(httpx.post(f"{etcd.endpoint}/v3/kv/range", json=body).content)
        for r in regs:
            r.withdraw()
        registry.client.delete_prefix(prefix + "/")
        registry.close()
    return out


# --------------------------------------------------------------------------- report


def med(costs: list[Cost], attr: str) -> float:
    return float(statistics.median(getattr(c, attr) for c in costs))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def report(
    table: dict[int, dict[str, list[Cost]]], lat: dict[int, list[Cost]], cold: dict[int, int]
) -> None:
    counts = sorted(table)
    print()
    print("Per event, medians: bytes each watcher reads on the wire; etcd CPU; time until all N")
    print("streams have it (fan-out); time until a MeshView's table shows it (to view).")
    print()
    header = (
        f"{'event':<8} {'streams':>7} | {'bytes/watcher s1':>16} {'s2':>9} {'s1/s2':>6} | "
        f"{'etcd CPU s1':>11} {'s2':>8} | {'fan-out s1':>10} {'s2':>8} | "
        f"{'to view s1':>10} {'s2':>8}"
    )
    print(header)
    print("-" * len(header))
    for e in EVENTS:
        for n in counts:
            r1, r2 = table[n][f"{e}/1"], table[n][f"{e}/2"]
            b1, b2 = med(r1, "bytes_per_watcher"), med(r2, "bytes_per_watcher")
            print(
                f"{e:<8} {n:>7} | {fmt_bytes(b1):>16} {fmt_bytes(b2):>9} {b1 / b2:>5.0f}x | "
                f"{med(r1, 'cpu_ms'):>8.0f} ms {med(r2, 'cpu_ms'):>5.0f} ms | "
                f"{med(r1, 'fanout_ms'):>7.0f} ms {med(r2, 'fanout_ms'):>5.0f} ms | "
                f"{med(r1, 'view_ms'):>7.0f} ms {med(r2, 'view_ms'):>5.0f} ms"
            )
    print()
    print("Schema-2 instance events (a state change each) with the N streams held; 'reaches the")
    print("view': its watch has the event; 'in the view's table': after the table's rebuild of the")
    print("1,000-route service (about 100 ms of Python today: issue 13):")
    for n in counts:
        fan = [c.fanout_ms for c in lat[n]]
        arrive = [c.arrive_ms for c in lat[n]]
        view = [c.view_ms for c in lat[n]]
        print(
            f"  {n:>4} streams, {len(fan)} events, p50/p99: fan-out to all N "
            f"{pct(fan, 0.5):.0f}/{pct(fan, 0.99):.0f} ms | reaches the view "
            f"{pct(arrive, 0.5):.0f}/{pct(arrive, 0.99):.0f} ms | in the view's table "
            f"{pct(view, 0.5):.0f}/{pct(view, 0.99):.0f} ms"
        )
    top = counts[-1]
    print()
    print(f"On paper, 10,000 watchers (bytes x 10,000; etcd CPU scaled from {top} streams):")
    per = {k: med(v, "bytes_per_watcher") for k, v in table[top].items()}
    for e in EVENTS:
        c1 = med(table[top][f"{e}/1"], "cpu_ms") * 10_000 / top / 1000
        c2 = med(table[top][f"{e}/2"], "cpu_ms") * 10_000 / top / 1000
        print(
            f"  {e:<8} schema 1 {fmt_bytes(per[f'{e}/1'] * 10_000):>9}, {c1:6.1f} s etcd CPU | "
            f"schema 2 {fmt_bytes(per[f'{e}/2'] * 10_000):>9}, {c2:6.2f} s etcd CPU"
        )
    deploy1 = 30 * (per["join/1"] + per["drain/1"] + per["leave/1"]) * 10_000
    deploy2 = (
        per["new set/2"] + 29 * per["join/2"] + 30 * (per["drain/2"] + per["leave/2"])
    ) * 10_000
    print(
        f"  rolling deploy of 30 instances with a new route set: schema 1 {fmt_bytes(deploy1)}, "
        f"schema 2 {fmt_bytes(deploy2)}"
    )
    print()
    print(
        f"cold start, 30 instances of a {ROUTES}-route service: the range answer is "
        f"{fmt_bytes(cold[1])} (schema 1), {fmt_bytes(cold[2])} (schema 2)"
    )
    worst = max(per[f"{e}/2"] for e in ("join", "weight", "drain", "leave"))
    print(
        f"largest schema-2 instance event per watcher: {worst:.0f} B "
        f"({'within' if worst <= 1024 else 'OVER'} 1 KB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 streams, 2 rounds")
    parser.add_argument("--streams", default=None, help="comma-separated counts (10,100,1000)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--latency", type=int, default=200, help="events for the p99")
    args = parser.parse_args()
    default = "10,100" if args.quick else "10,100,1000"
    counts = [int(x) for x in (args.streams or default).split(",")]
    rounds = args.rounds or (2 if args.quick else 3)
    print(f"bench_registry: two {ROUTES}-route services, rounds={rounds}, streams={counts}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    table: dict[int, dict[str, list[Cost]]] = {}
    lat: dict[int, list[Cost]] = {}
    with EtcdServer() as etcd:
        for n in counts:
            b = Bench(etcd, f"/bench-{n}")
            try:
                base = [
                    b.registrar(record(f"s{s}", f"s{s}-base", routes(f"s{s}base"), 10000 + s), s)
                    for s in (1, 2)
                ]
                for r in base:
                    r.start()
                    b.ask((r.record.service, r.record.url, "serving", 100))
                    b.answer()  # the base instances are in the view
                b.streams = Streams("127.0.0.1", etcd.client_port, b.prefix + "/", n)
                b.n = n
                results: dict[str, list[Cost]] = {f"{e}/{s}": [] for e in EVENTS for s in (1, 2)}
                for rnd in range(rounds):
                    for schema in (1, 2) if rnd % 2 == 0 else (2, 1):
                        life_of_an_instance(b, schema, rnd, results)
                table[n] = results
                lat[n] = latency(b, args.latency if n == counts[-1] else max(20, args.latency // 5))
                for r in base:
                    r.withdraw()
            finally:
                b.close()
            print(f"  {n} streams: done", flush=True)
        cold = cold_start_bytes(etcd)
    report(table, lat, cold)
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
