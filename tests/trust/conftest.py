"""Helpers for the registry-trust drills: a real HTTP server in a thread, raw etcd writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f'{{"port": {self.server.server_address[1]}}}'.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class HTTPServers:
    """Real HTTP servers on loopback (http.server in threads): ``start()`` gives a base URL."""

    def __init__(self) -> None:
        self.servers: list[ThreadingHTTPServer] = []

    def start(self) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def stop(self, url: str) -> None:
        for server in self.servers:
            if url.endswith(f":{server.server_address[1]}"):
                server.shutdown()
                server.server_close()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def http_servers() -> Iterator[HTTPServers]:
    servers = HTTPServers()
    yield servers
    servers.close()
