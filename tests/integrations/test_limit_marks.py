"""Limits declared next to the routes: markers on Flask and Starlette/FastAPI views and the
``Mesh(rate_limits=...)`` option become the ``limits`` of the published routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import meshware
from meshware import ConfigError, RouteSpec
from meshware._core.limits import RouteLimits
from meshware.integrations._flask_routes import flask_routes
from meshware.integrations._select import RouteOptions
from meshware.integrations._starlette_routes import starlette_routes

LOGIN = RouteLimits(rate=20, burst=10, per="client", concurrency=4)


def limits_by_template(specs: list[RouteSpec]) -> dict[str, RouteLimits | None]:
    return {s.template: s.limits for s in specs}


def test_flask_views_publish_their_declared_limits() -> None:
    app = Flask(__name__)

    @app.post("/login")
    @meshware.rate_limit("20/s", burst=10)
    @meshware.concurrency_limit(4)
    def login() -> str:
        return "ok"

    @app.get("/reports")
    @meshware.rate_limit("100/h", per="route")
    def reports() -> str:
        return "ok"

    @app.get("/free")
    def free() -> str:
        return "ok"

    got = limits_by_template(flask_routes(app, include_static=False))
    assert got["/login"] == LOGIN
    assert got["/reports"] == RouteLimits(rate=100, period=3600, per="route")
    assert got["/free"] is None


def test_starlette_and_fastapi_views_publish_their_declared_limits() -> None:
    @meshware.rate_limit("20/s", burst=10)
    @meshware.concurrency_limit(4)
    async def login(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/login", login, methods=["POST"])])
    assert limits_by_template(starlette_routes(app))["/login"] == LOGIN

    api = FastAPI()

    @api.post("/login")
    @meshware.rate_limit("20/s", burst=10)
    @meshware.concurrency_limit(4)
    async def api_login() -> str:
        return "ok"

    assert limits_by_template(starlette_routes(api))["/login"] == LOGIN


def test_the_option_sets_limits_where_the_view_declares_none() -> None:
    options = RouteOptions(
        rate_limits={"/login": "20/s", "/api/*": {"rate": "600/min", "burst": 5, "per": "route"}}
    )
    own = RouteLimits(rate=1, period=1)
    specs = options.apply(
        [
            RouteSpec("/login", ("POST",)),
            RouteSpec("/api/items", ("GET",)),
            RouteSpec("/api/own", ("GET",), limits=own),
            RouteSpec("/other", ("GET",)),
        ]
    )
    assert [s.limits for s in specs] == [
        RouteLimits(rate=20),
        RouteLimits(rate=600, period=60, burst=5, per="route"),
        own,
        None,
    ]


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda: meshware.rate_limit("20 per second"), "COUNT/s"),
        (lambda: meshware.rate_limit("20/s", burst=-1), "burst"),
        (lambda: meshware.rate_limit("20/s", per="ip"), "per"),
        (lambda: meshware.concurrency_limit(0), "concurrency"),
        (lambda: RouteOptions(rate_limits={"/x": "fast"}), r"rate_limits\['/x'\]"),
        (lambda: RouteOptions(rate_limits={"/x": {"burst": 2}}), r"rate_limits\['/x'\]"),
        (lambda: RouteOptions(rate_limits=["/x"]), "rate_limits must map"),  # type: ignore[arg-type]
    ],
)
def test_bad_limits_fail_at_declaration_with_a_clear_error(call: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        call()
