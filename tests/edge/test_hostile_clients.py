"""Hostile clients against the real edges: each malformed or abusive request gets a clear 4xx.

The public-only proxy runs under uvicorn with :func:`meshware.edge.serve.uvicorn_config`, as
``meshware proxy`` does; nginx runs the rendered configuration. Slow-client tests are bounded by
the proxy's short test timeouts (``PROXY_LIMITS`` in conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import meshware
from meshware import RoutingTable
from meshware.edge.proxy import MeshProxy
from meshware.edge.serve import ProxyLimits, uvicorn_config

from .conftest import PROXY_LIMITS, REWRITES, free_port, raw, wait_port

H = b"Host: edge.test\r\n"
GOOD = b"GET /users/42 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"


@pytest.fixture(params=["nginx", "proxy"])
def edge(request: pytest.FixtureRequest) -> int:
    return int(request.getfixturevalue(f"{request.param}_port"))


@pytest.mark.parametrize(
    "line",
    [
        b"GET /users/42 HTTP/9.9",
        b"GET /users/42 HTTP/2.0",
        b"GET /users/42 HTTP/0.9",
        b"GET /users/42 FTP/1.1",
        b"GET /users/42 HTTP/1.1 extra",
        b"G(T /users/42 HTTP/1.1",
    ],
)
def test_malformed_request_lines_get_400(edge: int, line: bytes) -> None:
    status, data = raw(edge, line + b"\r\n" + H + b"\r\n")
    assert status == 400, data[:200]


def test_http_0_9_is_refused_with_an_answer(edge: int, proxy_port: int) -> None:
    started = time.monotonic()
    status, data = raw(edge, b"GET /users/42\r\n", timeout=5)
    if edge == proxy_port:
        assert status == 400, data[:200]
    else:  # nginx answers an HTTP/0.9 request in HTTP/0.9: a body, no status line
        assert b"400 Bad Request" in data, data[:200]
    assert b"get_user" not in data
    assert time.monotonic() - started < 1.0  # at once, not after a header timeout


def test_a_declared_body_over_the_limit_gets_413(edge: int) -> None:
    status, _ = raw(
        edge, b"POST /users HTTP/1.1\r\n" + H + b"Content-Length: 100000\r\n\r\n" + b"x" * 100
    )
    assert status == 413


def test_a_chunked_body_over_the_limit_gets_413(edge: int) -> None:
    chunk = b"%x\r\n%s\r\n" % (32768, b"x" * 32768)
    status, data = raw(
        edge,
        b"POST /users HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3,
    )
    assert status == 413, data[:200]


def test_a_chunked_body_under_the_limit_goes_through(edge: int) -> None:
    status, data = raw(
        edge,
        b"POST /users HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert status == 201, data[:200]


def test_an_oversized_head_gets_4xx(edge: int, proxy_port: int) -> None:
    status, _ = raw(
        edge, b"GET /users/1 HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n"
    )
    assert status == (431 if edge == proxy_port else 400)


def test_the_proxy_says_431_for_too_many_header_bytes(proxy_port: int) -> None:
    many = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 100) for i in range(300))
    assert raw(proxy_port, b"GET /users/1 HTTP/1.1\r\n" + H + many + b"\r\n")[0] == 431


def test_proxied_answers_carry_one_date_and_at_most_one_server(edge: int) -> None:
    status, data = raw(edge, GOOD)
    assert status == 200
    head = data.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert sum(h.startswith(b"date:") for h in head) == 1
    assert sum(h.startswith(b"server:") for h in head) <= 1


def test_the_proxys_own_answers_carry_a_date(proxy_port: int) -> None:
    status, data = raw(proxy_port, b"GET /nowhere HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert status == 404
    assert b"\r\ndate: " in data.lower()


# --- slow clients (the proxy; PROXY_LIMITS: 1.5 s for a head, 1.5 s between body bytes) ------


def test_slowloris_gets_408_within_the_header_timeout(proxy_port: int) -> None:
    head = b"GET /users/42 HTTP/1.1\r\n" + H + b"X-Slow: " + b"a" * 200
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.settimeout(0.1)
        for byte in head:  # one byte every 20 ms: every byte well within any per-read timeout
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            with contextlib.suppress(TimeoutError):
                answer += s.recv(4096)
            if answer:
                break
            time.sleep(0.02)
            assert time.monotonic() - started < 8, "the head timeout never fired"
        s.settimeout(3)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(4096):
                answer += chunk
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert PROXY_LIMITS.header_timeout - 0.2 < elapsed < PROXY_LIMITS.header_timeout + 3


def test_a_stalled_body_gets_408(proxy_port: int) -> None:
    started = time.monotonic()
    status, data = raw(
        proxy_port,
        b"POST /users HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc",
        timeout=8,
        idle=8,
    )
    assert status == 408, data[:200]
    assert time.monotonic() - started < PROXY_LIMITS.body_timeout + 3


# --- many idle connections --------------------------------------------------------------------


@contextlib.contextmanager
def proxy_server(table: RoutingTable, limits: ProxyLimits) -> Iterator[int]:
    """A public-only proxy with ``limits`` under uvicorn in a thread; its port."""
    import uvicorn

    port = free_port()
    client = meshware.AsyncClient(table, total_timeout=10)
    app = MeshProxy(client, type("M", (), {"table": table})(), public_only=True, rewrites=REWRITES)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _enough_descriptors(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _open_idle(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        out.append(s)
    return out


def test_good_requests_are_answered_while_1000_idle_connections_are_held(
    edge_table: RoutingTable,
) -> None:
    # client and server live in this process: 2 descriptors per connection
    _enough_descriptors(2 * 1100 + 256)
    limits = ProxyLimits(max_connections=1100, header_timeout=60, keepalive_timeout=60)
    with proxy_server(edge_table, limits) as port:
        idle = _open_idle(port, 1000)
        try:
            started = time.monotonic()
            statuses = [raw(port, GOOD)[0] for _ in range(20)]
            took = time.monotonic() - started
            # the idle ones are still held (nothing was said to them)
            idle[0].setblocking(False)
            with pytest.raises(BlockingIOError):
                idle[0].recv(1)
        finally:
            for s in idle:
                s.close()
    assert statuses == [200] * 20
    assert took < 10


def test_connections_over_the_limit_get_503_at_once(edge_table: RoutingTable) -> None:
    limits = ProxyLimits(max_connections=50, header_timeout=60, keepalive_timeout=60)
    with proxy_server(edge_table, limits) as port:
        idle = _open_idle(port, 60)  # more than the limit: whichever are refused, 50 are held
        try:
            status, data = raw(port, GOOD)
            assert status == 503, data[:200]
            assert b"retry-after: 1" in data.lower()
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 5
        while raw(port, GOOD)[0] != 200:  # the freed slots serve again
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_connection_limit_fits_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        fitted = ProxyLimits(max_connections=10**7).effective_connections()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # raised to the hard limit if it could
        assert fitted < now
        assert ProxyLimits(max_connections=10).effective_connections() == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
