"""Strict mode refuses a service whose route would take paths another service serves
(cross-service shadowing, issue 12 finding 6a): the conflicts come from the table."""

from __future__ import annotations

import pytest

from meshware import InstanceRecord, RouteConflictError, RouteSpec
from meshware._config import EtcdSettings, MemberSettings
from meshware._core.records import instance_key
from meshware._member import Member
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer


def strict_member(etcd: EtcdServer, prefix: str, service: str, template: str) -> Member:
    settings = MemberSettings(
        service=service,
        etcd=EtcdSettings(endpoints=(etcd.endpoint,), prefix=prefix),
        advertise_url="http://127.0.0.1:8123",
        strict=True,
    )
    return Member(
        settings,
        routes=lambda: [RouteSpec(template, ("GET",))],
        routing="specificity",
        framework="test",
    )


@pytest.mark.parametrize("template", ["/users/{id:int}", "/users/1"])
def test_a_more_specific_route_over_another_services_is_refused(
    etcd_server: EtcdServer, mesh_prefix: str, template: str
) -> None:
    users = InstanceRecord(
        "users", "u1", "http://127.0.0.1:9", (RouteSpec("/users/{name}", ("GET",)),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        client.put(instance_key(mesh_prefix, "users", "u1"), users.encode())
    member = strict_member(etcd_server, mesh_prefix, "evil", template)
    with pytest.raises(RouteConflictError, match=r"would take paths of users"):
        member.check_strict()


def test_a_route_without_overlap_is_accepted(etcd_server: EtcdServer, mesh_prefix: str) -> None:
    users = InstanceRecord(
        "users", "u1", "http://127.0.0.1:9", (RouteSpec("/users/{name}", ("GET",)),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        client.put(instance_key(mesh_prefix, "users", "u1"), users.encode())
    strict_member(etcd_server, mesh_prefix, "orders", "/orders/{id:int}").check_strict()
