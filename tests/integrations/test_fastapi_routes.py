"""starlette_routes on FastAPI apps: included routers, docs routes, root_path, mounted apps."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from flask import Flask
from starlette.routing import Host, Mount, Route, Router
from starlette.testclient import TestClient

import meshware
from meshware import RouteSpec, parse_template
from meshware.integrations._starlette_routes import starlette_routes

GET = ("GET", "HEAD")
DOCS = {"openapi", "swagger_ui_html", "swagger_ui_redirect", "redoc_html"}


def text(token: str) -> Callable[..., Any]:
    """A FastAPI endpoint named ``token`` that answers ``token``."""

    def endpoint() -> PlainTextResponse:
        return PlainTextResponse(token)

    endpoint.__name__ = token
    return endpoint


def new_fastapi(**kwargs: Any) -> FastAPI:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `root_path` parameter is deprecated")
        return FastAPI(**kwargs)


def legacy_flask_app() -> Any:
    """A Flask app under Starlette's WSGI adapter: an app meshware cannot look into."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette.middleware.wsgi is deprecated
        wsgi = pytest.importorskip("starlette.middleware.wsgi")
    flask_app = Flask(__name__)
    flask_app.add_url_rule("/<path:anything>", "legacy", lambda anything: "legacy")
    return wsgi.WSGIMiddleware(flask_app)


def build_app() -> FastAPI:
    app = new_fastapi()
    users = APIRouter(prefix="/users")
    users.get("/{user_id}")(text("get_user"))
    users.put("/{user_id}")(meshware.policy(idempotent=True)(text("put_user")))
    items = APIRouter()
    items.get("/items/{item_id:int}")(text("get_item"))
    admin = APIRouter(prefix="/admin")
    admin.post("/reindex")(meshware.public(text("reindex")))
    admin.delete("/cache")(meshware.exclude(text("clear_cache")))
    admin.include_router(items, prefix="/nested")
    app.get("/")(text("home"))
    app.include_router(users, prefix="/v1")
    app.include_router(admin)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ws")
        await websocket.close()

    sub = new_fastapi()
    sub.get("/ping")(text("ping"))
    app.mount("/sub", sub, name="sub")
    app.mount("/legacy", legacy_flask_app(), name="legacy")
    return app


EXPECTED = [
    RouteSpec("/", ("GET",), name="home"),
    RouteSpec("/v1/users/{user_id}", ("GET",), name="get_user"),
    RouteSpec("/v1/users/{user_id}", ("PUT",), name="put_user", idempotent=True),
    RouteSpec("/admin/reindex", ("POST",), name="reindex", public=True),
    RouteSpec("/admin/nested/items/{item_id:int}", ("GET",), name="get_item"),
    RouteSpec("/ws", ("GET",), name="ws", kind="websocket"),
    RouteSpec("/sub/ping", ("GET",), name="sub:ping"),
    RouteSpec("/legacy/{path:path}", ("*",), name="legacy", kind="mount"),
]


def test_included_routers_are_published_with_their_prefixes_in_order() -> None:
    assert starlette_routes(build_app()) == EXPECTED


def test_docs_routes_of_the_app_and_mounted_apps_only_on_request() -> None:
    specs = starlette_routes(build_app(), include_docs=True)
    docs = [(s.template, s.methods, s.name) for s in specs if s not in EXPECTED]
    assert docs == [
        ("/openapi.json", GET, "openapi"),
        ("/docs", GET, "swagger_ui_html"),
        ("/docs/oauth2-redirect", GET, "swagger_ui_redirect"),
        ("/redoc", GET, "redoc_html"),
        ("/sub/openapi.json", GET, "sub:openapi"),
        ("/sub/docs", GET, "sub:swagger_ui_html"),
        ("/sub/docs/oauth2-redirect", GET, "sub:swagger_ui_redirect"),
        ("/sub/redoc", GET, "sub:redoc_html"),
    ]


def test_moved_docs_urls_are_still_recognised() -> None:
    app = new_fastapi(docs_url="/documentation", redoc_url=None, openapi_url="/api.json")
    app.get("/x")(text("x"))
    assert [s.template for s in starlette_routes(app)] == ["/x"]


def assert_app_answers(app: Any, specs: list[RouteSpec], example: Callable[..., str]) -> None:
    client = TestClient(app)
    for spec in specs:
        path = example(spec.template)
        if spec.kind == "websocket":
            with client.websocket_connect(path) as ws:
                assert ws.receive_text() == spec.name
            continue
        token = (spec.name or "").rsplit(":", 1)[-1]
        for method in spec.methods:
            response = client.request("GET" if method == "*" else method, path)
            assert response.status_code == 200, (spec, method, path, response.status_code)
            if method != "HEAD" and token not in DOCS:
                assert response.text == token, (spec, method, path)


def test_cross_check_each_published_route_is_the_one_fastapi_answers(
    example: Callable[..., str],
) -> None:
    app = build_app()
    assert_app_answers(app, starlette_routes(app, include_docs=True), example)


def test_api_routes_do_not_get_an_implicit_head() -> None:
    app = build_app()
    assert TestClient(app).head("/").status_code == 405


# --------------------------------------------------------------------------- root_path


def root_path_app() -> FastAPI:
    app = new_fastapi(root_path="/api")
    app.get("/users/{user_id:int}")(text("user"))
    app.get("/api/x")(text("x"))
    sub = new_fastapi()
    sub.get("/s")(text("s"))
    app.mount("/sub", sub, name="sub")
    return app


def test_root_path_finding_only_the_prefixed_form_always_answers() -> None:
    """Why root_path is published: the measured behaviour of FastAPI + Starlette."""
    client = TestClient(root_path_app())
    paths = ("/api/users/1", "/users/1", "/api/api/x", "/api/x", "/api/sub/s", "/sub/s")
    answered = {p: client.get(p).status_code for p in paths}
    assert answered == {
        "/api/users/1": 200,  # root_path + route: always
        "/users/1": 200,  # the bare route: only when it does not start with root_path...
        "/api/api/x": 200,
        "/api/x": 404,  # ...because a path starting with root_path is stripped first
        "/api/sub/s": 200,  # mounted apps: only under root_path
        "/sub/s": 404,
    }


def test_root_path_is_published_in_front_of_every_route(example: Callable[..., str]) -> None:
    app = root_path_app()
    specs = starlette_routes(app)
    assert specs == [
        RouteSpec("/api/users/{user_id:int}", ("GET",), name="user"),
        RouteSpec("/api/api/x", ("GET",), name="x"),
        RouteSpec("/api/sub/s", ("GET",), name="sub:s"),
    ]
    assert_app_answers(app, specs, example)


def test_mounted_app_with_its_own_root_path_at_its_mount_path_is_published_there(
    example: Callable[..., str],
) -> None:
    app = new_fastapi()
    sub = new_fastapi(root_path="/sub")
    sub.get("/s")(text("s"))
    app.mount("/sub", sub, name="sub")
    specs = starlette_routes(app)
    assert specs == [RouteSpec("/sub/s", ("GET",), name="sub:s")]
    assert_app_answers(app, specs, example)


def test_mounted_app_with_a_foreign_root_path_is_unreachable_and_left_out() -> None:
    app = new_fastapi()
    sub = new_fastapi(root_path="/elsewhere")
    sub.get("/s")(text("s"))
    app.mount("/sub", sub, name="sub")
    with pytest.warns(UserWarning, match="root_path '/elsewhere'"):
        assert starlette_routes(app) == []
    client = TestClient(app)
    paths = ("/sub/s", "/elsewhere/s", "/sub/elsewhere/s")
    assert {client.get(p).status_code for p in paths} == {404}


# --------------------------------------------------------------------------- frontend files


def test_frontend_directories_are_static_files_published_last_on_request(
    tmp_path: Path, example: Callable[..., str]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("frontend")
    app = new_fastapi()
    router = APIRouter()
    router.frontend("/app", directory=tmp_path)
    app.include_router(router)
    app.get("/api/x")(text("x"))
    assert starlette_routes(app) == [RouteSpec("/api/x", ("GET",), name="x")]
    specs = starlette_routes(app, include_static=True)
    assert specs == [
        RouteSpec("/api/x", ("GET",), name="x"),
        RouteSpec("/app/{path:path}", GET, kind="mount"),
    ]
    assert TestClient(app).get(example(specs[1].template)).text == "frontend"


def test_every_published_template_is_canonical() -> None:
    for spec in starlette_routes(build_app(), include_docs=True):
        assert parse_template(spec.template).text == spec.template


def test_mounts_and_hosts_inside_included_routers_get_the_include_prefix(
    example: Callable[..., str],
) -> None:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    router = APIRouter()
    router.routes.append(Mount("/m", routes=[Route("/hello", hello)]))
    router.routes.append(Host("{tenant}.example.com", app=Router([Route("/hello", hello)])))
    app = new_fastapi()
    app.include_router(router, prefix="/v2")
    specs = starlette_routes(app)
    assert specs == [
        RouteSpec("/v2/m/hello", GET, name="hello"),
        RouteSpec("/v2/hello", GET, name="hello", host="{tenant}.example.com"),
    ]
    client = TestClient(app)
    assert client.get(example(specs[0].template)).text == "hello"
    assert client.get("http://acme.example.com" + example(specs[1].template)).text == "hello"
