"""An app that raises answers 500 in the fake mesh, as from a real server, whatever its framework."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask

import meshware
from meshware.testing import FakeMesh, MeshClock


def make_catalog() -> Flask:
    app = Flask("catalog")

    @app.get("/catalog/<int:item>")
    def item(item: int) -> Any:
        return {"item": item}

    return app


def make_flask_caller(*, testing: bool = False) -> Flask:
    app = Flask("front")
    app.testing = testing  # Flask's test mode propagates exceptions out of the app

    @app.get("/front/<int:item>")
    def front(item: int) -> Any:
        with meshware.Client() as client:
            return client.get(f"/catalog/{item}").json()

    return app


def make_fastapi_caller() -> FastAPI:
    app = FastAPI()

    @app.get("/shop/{item:int}")
    async def shop(item: int) -> Any:
        async with meshware.AsyncClient() as client:
            return (await client.get(f"/catalog/{item}")).json()

    return app


CALLERS = {
    "flask": (make_flask_caller, "/front/1"),
    "flask-testing": (lambda: make_flask_caller(testing=True), "/front/1"),
    "fastapi": (make_fastapi_caller, "/shop/1"),
}


def mesh_with(caller: str, **options: Any) -> tuple[FakeMesh, str]:
    make, path = CALLERS[caller]
    mesh = FakeMesh(clock=MeshClock(), **options)
    mesh.add("catalog", make_catalog())
    mesh.add("caller", make())
    return mesh, path


@pytest.mark.parametrize("caller", CALLERS)
def test_a_caller_whose_downstream_is_dead_answers_500(
    caller: str, caplog: pytest.LogCaptureFixture
) -> None:
    mesh, path = mesh_with(caller)
    with mesh:
        with mesh.client() as client:
            assert client.get(path).status_code == 200
        mesh.kill("catalog")
        with mesh.client() as client:
            response = client.get(path)  # no exception into the test
        assert response.status_code == 500
        (last,) = [c for c in mesh.calls_to("caller")][-1:]
        assert last.status == 500  # the caller's own call is recorded as answered 500
        assert len(mesh.calls_to("caller")) == 2  # and was not retried as if its network failed


@pytest.mark.parametrize("caller", ["flask-testing", "fastapi"])
def test_the_exception_is_logged_where_the_framework_does_not_log_it(
    caller: str, caplog: pytest.LogCaptureFixture
) -> None:
    mesh, path = mesh_with(caller)
    with mesh, caplog.at_level(logging.ERROR, "meshware.testing"):
        mesh.kill("catalog")
        with mesh.client() as client:
            client.get(path)
    (entry,) = [r for r in caplog.records if r.name == "meshware.testing"]
    assert "RetriesExhausted" in entry.getMessage()
    assert "raise_app_exceptions=True" in entry.getMessage()
    assert entry.exc_info is not None


@pytest.mark.parametrize("caller", CALLERS)
def test_raise_app_exceptions_re_raises_the_apps_own_exception(caller: str) -> None:
    mesh, path = mesh_with(caller, raise_app_exceptions=True)
    with mesh:
        mesh.kill("catalog")
        with mesh.client() as client, pytest.raises(meshware.RetriesExhausted) as info:
            client.get(path)
    assert isinstance(info.value, httpx.ConnectError)  # catalog's refused connection
    assert "catalog" in str(info.value.attempts[0].instance)


async def test_an_async_client_gets_the_same_500() -> None:
    mesh, path = mesh_with("fastapi")
    with mesh:
        mesh.kill("catalog")
        async with mesh.async_client() as client:
            assert (await client.get(path)).status_code == 500
        mesh2, path2 = mesh_with("flask")
        with mesh2:
            mesh2.kill("catalog")
            async with mesh2.async_client() as client:
                assert (await client.get(path2)).status_code == 500


@pytest.mark.meshware(raise_app_exceptions=True)
def test_the_marker_asks_the_fake_mesh_fixture_to_re_raise(fake_mesh: FakeMesh) -> None:
    assert fake_mesh.raise_app_exceptions
    fake_mesh.add("catalog", make_catalog())
    fake_mesh.add("caller", make_fastapi_caller())
    fake_mesh.kill("catalog")
    with fake_mesh.client() as client, pytest.raises(meshware.RetriesExhausted):
        client.get("/shop/1")
