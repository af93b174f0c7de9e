"""Within one app, meshware resolves any path to the route the app's own router picks.

Apps with deliberately overlapping routes are introspected by the real integrations, put in a
routing table, and asked about random paths; the app itself answers the same paths in process
(every view returns its own name and arguments). Both must agree on "no route", on the route,
and on the parameters.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Blueprint, Flask
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, Router
from starlette.testclient import TestClient
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from meshware import InstanceRecord, Resolution, RoutingTable
from meshware._core.records import Published, Routing
from meshware.integrations._flask_routes import flask_published
from meshware.integrations._starlette_routes import starlette_published

UUID = str(uuid.UUID(int=7))
SEGMENTS = st.sampled_from(
    [
        "items",
        "special",
        "42",
        "7",
        "3.5",
        "x",
        "a.txt",
        "v2",
        "api",
        "bp",
        "files",
        "deep",
        "f",
        "u",
        UUID,
        UUID.replace("-", ""),
        "",
    ]
)
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda segs: "/" + "/".join(segs))
METHODS = st.sampled_from(["GET", "POST"])


def record(service: str, published: Published, routing: Routing) -> InstanceRecord:
    """The record the integration would publish: routes and shadows."""
    return InstanceRecord(
        service, "1", "http://a:1", published.routes, shadows=published.shadows, routing=routing
    )


def _plain(value: Any) -> Any:
    # werkzeug's float and uuid are published by their regex (see _flask_routes): meshware gives
    # their text, werkzeug the converted value; compare the text
    return str(value) if isinstance(value, uuid.UUID | float) else value


# --------------------------------------------------------------------------- Flask


def make_flask() -> Flask:
    app = Flask(__name__)
    rules = [
        ("/items/<int:id>", "item_by_id", ["GET"]),
        ("/items/<name>", "item_by_name", ["GET", "POST"]),
        ("/items/special", "item_special", ["GET"]),
        ("/items/<path:rest>", "item_rest", ["GET"]),
        ("/files/<name>.txt", "file_txt", ["GET"]),
        ("/v<int:version>/x", "versioned", ["GET"]),
        ("/u/<uuid:uid>", "by_uuid", ["GET"]),
        ("/f/<float:value>", "by_float", ["GET"]),
        ("/deep/<a>/<b>", "deep_two", ["GET"]),
        ("/deep/<path:p>", "deep_path", ["POST"]),
    ]
    for rule, name, methods in rules:
        app.add_url_rule(rule, name, lambda **kw: "", methods=methods)
    bp = Blueprint("bp", __name__, url_prefix="/bp")
    bp.add_url_rule("/<int:n>", "num", lambda **kw: "")
    bp.add_url_rule("/items/", "slash", lambda **kw: "")
    app.register_blueprint(bp)
    return app


FLASK = make_flask()
FLASK_TABLE = RoutingTable.from_records([record("flaskapp", flask_published(FLASK), "specificity")])
FLASK_ADAPTER = FLASK.url_map.bind("localhost")


def flask_answer(method: str, path: str) -> tuple[str, dict[str, Any]] | str:
    try:
        endpoint, args = FLASK_ADAPTER.match(path, method)
    except RequestRedirect as exc:  # a slash added or merged: what the client then gets
        return "redirect:" + exc.new_url.split("localhost", 1)[1]
    except MethodNotAllowed:
        return "405"
    except NotFound:
        return "404"
    return endpoint, {k: _plain(v) for k, v in args.items()}


def mesh_answer(table: RoutingTable, method: str, path: str) -> tuple[str, dict[str, Any]] | str:
    got = table.match(method, path)
    if not isinstance(got, Resolution):
        return "405" if got else "404"
    return got.route.spec.name or "", {k: _plain(v) for k, v in got.params.items()}


@settings(max_examples=400, deadline=None)
@given(METHODS, PATHS)
def test_flask_paths_resolve_to_the_route_werkzeug_picks(method: str, path: str) -> None:
    theirs = flask_answer(method, path)
    ours = mesh_answer(FLASK_TABLE, method, path)
    if isinstance(theirs, str) and theirs.startswith("redirect:"):
        # werkzeug redirects (slash added, slashes merged); meshware sends the request to the
        # app, which redirects: compare where the client ends up
        target = theirs.split(":", 1)[1]
        theirs, ours = flask_answer(method, target), mesh_answer(FLASK_TABLE, method, target)
    assert ours == theirs, f"{method} {path}"


# --------------------------------------------------------------------------- Starlette


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"name": request.scope["endpoint"].__name__, "params": request.path_params})


def named(name: str) -> Any:
    async def view(request: Request) -> JSONResponse:
        params = {k: _plain(v) for k, v in request.path_params.items()}
        return JSONResponse({"name": name, "params": params})

    view.__name__ = name
    return view


STARLETTE = Starlette(
    routes=[
        Route("/items/{name}", named("item_by_name"), methods=["POST"]),
        Route("/items/special", named("item_special")),
        Route("/items/{id:int}", named("item_by_id")),
        Route("/items/{name}", named("item_by_name_get")),
        Route("/files/{name}.txt", named("file_txt")),
        Route("/u/{uid:uuid}", named("by_uuid")),
        Route("/f/{value:float}", named("by_float")),
        Route("/deep/{p:path}", named("deep_path"), methods=["POST"]),
        Route("/deep/{a}/{b}", named("deep_two")),
        Mount(
            "/api",
            routes=[
                Route("/v2/{rest:path}", named("api_v2")),
                Mount("/items", routes=[Route("/{id:int}", named("api_item"))]),
            ],
        ),
        Mount("/bp", app=Router(routes=[Route("/{n:int}", named("bp_num"))])),
    ],
)
STARLETTE_TABLE = RoutingTable.from_records(
    [record("starletteapp", starlette_published(STARLETTE), "ordered")]
)
CLIENT = TestClient(STARLETTE)


def starlette_answer(method: str, path: str) -> tuple[str, dict[str, Any]] | str:
    response = CLIENT.request(method, path, follow_redirects=False)
    if response.status_code in (307, 308):
        return "redirect:" + response.headers["location"].split("testserver", 1)[1]
    if response.status_code in (404, 405):
        return str(response.status_code)
    body = response.json()
    return body["name"], body["params"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(METHODS, PATHS)
def test_starlette_paths_resolve_to_the_route_starlette_picks(method: str, path: str) -> None:
    assume(not path.startswith("//"))  # an HTTP client reads `//x` as a host, not a path
    theirs = starlette_answer(method, path)
    ours = mesh_answer(STARLETTE_TABLE, method, path)
    if isinstance(theirs, str) and theirs.startswith("redirect:"):
        # Starlette redirects a missing/extra slash when the other form matches any route;
        # meshware routes the request to the app: compare where the client ends up
        target = theirs.split(":", 1)[1]
        theirs, ours = (
            starlette_answer(method, target),
            mesh_answer(STARLETTE_TABLE, method, target),
        )
    if isinstance(ours, tuple):  # route names are namespaced like url_path_for: compare the leaf
        ours = (ours[0].rsplit(":", 1)[-1], ours[1])
    assert ours == theirs, f"{method} {path}"


# --------------------------------------------------------------------------- random rule sets
#
# Random apps, built with the frameworks, introspected by the integrations, against random paths
# with the hard cases: several `path` parameters, overlapping statics, trailing slashes, `//`,
# percent-encoding, non-ASCII. Enough examples that a case one rule set in fifty shows is caught
# in every run ((49/50)**400 < 0.0004). `_compare` follows the app's redirect once: meshware
# sends a redirected path to the route the redirect leads to (README, "Routing rules").

RULE_SEGMENTS = [
    "a",
    "b",
    "ab",
    "42",
    "<x>",
    "<int:n>",
    "<float:f>",
    "<uuid:u>",
    "<path:p>",
    "v<int:k>",
    "<s>.json",
    "<any(a, b):c>",
    "",
]
PATH_PIECES = ["a", "b", "ab", "42", "٣", "3.5", "x.json", "é", "", "v3", UUID, "%61", "%C3%A9"]


@st.composite
def flask_rules(draw: st.DrawFn) -> list[tuple[str, tuple[str, ...], bool]]:
    rules = []
    for _ in range(draw(st.integers(1, 8))):
        segs = draw(st.lists(st.sampled_from(RULE_SEGMENTS), min_size=1, max_size=4))
        names = iter(f"v{i}" for i in range(100))
        text = "/" + "/".join(
            re.sub(r"<(?:([a-z]+(?:\([^)]*\))?):)?[a-z]>", lambda m, ns=names: _var(m, next(ns)), s)
            for s in segs
        )
        methods = tuple(draw(st.sets(st.sampled_from(["GET", "POST"]), min_size=1)))
        rules.append((text, methods, draw(st.integers(0, 4)) > 0))  # strict_slashes
    return rules


def _var(m: re.Match[str], name: str) -> str:
    return f"<{m.group(1)}:{name}>" if m.group(1) else f"<{name}>"


PATHS_HARD = st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=5).map(
    lambda segs: "/" + "/".join(segs)
)


def _flask_app(rules: list[tuple[str, tuple[str, ...], bool]]) -> Flask:
    app = Flask(__name__)
    for i, (rule, methods, strict) in enumerate(rules):
        app.add_url_rule(
            rule, f"r{i}", lambda **kw: "", methods=list(methods), strict_slashes=strict
        )
    return app


def _werkzeug(adapter: Any, method: str, path: str) -> tuple[str, dict[str, Any]] | str:
    try:
        endpoint, args = adapter.match(unquote(path), method)
    except RequestRedirect as exc:
        return "redirect:" + unquote(exc.new_url.split("localhost", 1)[1])
    except MethodNotAllowed:
        return "405"
    except NotFound:
        return "404"
    return endpoint, {k: _plain(v) for k, v in args.items()}


def _compare(theirs_at: Any, ours_at: Any, method: str, path: str) -> None:
    theirs, ours = theirs_at(method, path), ours_at(method, path)
    if isinstance(theirs, str) and theirs.startswith("redirect:"):
        theirs = theirs_at(method, theirs.split(":", 1)[1])
        if isinstance(theirs, str) and theirs.startswith("redirect:"):
            return  # a redirect to a redirect: the client follows; nothing to pin here
        if isinstance(theirs, str):  # the redirect leads to a 404/405: meshware refuses at once
            assert isinstance(ours, str), f"{method} {path}: app redirects to {theirs}, mesh {ours}"
            return
        assert isinstance(ours, tuple), f"{method} {path}: app redirects, mesh {ours}"
        assert ours[0] == theirs[0], f"{method} {path}: app redirects to {theirs}, mesh {ours}"
        return
    if isinstance(theirs, str):
        assert isinstance(ours, str), f"{method} {path}: app {theirs}, mesh {ours}"
        return
    assert ours == theirs, f"{method} {path}"


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flask_rules(), st.lists(st.tuples(METHODS, PATHS_HARD), min_size=1, max_size=8))
def test_random_flask_apps_route_as_werkzeug_does(
    rules: list[tuple[str, tuple[str, ...], bool]], requests: list[tuple[str, str]]
) -> None:
    app = _flask_app(rules)
    adapter = app.url_map.bind("localhost")
    table = RoutingTable.from_records([record("w", flask_published(app), "specificity")])
    for method, path in requests:
        _compare(
            lambda m, p: _werkzeug(adapter, m, p),
            lambda m, p: mesh_answer(table, m, p),
            method,
            path,
        )


ROUTE_SEGMENTS = [
    "a",
    "b",
    "42",
    "{x}",
    "{n:int}",
    "{f:float}",
    "{u:uuid}",
    "{p:path}",
    "v{k:int}",
    "{s}.json",
    "",
]


@st.composite
def starlette_routes_(draw: st.DrawFn) -> list[Any]:
    def text() -> str:
        segs = draw(st.lists(st.sampled_from(ROUTE_SEGMENTS), min_size=1, max_size=3))
        names = iter(f"v{i}" for i in range(100))
        return "/" + "/".join(
            re.sub(
                r"\{([a-z])(:[a-z]+)?\}", lambda m: "{" + next(names) + (m.group(2) or "") + "}", s
            )
            for s in segs
        )

    out: list[Any] = []
    for i in range(draw(st.integers(1, 7))):
        methods = sorted(draw(st.sets(st.sampled_from(["GET", "POST"]), min_size=1)))
        if draw(st.integers(0, 5)) == 0:
            inner = [Route(text(), named(f"m{i}_{j}"), methods=methods) for j in range(2)]
            prefix = "/" + draw(st.sampled_from(["a", "b", "api"]))
            out.append(Mount(prefix, routes=inner))
        else:
            out.append(Route(text(), named(f"r{i}"), methods=methods))
    return out


def _starlette(client: TestClient, method: str, path: str) -> tuple[str, dict[str, Any]] | str:
    response = client.request(method, path, follow_redirects=False)
    if response.status_code in (307, 308):
        return "redirect:" + unquote(response.headers["location"].split("testserver", 1)[1])
    if response.status_code in (404, 405):
        return str(response.status_code)
    body = response.json()
    return body["name"], body["params"]


def _leaf(answer: Any) -> Any:
    return (answer[0].rsplit(":", 1)[-1], answer[1]) if isinstance(answer, tuple) else answer


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    starlette_routes_(),
    st.lists(st.tuples(METHODS, PATHS_HARD.filter(lambda p: not p.startswith("//"))), max_size=6),
)
def test_random_starlette_apps_route_as_starlette_does(
    routes: list[Any], requests: list[tuple[str, str]]
) -> None:
    app = Starlette(routes=routes)
    client = TestClient(app)
    table = RoutingTable.from_records([record("s", starlette_published(app), "ordered")])
    for method, path in requests:
        _compare(
            lambda m, p: _starlette(client, m, p),
            lambda m, p: _leaf(mesh_answer(table, m, p)),
            method,
            path,
        )
