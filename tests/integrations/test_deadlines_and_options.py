"""The integrations honour the caller's deadline header and apply ``public`` / ``policies`` options."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import meshware
from meshware import ConfigError, RouteSpec
from meshware.integrations._select import RouteOptions
from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh

HEADER = meshware.DEADLINE_HEADER


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/left")
    def left() -> Any:
        return {"left": meshware.time_left()}

    FlaskMesh(app, service="users", autostart=False)
    return app


def starlette_app() -> Starlette:
    async def left_async(request: Request) -> JSONResponse:
        return JSONResponse({"left": meshware.time_left()})

    def left_sync(request: Request) -> JSONResponse:  # runs in a worker thread
        return JSONResponse({"left": meshware.time_left()})

    app = Starlette(routes=[Route("/left", left_async), Route("/left-sync", left_sync)])
    StarletteMesh(app, service="orders")
    return app


def get(kind: str, path: str, headers: dict[str, str]) -> Any:
    if kind == "flask":
        return flask_app().test_client().get(path, headers=headers)
    return TestClient(starlette_app()).get(path, headers=headers)


@pytest.mark.parametrize(
    ("kind", "path"), [("flask", "/left"), ("starlette", "/left"), ("starlette", "/left-sync")]
)
def test_the_callers_remaining_time_becomes_the_views_deadline(kind: str, path: str) -> None:
    r = get(kind, path, {HEADER: "1500"})
    assert r.status_code == 200
    left = r.json()["left"] if kind == "starlette" else r.get_json()["left"]
    assert 1.0 < left <= 1.5


@pytest.mark.parametrize("kind", ["flask", "starlette"])
def test_without_the_header_there_is_no_deadline(kind: str) -> None:
    r = get(kind, "/left", {})
    assert (r.json() if kind == "starlette" else r.get_json())["left"] is None


@pytest.mark.parametrize("kind", ["flask", "starlette"])
def test_a_spent_budget_is_answered_504_without_running_the_view(kind: str) -> None:
    r = get(kind, "/left", {HEADER: "0"})
    assert r.status_code == 504
    assert "deadline" in r.text


@pytest.mark.parametrize("kind", ["flask", "starlette"])
def test_a_malformed_header_is_ignored(kind: str) -> None:
    r = get(kind, "/left", {HEADER: "soon"})
    assert r.status_code == 200


def test_the_deadline_does_not_leak_into_the_next_request() -> None:
    client = flask_app().test_client()
    client.get("/left", headers={HEADER: "1000"})
    assert client.get("/left").get_json()["left"] is None


def test_options_mark_routes_public_and_set_policies_unless_the_view_says_otherwise() -> None:
    options = RouteOptions(
        public=["/users/*"],
        policies={"/users/*": {"idempotent": True, "timeout": 2.0}, "*": {"retries": 1}},
    )
    specs = options.apply(
        [
            RouteSpec("/users/{id:int}", ("GET",)),
            RouteSpec("/users", ("POST",), idempotent=False),
            RouteSpec("/admin", ("GET",), name="admin"),
        ]
    )
    assert [(s.public, s.idempotent, s.timeout, s.retries) for s in specs] == [
        (True, True, 2.0, 1),
        (False, False, None, 1),  # "/users/*" does not match "/users"; the view's mark stays
        (False, None, None, 1),
    ]


@pytest.mark.parametrize(
    "policies",
    [["/x"], {"/x": {"retry": 1}}, {"/x": {"timeout": -1}}, {"/x": 3}],
)
def test_bad_policies_options_fail_with_a_clear_error(policies: Any) -> None:
    with pytest.raises(ConfigError, match="polic"):
        RouteOptions(policies=policies)
