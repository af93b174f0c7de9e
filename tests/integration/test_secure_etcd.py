"""Members and views reach an etcd with authentication or TLS purely through MESHWARE_* settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import meshware
from meshware.testing.etcd import EtcdServer, find_etcd_binary

from .conftest import Servers, free_port, wait_table

USER, PASSWORD = "orders-svc", "s3cret"


@pytest.fixture
def auth_etcd() -> Iterator[EtcdServer]:
    """An etcd where USER may only read and write keys under /app/."""
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary")
    with EtcdServer() as etcd:
        for command in (
            ["user", "add", "root:rootpw"],
            ["role", "add", "app"],
            ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix=true"],
            ["user", "add", f"{USER}:{PASSWORD}"],
            ["user", "grant-role", USER, "app"],
            ["auth", "enable"],
        ):
            etcd.etcdctl(*command)
        yield etcd


def test_member_and_view_authenticate_with_user_and_password(auth_etcd: EtcdServer) -> None:
    servers = Servers(auth_etcd, "/app/mesh")
    try:
        proc = servers.uvicorn(
            "orders_service:app",
            free_port(),
            MESHWARE_ETCD_USERNAME=USER,
            MESHWARE_ETCD_PASSWORD=PASSWORD,
        )
        with meshware.connect(
            etcd_endpoints=auth_etcd.endpoint,
            prefix="/app/mesh",
            etcd_username=USER,
            etcd_password=PASSWORD,
        ) as view:
            table = wait_table(view, lambda t: bool(t.instances("orders")), procs=(proc,))
            assert table.resolve("GET", "/orders/7").service == "orders"
    finally:
        servers.stop_all()


def test_wrong_password_leaves_the_app_serving_and_says_why(
    auth_etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", "meshware"):
        view = meshware.connect(
            etcd_endpoints=auth_etcd.endpoint,
            prefix="/app/mesh",
            etcd_username=USER,
            etcd_password="wrong",
        )
        view.stop()
    assert view.table.services == ()
    assert any("authentication failed" in r.getMessage() for r in caplog.records)


def test_member_and_view_use_tls_with_a_client_certificate(certs: Path, mesh_prefix: str) -> None:
    if find_etcd_binary() is None:
        pytest.skip("no etcd binary")
    tls = {
        "MESHWARE_ETCD_CA_FILE": str(certs / "ca.pem"),
        "MESHWARE_ETCD_CERT_FILE": str(certs / "client.pem"),
        "MESHWARE_ETCD_KEY_FILE": str(certs / "client.key"),
    }
    with EtcdServer(
        cert_file=str(certs / "server.pem"),
        key_file=str(certs / "server.key"),
        trusted_ca_file=str(certs / "ca.pem"),
        client_cert_auth=True,
    ) as etcd:
        servers = Servers(etcd, mesh_prefix)
        try:
            proc = servers.uvicorn("orders_service:app", free_port(), **tls)
            with meshware.connect(
                etcd_endpoints=etcd.endpoint,
                prefix=mesh_prefix,
                etcd_ca_file=tls["MESHWARE_ETCD_CA_FILE"],
                etcd_cert_file=tls["MESHWARE_ETCD_CERT_FILE"],
                etcd_key_file=tls["MESHWARE_ETCD_KEY_FILE"],
            ) as view:
                wait_table(view, lambda t: bool(t.instances("orders")), procs=(proc,))
        finally:
            servers.stop_all()
