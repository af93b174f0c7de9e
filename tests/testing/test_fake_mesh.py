"""FakeMesh: real apps in process behind the real mesh client, with injected faults."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import meshware
from meshware.testing import FakeMesh, MeshClock

from .apps import make_orders, make_users


@pytest.fixture
def mesh() -> FakeMesh:
    with FakeMesh(clock=MeshClock(), seed=1) as m:
        m.add("users", make_users(), replicas=3)
        yield m


def test_requests_reach_the_app_that_publishes_the_route(mesh: FakeMesh) -> None:
    with mesh.client() as client:
        assert client.get("/users/1").json() == {"id": 1, "name": "Ada"}
        assert client.post("/users", json={"name": "Alan"}).status_code == 201
    assert {c.service for c in mesh.calls} == {"users"}


def test_the_routes_are_those_the_integration_publishes(mesh: FakeMesh) -> None:
    templates = {route.template.text for route, _ in mesh.table.routes()}
    assert templates == {"/users/{user_id:int}", "/users", "/users/{user_id:int}/greeting"}
    assert all(i.url.endswith(".fake-mesh.invalid") for i in mesh.table.instances("users"))


def test_an_asgi_service_calls_a_wsgi_service_through_the_mesh_with_its_lifespan(
    mesh: FakeMesh,
) -> None:
    orders = make_orders()
    mesh.add("orders", orders)
    assert orders.state.lifecycle == ["startup"]
    with mesh.client() as client:
        assert client.get("/orders/7").json()["user"]["name"] == "Ada"
    assert [c.service for c in mesh.calls] == ["users", "orders"]
    mesh.close()
    assert orders.state.lifecycle == ["startup", "shutdown"]


def test_a_sync_service_makes_its_own_calls_through_the_mesh(mesh: FakeMesh) -> None:
    with mesh.client() as client:
        assert client.get("/users/2/greeting").json() == {"greeting": "Hello, Grace"}
    assert [c.path for c in mesh.calls] == ["/users/2", "/users/2/greeting"]


def test_async_clients_reach_both_kinds_of_app(mesh: FakeMesh) -> None:
    mesh.add("orders", make_orders())

    async def go() -> list[int]:
        async with mesh.async_client() as client:
            a = await client.get("/users/1")
            b = await client.get("/orders/1")
            return [a.status_code, b.status_code]

    assert asyncio.run(go()) == [200, 200]


def test_a_connection_error_on_one_replica_fails_over(mesh: FakeMesh) -> None:
    mesh.fail("users", replica=0, with_=httpx.ConnectError)
    with mesh.client() as client:
        assert all(client.get("/users/1").status_code == 200 for _ in range(30))
    failed = [c for c in mesh.calls if c.error]
    assert failed
    assert {c.replica for c in failed} == {0}


def test_a_status_fault_for_a_number_of_calls_then_it_clears(mesh: FakeMesh) -> None:
    fault = mesh.fail("users", with_=503, times=2)
    with mesh.client(retries=0) as client:
        assert [client.get("/users/1").status_code for _ in range(3)] == [503, 503, 200]
    assert fault.hits == 2


def test_a_delay_longer_than_the_attempt_timeout_times_out_on_the_fake_clock(
    mesh: FakeMesh,
) -> None:
    mesh.delay("users", 5.0)
    start = mesh.clock()
    with mesh.client(retries=0) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/users/1", timeout=1.0)
    assert mesh.clock() - start == pytest.approx(1.0)


def test_a_killed_instance_refuses_then_leaves_when_its_lease_expires(mesh: FakeMesh) -> None:
    mesh.kill("users", replica=1)
    with mesh.client() as client:
        assert all(client.get("/users/1").status_code == 200 for _ in range(20))
    assert len(mesh.table.instances("users")) == 3
    mesh.clock.advance(mesh.lease_ttl + 0.1)
    assert len(mesh.table.instances("users")) == 2


def test_draining_instances_get_no_new_requests(mesh: FakeMesh) -> None:
    mesh.drain("users", replica=0)
    mesh.drain("users", replica=1)
    with mesh.client() as client:
        for _ in range(10):
            client.get("/users/1")
    assert {c.replica for c in mesh.calls} == {2}


def test_every_instance_gone_gives_no_endpoint_available(mesh: FakeMesh) -> None:
    mesh.drain("users")
    with mesh.client() as client, pytest.raises(meshware.NoEndpointAvailable):
        client.get("/users/1")


def test_a_registry_outage_keeps_the_last_known_table(mesh: FakeMesh) -> None:
    mesh.kill("users", replica=1)  # its record now lives under a lease
    mesh.outage()
    mesh.clock.advance(mesh.lease_ttl + 1)
    assert len(mesh.table.instances("users")) == 3  # nobody can tell while the registry is down
    with mesh.client() as client:
        assert client.get("/users/1").status_code == 200
    mesh.outage(False)
    assert len(mesh.table.instances("users")) == 2


def test_lease_expiry_removes_the_record(mesh: FakeMesh) -> None:
    mesh.expire("users", replica=2)
    assert len(mesh.table.instances("users")) == 2


def test_a_stubbed_service_answers_through_respx_and_records_calls(mesh: FakeMesh) -> None:
    billing = mesh.stub("billing")
    invoice = billing.route("GET", "/invoices/{id:int}")
    invoice.respond(200, json={"total": 42})
    with mesh.client() as client:
        assert client.get("/invoices/9").json() == {"total": 42}
        with pytest.raises(meshware.NoRouteError):
            client.post("/invoices/9")
    assert invoice.call_count == 1
    assert invoice.calls.last.request.url.path == "/invoices/9"
    assert mesh.calls_to("billing")[0].status == 200


def test_same_seed_same_choices() -> None:
    def run() -> list[int]:
        with FakeMesh(seed=5) as m:
            m.add("users", make_users(), replicas=3)
            with m.client() as client:
                for _ in range(12):
                    client.get("/users/1")
            return [c.replica for c in m.calls]

    assert run() == run()


def test_bad_arguments_say_what_is_wrong(mesh: FakeMesh) -> None:
    with pytest.raises(meshware.ConfigError, match="Flask, Starlette or FastAPI"):
        mesh.add("x", object())
    with pytest.raises(meshware.ConfigError, match="no instance of nobody"):
        mesh.fail("nobody")
    with pytest.raises(meshware.ConfigError, match="replicas"):
        mesh.add("users", make_users(), replicas=0)


def test_a_stub_that_raises_is_still_recorded_as_a_call(mesh: FakeMesh) -> None:
    route = mesh.stub("billing").route("GET", "/invoices/{id:int}")
    route.mock(side_effect=httpx.ReadError)
    with mesh.client(retries=0) as client, pytest.raises(httpx.ReadError):
        client.get("/invoices/1")
    (call,) = mesh.calls_to("billing")
    assert call.status is None
    assert call.error is not None
    assert "ReadError" in call.error
