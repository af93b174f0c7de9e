"""starlette_routes: a Starlette route tree as RouteSpecs, in the order Starlette tries them."""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Host, Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

import meshware
from meshware import ConfigError, RouteSpec, parse_template
from meshware.integrations._starlette_routes import starlette_routes


class YearConvertor(Convertor[int]):
    regex = "[0-9]{4}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


class SlugConvertor(Convertor[str]):
    regex = "[a-z0-9-]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class SubpathConvertor(SlugConvertor):
    regex = "[a-z/]+"


register_url_convertor("mw_year", YearConvertor())
register_url_convertor("mw_slug", SlugConvertor())
register_url_convertor("mw_subpath", SubpathConvertor())


def echo(token: str) -> Callable[[Request], Any]:
    """An endpoint named ``token`` that answers ``token``."""

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(token)

    endpoint.__name__ = token
    return endpoint


def ws_echo(token: str) -> Callable[[WebSocket], Any]:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(token)
        await websocket.close()

    endpoint.__name__ = token
    return endpoint


def asgi_text(token: str) -> ASGIApp:
    """A plain ASGI app meshware cannot look into."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(token)(scope, receive, send)

    return app


class Things(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return PlainTextResponse("Things")

    @meshware.policy(idempotent=True)
    async def put(self, request: Request) -> Response:
        return PlainTextResponse("Things")


class Raw:
    """An ASGI endpoint class that is not an HTTPEndpoint: any method."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.args = (scope, receive, send)

    def __await__(self) -> Generator[Any, None, None]:
        return PlainTextResponse("Raw")(*self.args).__await__()


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("static")
    return tmp_path


def build_app(static_dir: Path) -> Starlette:
    sub = Starlette(
        routes=[Route("/items/{item_id:int}", echo("sub_item"))],
        middleware=[Middleware(GZipMiddleware)],
    )
    admin = meshware.public(Router([Route("/stats", echo("stats"))]))
    return Starlette(
        routes=[
            Route("/", meshware.public(echo("home"))),
            Route(
                "/users/{user_id:int}",
                meshware.policy(timeout=1.5)(echo("user")),
                methods=["GET", "PUT"],
            ),
            Route("/users/{user_id:int}/files/{name}.{ext}", echo("user_file")),
            Route("/archive/{year:mw_year}/{slug:mw_slug}", echo("archive")),
            Route("/objects/{oid:uuid}/price/{amount:float}", echo("price")),
            Route("/things/{tid:int}", Things),
            Route("/raw", Raw),
            Route("/internal", meshware.exclude(echo("internal"))),
            WebSocketRoute("/ws/{room}", ws_echo("ws")),
            Mount(
                "/api",
                name="api",
                middleware=[Middleware(GZipMiddleware)],
                routes=[
                    Route("/", echo("api_root")),
                    Mount(
                        "/v1",
                        routes=[
                            Route(
                                "/orders/{order_id:int}", echo("order"), methods=["GET", "DELETE"]
                            )
                        ],
                    ),
                    Mount(
                        "/v2",
                        app=Router([Route("/orders", echo("orders_v2"), methods=["POST"])]),
                        name="v2",
                    ),
                    WebSocketRoute("/events", ws_echo("events")),
                ],
            ),
            Mount("/sub", app=CORSMiddleware(sub, allow_origins=["*"]), name="sub"),
            Mount("/admin", app=admin),
            Mount("/legacy", app=asgi_text("legacy"), name="legacy"),
            Mount("/static", app=StaticFiles(directory=static_dir), name="static"),
            # Starlette tries hosts in order too: the specific one first.
            Host("files.example.com:8443", app=asgi_text("files"), name="files"),
            Host(
                "{tenant}.example.com",
                app=Router([Route("/dashboard", echo("dashboard"))]),
                name="tenant",
            ),
            Route("/files/{rest:path}", echo("files_path")),
        ]
    )


GET = ("GET", "HEAD")
ANY = ("*",)

EXPECTED = [
    RouteSpec("/", GET, name="home", public=True),
    RouteSpec("/users/{user_id:int}", ("GET", "HEAD", "PUT"), name="user", timeout=1.5),
    RouteSpec("/users/{user_id:int}/files/{name}.{ext}", GET, name="user_file"),
    RouteSpec("/archive/{year:re:[0-9]{4}}/{slug:re:[a-z0-9-]+}", GET, name="archive"),
    RouteSpec("/objects/{oid:uuid}/price/{amount:float}", GET, name="price"),
    RouteSpec("/things/{tid:int}", GET, name="Things"),
    RouteSpec("/things/{tid:int}", ("PUT",), name="Things", idempotent=True),
    RouteSpec("/raw", ANY, name="Raw"),
    RouteSpec("/ws/{room}", ("GET",), name="ws", kind="websocket"),
    RouteSpec("/api/", GET, name="api:api_root"),
    RouteSpec("/api/v1/orders/{order_id:int}", ("DELETE", *GET), name="api:order"),
    RouteSpec("/api/v2/orders", ("POST",), name="api:v2:orders_v2"),
    RouteSpec("/api/events", ("GET",), name="api:events", kind="websocket"),
    RouteSpec("/sub/items/{item_id:int}", GET, name="sub:sub_item"),
    RouteSpec("/admin/stats", GET, name="stats", public=True),
    RouteSpec("/legacy/{path:path}", ANY, name="legacy", kind="mount"),
    RouteSpec("/{path:path}", ANY, name="files", kind="mount", host="files.example.com"),
    RouteSpec("/dashboard", GET, name="tenant:dashboard", host="{tenant}.example.com"),
    RouteSpec("/files/{rest:path}", GET, name="files_path"),
]
STATIC = RouteSpec("/static/{path:path}", GET, name="static", kind="mount")


def test_every_route_is_published_in_declaration_order(static_dir: Path) -> None:
    assert starlette_routes(build_app(static_dir)) == EXPECTED


def test_static_files_only_on_request(static_dir: Path) -> None:
    specs = starlette_routes(build_app(static_dir), include_static=True)
    assert specs == [*EXPECTED[:16], STATIC, *EXPECTED[16:]]


def test_every_published_template_is_canonical(static_dir: Path) -> None:
    for spec in starlette_routes(build_app(static_dir), include_static=True):
        assert parse_template(spec.template).text == spec.template
        if spec.host is not None:
            parse_template(spec.host, host=True)


def assert_app_answers(app: ASGIApp, specs: list[RouteSpec], example: Callable[..., str]) -> None:
    """Each spec's example path, with each method, reaches the endpoint that was published."""
    client = TestClient(app)
    for spec in specs:
        token = (spec.name or "").rsplit(":", 1)[-1]
        path = example(spec.template)
        if spec.kind == "websocket":
            with client.websocket_connect(path) as ws:
                assert ws.receive_text() == token, spec
            continue
        host = example(spec.host, host=True) if spec.host else "testserver"
        for method in spec.methods:
            response = client.request(
                "GET" if method == "*" else method, f"http://{host}{path}", follow_redirects=False
            )
            assert response.status_code == 200, (spec, method, path, response.status_code)
            if method != "HEAD":
                assert response.text == token, (spec, method, path)


def test_cross_check_each_published_route_is_the_one_starlette_answers(
    static_dir: Path, example: Callable[..., str]
) -> None:
    app = build_app(static_dir)
    assert_app_answers(app, starlette_routes(app, include_static=True), example)


# --------------------------------------------------------------------------- the app object


def test_middleware_around_the_app_is_looked_through(static_dir: Path) -> None:
    app = build_app(static_dir)
    wrapped = GZipMiddleware(CORSMiddleware(app, allow_origins=["*"]))
    assert starlette_routes(wrapped) == starlette_routes(app)


def test_a_bare_router_is_introspected() -> None:
    router = Router([Route("/a", echo("a")), Mount("/b", routes=[Route("/c", echo("c"))])])
    assert starlette_routes(router) == [
        RouteSpec("/a", GET, name="a"),
        RouteSpec("/b/c", GET, name="c"),
    ]


def test_an_app_object_built_around_a_router_is_introspected() -> None:
    class Service:
        def __init__(self) -> None:
            self.router = Router([Route("/a", echo("a"))])

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.router(scope, receive, send)

    router = Router([Mount("/svc", app=Service())])
    assert starlette_routes(router) == [RouteSpec("/svc/a", GET, name="a")]


def test_an_app_without_routes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot find the routes"):
        starlette_routes(asgi_text("opaque"))


def test_router_with_a_custom_default_publishes_a_catch_all_last(
    example: Callable[..., str],
) -> None:
    router = Router([Route("/a", echo("a"))], default=asgi_text("fallback"))
    specs = starlette_routes(router)
    assert specs == [
        RouteSpec("/a", GET, name="a"),
        RouteSpec("/{path:path}", ANY, kind="mount"),
    ]
    assert TestClient(router).get(example(specs[1].template)).text == "fallback"


# --------------------------------------------------------------------------- methods and marks


def test_http_endpoint_overriding_dispatch_accepts_any_method() -> None:
    class Dispatching(HTTPEndpoint):
        async def dispatch(self) -> None:
            await PlainTextResponse("d")(self.scope, self.receive, self.send)

    assert starlette_routes(Router([Route("/d", Dispatching)]))[0].methods == ANY


def test_http_endpoint_without_handlers_is_not_published() -> None:
    class Empty(HTTPEndpoint):
        pass

    assert starlette_routes(Router([Route("/e", Empty)])) == []


def test_marks_on_a_mounted_app_apply_to_its_routes_and_exclude_drops_it() -> None:
    hidden = meshware.exclude(Router([Route("/x", echo("x"))]))
    slow = meshware.policy(timeout=30.0)(asgi_text("slow"))
    router = Router([Mount("/hidden", app=hidden), Mount("/slow", app=slow, name="slow")])
    assert starlette_routes(router) == [
        RouteSpec("/slow/{path:path}", ANY, name="slow", kind="mount", timeout=30.0)
    ]


def test_include_and_exclude_patterns_match_templates_and_names(static_dir: Path) -> None:
    specs = starlette_routes(
        build_app(static_dir), include=["/api/*", "tenant:*"], exclude=["*:events"]
    )
    assert [s.name for s in specs] == [
        "api:api_root",
        "api:order",
        "api:v2:orders_v2",
        "tenant:dashboard",
    ]


# --------------------------------------------------------------------------- converters and hosts


def test_convertor_matching_slashes_becomes_path_with_a_warning() -> None:
    router = Router([Route("/tree/{sub:mw_subpath}", echo("tree"))])
    with pytest.warns(UserWarning, match=r"'/tree/\{sub:mw_subpath\}'.*can match '/'"):
        specs = starlette_routes(router)
    assert [s.template for s in specs] == ["/tree/{sub:path}"]


def test_repeated_parameter_names_across_mounts_are_renamed() -> None:
    router = Router([Mount("/u/{id:int}", routes=[Route("/posts/{id:int}", echo("post"))])])
    assert [s.template for s in starlette_routes(router)] == ["/u/{id:int}/posts/{id_2:int}"]


def test_host_with_parameters_and_port_is_published_without_the_port() -> None:
    router = Router([Host("{region}.api.example.com:8000", app=Router([Route("/x", echo("x"))]))])
    assert starlette_routes(router)[0].host == "{region}.api.example.com"


def test_route_of_an_unknown_type_is_skipped_with_a_warning() -> None:
    class Custom(BaseRoute):
        pass

    with pytest.warns(UserWarning, match="type Custom .* cannot be read"):
        assert starlette_routes(Router([Custom(), Route("/a", echo("a"))])) == [
            RouteSpec("/a", GET, name="a")
        ]
