"""The per-instance free-list pool (meshware._pool) against a real HTTP/1.1 server.

The server is the standard library's threading HTTP server (keep-alive, one thread per
connection); it records which client connection carried each request, so the tests see how many
connections the pool opened and whether it reused them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import respx

import meshware
from meshware import InstanceRecord, RouteSpec, RoutingTable


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        with server.lock:
            server.peers.append(self.client_address[1])
        if self.path.startswith("/users/slow"):
            time.sleep(0.05)
        close = self.path.startswith("/users/close")
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.peers: list[int] = []


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def table_for(server: _Server) -> RoutingTable:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    routes = (RouteSpec("/users/{name}", ("GET",)),)
    return RoutingTable.from_records([InstanceRecord("users", "u0", url, routes)])


def test_sequential_requests_reuse_one_connection(server: _Server) -> None:
    with meshware.Client(table_for(server), trust_env=False) as c:
        for _ in range(20):
            assert c.get("/users/a").status_code == 200
    assert len(server.peers) == 20
    assert len(set(server.peers)) == 1


def test_a_connection_the_server_closed_is_not_reused(server: _Server) -> None:
    with meshware.Client(table_for(server), trust_env=False) as c:
        assert c.get("/users/close").status_code == 200
        assert c.get("/users/a").status_code == 200
        assert c.get("/users/a").status_code == 200
    assert len(set(server.peers)) == 2  # a new connection after the close, then reused


def test_threads_share_the_pool_within_max_connections(server: _Server) -> None:
    errors: list[BaseException] = []
    with meshware.Client(
        table_for(server), trust_env=False, limits=httpx.Limits(max_connections=2)
    ) as c:

        def work() -> None:
            try:
                for _ in range(5):
                    assert c.get("/users/slow").status_code == 200
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert len(server.peers) == 30
    assert len(set(server.peers)) <= 2  # six threads waited their turn on two connections


def test_waiting_for_a_connection_honours_the_pool_timeout(server: _Server) -> None:
    with meshware.Client(
        table_for(server),
        trust_env=False,
        retries=0,
        limits=httpx.Limits(max_connections=1),
        timeout=httpx.Timeout(5.0, pool=0.05),
    ) as c:
        with c.stream("GET", "/users/a") as held:  # its connection is busy until closed
            with pytest.raises(httpx.PoolTimeout):
                c.get("/users/b")
            held.read()
        assert c.get("/users/b").status_code == 200  # given back on close


def test_respx_still_mocks_mesh_requests(server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{url}/users/a").respond(200, json={"mocked": True})
        with meshware.Client(table_for(server), trust_env=False) as c:
            assert c.get("/users/a").json() == {"mocked": True}
    assert route.called
    assert server.peers == []  # nothing reached the real server


def test_async_requests_in_flight_share_connections_and_give_them_back(server: _Server) -> None:
    async def run() -> list[int]:
        async with meshware.AsyncClient(
            table_for(server), trust_env=False, limits=httpx.Limits(max_connections=4)
        ) as c:
            answers = await asyncio.gather(*(c.get("/users/slow") for _ in range(16)))
            # a cancelled request gives its connection back (or closes it): no leak, no hang
            task = asyncio.ensure_future(c.get("/users/slow"))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            answers += await asyncio.gather(*(c.get("/users/a") for _ in range(8)))
            return [r.status_code for r in answers]

    assert asyncio.run(run()) == [200] * 24
    assert len(set(server.peers)) <= 5  # four at most at a time; one may have been cancelled
