"""How a team tests its services with meshware's fake mesh: no etcd, no servers, no sleeps.

``fake_mesh`` and ``mesh_clock`` come from meshware's pytest plugin (installed with meshware).
"""

from __future__ import annotations

import httpx
import pytest
import users_service
from orders_service import app as orders_app

import meshware
from meshware.testing import FakeMesh, MeshClock


@pytest.fixture
def mesh(fake_mesh: FakeMesh) -> FakeMesh:
    fake_mesh.add("users", users_service.app, replicas=3)
    fake_mesh.add("orders", orders_app)
    return fake_mesh


def test_an_order_shows_its_users_name(mesh: FakeMesh) -> None:
    with mesh.client() as client:
        order = client.get("/orders/7").json()
    assert order["user"]["name"] == "Ada"
    assert [(c.service, c.path) for c in mesh.calls] == [
        ("users", "/users/1"),
        ("orders", "/orders/7"),
    ]


def test_orders_fail_over_when_a_users_instance_refuses_connections(mesh: FakeMesh) -> None:
    mesh.fail("users", replica=0, with_=httpx.ConnectError)
    with mesh.client() as client:
        assert all(client.get("/orders/7").status_code == 200 for _ in range(20))


def test_orders_answer_503_when_users_is_down(mesh: FakeMesh) -> None:
    mesh.kill("users")
    with mesh.client() as client:
        response = client.get("/orders/7")
    assert response.status_code == 503
    assert "users is unavailable" in response.json()["detail"]


def test_a_slow_users_instance_times_out_on_the_fake_clock(
    mesh: FakeMesh, mesh_clock: MeshClock
) -> None:
    mesh.delay("users", 3.0)  # longer than the 2 s timeout users publishes for GET /users/{id}
    start = mesh_clock()
    with mesh.client(retries=0) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/users/1")
    assert mesh_clock() - start == pytest.approx(2.0)  # nobody waited: the clock moved


@pytest.mark.meshware(retries=0)
def test_without_retries_a_503_reaches_the_caller(mesh: FakeMesh) -> None:
    mesh.fail("users", with_=503, times=1)
    with mesh.client() as client:
        assert client.get("/users/1").status_code == 503
        assert client.get("/users/1").status_code == 200


def test_a_service_that_is_not_there_is_stubbed_with_respx(fake_mesh: FakeMesh) -> None:
    payments = fake_mesh.stub("payments")
    charge = payments.route("POST", "/payments")
    charge.respond(201, json={"id": "p-1"})
    with fake_mesh.client() as client:
        assert client.post("/payments", json={"amount": 5}).status_code == 201
        with pytest.raises(meshware.NoRouteError):
            client.get("/refunds")
    assert charge.called


async def test_async_callers_work_the_same(mesh: FakeMesh) -> None:
    async with mesh.async_client() as client:
        response = await client.get("/orders/8")
    assert response.json()["user"]["name"] == "Grace"
