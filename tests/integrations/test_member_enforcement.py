"""The member's limit enforcement (fake clock) and the middleware the integrations install,
driven through the frameworks' own test clients."""

from __future__ import annotations

from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import meshware
from meshware import RouteSpec
from meshware._core.limits import RouteLimits
from meshware._enforce import EDGE_CALLER, Enforcer
from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def enforcer(*specs: RouteSpec, n: list[int] | None = None) -> tuple[Enforcer, Clock]:
    clock = Clock()
    counts = n or [1]
    return Enforcer("svc", lambda: specs, instances=lambda: counts[0], clock=clock), clock


LOGIN = RouteSpec("/login", ("POST",), limits=RouteLimits(rate=2, burst=1))
USERS = RouteSpec("/users/{id:int}", ("GET",), limits=RouteLimits(rate=1, per="route"))
ME = RouteSpec("/users/me", ("GET",))


def test_each_caller_has_its_own_bucket_and_unknown_callers_are_keyed_by_address() -> None:
    e, _ = enforcer(LOGIN)
    assert [e.admit("POST", "/login", "a", "10.0.0.1")[0] for _ in range(3)] == [0.0, 0.0, 0.5]
    assert e.admit("POST", "/login", "b", "10.0.0.1")[0] == 0.0
    assert e.admit("POST", "/login", None, "10.0.0.9")[0] == 0.0
    assert e.admit("POST", "/login", None, "10.0.0.8")[0] == 0.0


def test_per_route_is_one_bucket_and_the_apps_own_precedence_decides_the_route() -> None:
    e, clock = enforcer(USERS, ME)
    assert e.admit("GET", "/users/1", "a", None)[0] == 0.0
    assert e.admit("GET", "/users/2", "b", None)[0] > 0  # the same bucket
    assert e.admit("GET", "/users/me", "a", None)[0] == 0.0  # static wins: not limited
    clock.now += 1.0
    assert e.admit("GET", "/users/3", "c", None)[0] == 0.0


def test_requests_an_edge_forwarded_were_checked_there() -> None:
    e, _ = enforcer(LOGIN)
    assert all(e.admit("POST", "/login", EDGE_CALLER, "10.0.0.1")[0] == 0.0 for _ in range(50))


def test_the_rate_is_shared_by_the_live_instances() -> None:
    n = [1]
    e, clock = enforcer(RouteSpec("/x", ("GET",), limits=RouteLimits(rate=10)), n=n)
    n[0] = 2
    admitted = 0
    for _ in range(400):  # 4 s at 100 requests/s: 5/s here
        clock.now += 0.01
        admitted += e.admit("GET", "/x", "a", None)[0] == 0.0
    assert 19 <= admitted <= 22


def test_a_service_without_limits_is_not_checked_at_all() -> None:
    e, _ = enforcer(ME)
    assert e.admit("GET", "/users/me", "a", None) == (0.0, None)
    assert e.active is False


def starlette_app() -> Starlette:
    @meshware.rate_limit("1/min")
    async def login(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/login", login, methods=["POST"])])
    StarletteMesh(app, service="svc")
    return app


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.post("/login")
    @meshware.rate_limit("1/min")
    def login() -> str:
        return "ok"

    FlaskMesh(app, service="svc", autostart=False)
    return app


def test_starlette_members_answer_429_with_retry_after() -> None:
    with TestClient(starlette_app()) as client:
        assert client.post("/login", headers={"X-Meshware-Caller": "a"}).status_code == 200
        r = client.post("/login", headers={"X-Meshware-Caller": "a"})
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert client.post("/login", headers={"X-Meshware-Caller": "b"}).status_code == 200


def test_flask_members_answer_429_with_retry_after() -> None:
    client = flask_app().test_client()
    assert client.post("/login", headers={"X-Meshware-Caller": "a"}).status_code == 200
    r = client.post("/login", headers={"X-Meshware-Caller": "a"})
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert client.post("/login", headers={"X-Meshware-Caller": "b"}).status_code == 200
