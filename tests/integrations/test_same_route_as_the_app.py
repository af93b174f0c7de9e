"""Within one app, meshware resolves any path to the route the app's own router picks.

Apps with deliberately overlapping routes are introspected by the real integrations, put in a
routing table, and asked about random paths; the app itself answers the same paths in process
(every view returns its own name and arguments). Both must agree on "no route", on the route,
and on the parameters.
"""

from __future__ import annotations

import uuid
from typing import Any

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
from meshware.integrations._flask_routes import flask_routes
from meshware.integrations._starlette_routes import starlette_routes

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
FLASK_TABLE = RoutingTable.from_records(
    [
        InstanceRecord(
            "flaskapp", "1", "http://a:1", tuple(flask_routes(FLASK)), routing="specificity"
        )
    ]
)
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
    # werkzeug merges repeated slashes (`//a` is `/a`); meshware matches the path as sent, as
    # Starlette does. Callers build their paths; doubled slashes are the edge's business.
    assume("//" not in path)
    theirs = flask_answer(method, path)
    ours = mesh_answer(FLASK_TABLE, method, path)
    if isinstance(theirs, str) and theirs.startswith("redirect:"):
        # werkzeug redirects (slash added, slashes merged); meshware sends the request to the
        # app, which redirects: compare where the client ends up
        target = theirs.split(":", 1)[1]
        theirs, ours = flask_answer(method, target), mesh_answer(FLASK_TABLE, method, target)
    if theirs in ("404", "405") and _werkzeug_path_would_refuse(path):
        # Known, harmless: werkzeug's `path` is `[^/].*?` (not empty, no leading '/'); the
        # canonical one is Starlette's `.*`. So meshware sends `/items/` or `/items//` to the app
        # owning `/items/<path:rest>`, and the app answers 404 itself.
        return
    assert ours == theirs, f"{method} {path}"


def _werkzeug_path_would_refuse(path: str) -> bool:
    for route, _ in FLASK_TABLE.routes():
        params = route.template.match(path) if "{:path}" in route.template.shape else None
        if params and any(v == "" or str(v).startswith("/") for v in params.values()):
            return True
    return False


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
    [
        InstanceRecord(
            "starletteapp", "1", "http://a:1", tuple(starlette_routes(STARLETTE)), routing="ordered"
        )
    ]
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
