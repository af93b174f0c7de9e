"""Per-service write permissions with etcd's RBAC (issue 12, finding 6c), on a real etcd with
auth enabled by `meshware etcd setup-auth` and roles made by `meshware etcd grant`: a service
writes its own keys and nobody else's; readers read everything."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import meshware
from meshware import EtcdAuthError, InstanceRecord, RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._core.records import instance_key
from meshware._member import Member
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer, find_etcd_binary

pytestmark = pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary")
PREFIX = "/mesh"


@pytest.fixture
def etcd(monkeypatch: pytest.MonkeyPatch) -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        options = ["--etcd", server.endpoint, "--prefix", PREFIX]
        runner = CliRunner()
        done = runner.invoke(
            main,
            [
                "etcd",
                "setup-auth",
                "--root-password",
                "rootpw",
                "--reader-password",
                "readpw",
                *options,
            ],
        )
        assert done.exit_code == 0, done.output
        monkeypatch.setenv("MESHWARE_ETCD_USERNAME", "root")
        monkeypatch.setenv("MESHWARE_ETCD_PASSWORD", "rootpw")
        for service, password in (("users", "upw"), ("orders", "opw")):
            done = runner.invoke(main, ["etcd", "grant", service, "--password", password, *options])
            assert done.exit_code == 0, done.output
            assert f"write {PREFIX}/v1/instances/{service}/" in done.output
        monkeypatch.delenv("MESHWARE_ETCD_USERNAME")
        monkeypatch.delenv("MESHWARE_ETCD_PASSWORD")
        yield server


def record(service: str) -> bytes:
    return InstanceRecord(
        service, "x1", "http://127.0.0.1:9", (RouteSpec(f"/{service}", ("GET",)),)
    ).encode()


def test_a_service_writes_its_own_keys_and_not_anothers(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint, username="orders", password="opw") as orders:
        orders.put(instance_key(PREFIX, "orders", "x1"), record("orders"))
        for key in (
            instance_key(PREFIX, "users", "x1"),  # another service's record
            f"{PREFIX}/v1/routesets/users/abc/0",  # another service's route set
            f"{PREFIX}/v1/instances/orders-admin/x1",  # a name that starts like its own
            f"{PREFIX}/v1/overrides/weights/users",  # operator keys
        ):
            with pytest.raises(EtcdAuthError):
                orders.put(key, record("users"))
        with pytest.raises(EtcdAuthError):
            orders.delete(instance_key(PREFIX, "users", "x1"))
        assert orders.get(instance_key(PREFIX, "orders", "x1")) is not None  # reads the mesh
    with EtcdClient(etcd.endpoint) as anonymous, pytest.raises(EtcdAuthError):
        anonymous.put(instance_key(PREFIX, "users", "x1"), record("users"))


def test_members_register_with_their_role_and_readers_read_everything(etcd: EtcdServer) -> None:
    settings = MemberSettings(
        service="users",
        etcd=EtcdSettings(
            endpoints=(etcd.endpoint,), prefix=PREFIX, username="users", password="upw"
        ),
        advertise_url="http://127.0.0.1:8123",
        lease_ttl=2,
        strict=True,
        drain_delay=0,
    )
    member = Member(
        settings,
        routes=lambda: [RouteSpec("/users", ("GET",))],
        routing="specificity",
        framework="test",
    )
    member.start()
    try:
        assert member.wait_registered(5)
        with meshware.connect(
            etcd_endpoints=etcd.endpoint,
            prefix=PREFIX,
            etcd_username="meshware-reader",
            etcd_password="readpw",
        ) as view:
            view.wait_for(lambda t: "users" in t.services)
        with (
            EtcdClient(etcd.endpoint, username="meshware-reader", password="readpw") as reader,
            pytest.raises(EtcdAuthError),
        ):
            reader.put(instance_key(PREFIX, "users", "x2"), record("users"))
    finally:
        member.stop()
    with EtcdClient(etcd.endpoint, username="users", password="upw") as users:
        assert users.get_prefix(f"{PREFIX}/v1/instances/users/").kvs == []  # withdrew (and revoked)
