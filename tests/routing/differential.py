"""Differential routing: meshware's table against the framework's own router, on real route tables.

Each ``real_apps/<project>.json`` holds the route table of a real open-source project (rules,
endpoints, declaration order, converters, blueprint / router / mount prefixes, and where they were
read from; no code of theirs). For each one this module

1. builds the real framework app: a Flask app with those rules (dummy views, the custom
   converters recreated from their regex, weight and ``part_isolating``), or a Starlette / FastAPI
   app with the routes in declared order (every endpoint answers its route id);
2. introspects it through meshware's own integration code (``FakeMesh.add``, as a test suite
   would) and takes the routing table the mesh builds from the published record;
3. generates paths per rule (valid values per converter, wrong types, empty and extra segments,
   ``//``, trailing slashes added / removed, percent-encoding, non-ASCII) plus seeded random mixes
   of segments from the table, and asks both sides: werkzeug's ``MapAdapter.match`` for Flask,
   the ASGI app itself (called directly, one event loop) for Starlette / FastAPI.

Every disagreement is classified (:data:`MISROUTES`, :data:`REDIRECTS`). ``python
tests/routing/differential.py [project ...]`` prints a compact summary per app.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import random
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from flask import Blueprint, Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, RequestRedirect

from meshware import Resolution, RoutingTable, TemplateError
from meshware.testing import FakeMesh

DATA = Path(__file__).parent / "real_apps"

# A path the app dispatches to route R that meshware resolves to another route, or refuses, or a
# path the app answers 404 / 405 that meshware routes: the "misroutes".
MISROUTES = (
    "wrong-route",  # app -> R, mesh -> R' (another route)
    "wrong-params",  # same route, other parameter values
    "refused",  # app -> R, mesh -> no route
    "rejected-route",  # app -> R, mesh -> no route, because the table refused R's record, or
    # the integration could not publish R (the app cannot join the mesh at all today)
    "routed-404",  # app 404, mesh routes
    "routed-405",  # app 405 (method not allowed), mesh routes
    "shadow-taken",  # the app serves it from a route meshware leaves out (static, docs), mesh
    # sends it to another route. (meshware refusing such a path is agreement: it must not route.)
)
# The app answers a redirect (werkzeug strict_slashes / merge_slashes, Starlette
# redirect_slashes). README "Routing rules": meshware sends the request to the owner of the other
# form, and the app redirects. Kept apart from misroutes and counted.
REDIRECTS = (
    "redirect-agrees",  # mesh resolves the path to the route the redirect target dispatches to
    "redirect-elsewhere",  # mesh resolves it to another route
    "redirect-refused",  # mesh has no route for it: the caller never gets the app's redirect
    "redirect-dead-end",  # the redirect leads to no route (a 404/405) and mesh refuses: harmless
    "redirect-to-shadow",  # it leads to a path the app serves unpublished (docs, static) and mesh
    # refuses it as such
)
# Both sides refuse; allowed methods differ (app 405 with methods, mesh 404, or the reverse).
MINOR = ("allowed-differs",)


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """What one side did with a request: a route (by id) with its parameters, or a status."""

    status: str  # "route", "404", "405", "redirect", "shadowed" (meshware: served, not routed)
    route: str = ""
    params: tuple[tuple[str, str], ...] = ()
    target: str = ""  # redirect location (a path)
    shadow: bool = False  # a route the app serves that meshware does not publish (static, docs)

    def __str__(self) -> str:
        if self.status == "route":
            args = ",".join(f"{k}={v}" for k, v in self.params)
            return f"{self.route}({args})"
        if self.status == "redirect":
            return f"redirect->{self.target}"
        if self.status == "shadowed":
            return f"shadowed:{self.route}"
        return self.status


def _params(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


@dataclass(frozen=True)
class Probe:
    method: str
    path: str  # as a meshware caller passes it (may be percent-encoded or raw non-ASCII)
    origin: str  # which generator made it ("valid", "wrong-type", "slash+", "random", ...)
    host: str | None = None
    websocket: bool = False


@dataclass
class Mismatch:
    kind: str
    probe: Probe
    app: Answer
    mesh: Answer

    def line(self) -> str:
        host = f" host={self.probe.host}" if self.probe.host else ""
        ws = " (websocket)" if self.probe.websocket else ""
        return (
            f"{self.kind:<18} {self.probe.method} {self.probe.path}{host}{ws} "
            f"[{self.probe.origin}]  app: {self.app}  mesh: {self.mesh}"
        )


@dataclass
class Report:
    project: str
    framework: str
    rules: int
    published: int
    probes: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # routes left out to get a table at all
    dropped_names: set[str] = field(default_factory=set)
    introspection: list[str] = field(default_factory=list)  # warnings / errors of the integration
    mismatches: list[Mismatch] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # the app's answers to valid probes

    def add(self, kind: str | None, probe: Probe, app: Answer, mesh: Answer) -> None:
        if probe.origin == "valid":
            self.answers[app.status] += 1
        if kind is None:
            return
        if kind == "refused" and app.route in {n.rsplit(":", 1)[-1] for n in self.dropped_names}:
            kind = "rejected-route"
        self.mismatches.append(Mismatch(kind, probe, app, mesh))

    def counts(self) -> Counter[str]:
        return Counter(m.kind for m in self.mismatches)

    def misroutes(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.kind in MISROUTES]

    def summary(self, limit: int = 8) -> str:
        out = [
            f"== {self.project} ({self.framework}): {self.rules} rules, {self.published} published "
            f"routes, {self.probes} probes"
        ]
        if self.rejected:
            out.append(f"   RECORD REJECTED: {'; '.join(self.rejected.values())}")
            out.append(f"   (table built without {len(self.dropped)} route(s): {self.dropped[:6]})")
        for note in self.introspection[:6]:
            out.append(f"   introspection: {note}")
        counts = self.counts()
        out.append("   " + (", ".join(f"{k}={counts[k]}" for k in sorted(counts)) or "no mismatch"))
        origins = Counter(m.probe.origin for m in self.misroutes())
        if origins:
            out.append(
                "   misroutes by generator: "
                + ", ".join(f"{k}={v}" for k, v in origins.most_common())
            )
        by_kind: dict[str, list[Mismatch]] = {}
        for m in self.mismatches:
            by_kind.setdefault(m.kind, []).append(m)
        for kind in (*MISROUTES, *REDIRECTS, *MINOR):
            if kind == "redirect-agrees":
                continue
            for m in by_kind.get(kind, [])[:limit]:
                out.append("   " + m.line())
        return "\n".join(out)


def classify(app: Answer, mesh: Answer, follow: Callable[[str], Answer]) -> str | None:
    """The kind of disagreement between the app's answer and meshware's, or None."""
    if app.status == "redirect":
        target = follow(app.target)
        if mesh.status != "route":
            if target.status != "route":
                return "redirect-dead-end"
            return "redirect-to-shadow" if target.shadow else "redirect-refused"
        if target.status == "route" and target.route == mesh.route:
            return "redirect-agrees"
        return "redirect-elsewhere"
    if app.status == "route" and app.shadow:
        if mesh.status != "route" or mesh.route == app.route:
            return None
        return "shadow-taken"
    if app.status == "route":
        if mesh.status != "route":
            return "refused"
        if mesh.route != app.route:
            return "wrong-route"
        if mesh.params != app.params:
            return "wrong-params"
        return None
    if mesh.status == "route":
        return "routed-404" if app.status == "404" else "routed-405"
    if app.status != mesh.status and mesh.status != "shadowed":
        return "allowed-differs"
    return None


def mesh_answer(table: RoutingTable, probe: Probe, leaf: bool) -> Answer:
    lookup = getattr(table, "lookup", None)  # issue 10's API: Resolution | Shadowed | allowed
    if lookup is not None:  # a WebSocket probe is a handshake: only WebSocket routes take it
        got = lookup(probe.method, probe.path, host=probe.host, websocket=probe.websocket)
    else:
        got = table.match(probe.method, probe.path, host=probe.host)
    if isinstance(got, tuple) and not isinstance(got, Resolution):
        return Answer("405" if got else "404")
    if not isinstance(got, Resolution):  # Shadowed: the app serves it, the mesh must not route it
        route = getattr(got, "route", None)
        name = getattr(getattr(route, "spec", None), "name", None) or "?"
        return Answer("shadowed", name.rsplit(":", 1)[-1] if leaf else name)
    name = got.route.spec.name or got.route.template.text
    if leaf:  # Starlette names are namespaced by mount ("api:users"); ids are the leaf
        name = name.rsplit(":", 1)[-1]
    return Answer("route", name, _params(got.params))


def app_path(path: str) -> str:
    """The path the framework's router sees: the server percent-decodes the request path."""
    return unquote(path, errors="replace")


# --------------------------------------------------------------------------- data files


def projects() -> list[str]:
    return sorted(p.stem for p in DATA.glob("*.json"))


def load(project: str) -> dict[str, Any]:
    with open(DATA / f"{project}.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


# --------------------------------------------------------------------------- Flask


def _converter_class(name: str, spec: dict[str, Any]) -> type[BaseConverter]:
    """A werkzeug converter with the real one's regex, weight and part_isolating."""
    fixed = spec.get("regex")

    def __init__(self: BaseConverter, url_map: Map, *args: Any, **kwargs: Any) -> None:
        BaseConverter.__init__(self, url_map)
        self.regex = args[0] if spec.get("regex_argument") else fixed

    attrs: dict[str, Any] = {
        "__init__": __init__,
        "weight": spec.get("weight", 100),
        "part_isolating": spec.get("part_isolating", True),
    }
    if fixed is not None:
        attrs["regex"] = fixed
    return type(f"{name.title()}Converter", (BaseConverter,), attrs)


def _view(endpoint: str) -> Callable[..., str]:
    def view(**kwargs: Any) -> str:
        return endpoint

    view.__name__ = endpoint.rsplit(".", 1)[-1]
    return view


def build_flask(data: dict[str, Any]) -> Flask:
    config = data.get("config", {})
    static = config.get("static_url_path", "/static")
    app = Flask(
        f"real_{data['project']}",
        static_url_path=static if static is not None else None,
        static_folder="static" if static is not None else None,
    )
    app.url_map.strict_slashes = config.get("strict_slashes", True)
    app.url_map.merge_slashes = config.get("merge_slashes", True)
    for name, spec in data.get("converters", {}).items():
        app.url_map.converters[name] = _converter_class(name, spec)

    def add(target: Flask | Blueprint, rule: dict[str, Any]) -> None:
        options = {
            k: rule[k]
            for k in ("methods", "defaults", "strict_slashes", "redirect_to", "merge_slashes")
            if k in rule
        }
        endpoint = rule["endpoint"]
        full = endpoint if isinstance(target, Flask) else f"{target.name}.{endpoint}"
        view = views.setdefault(full, _view(full))
        if rule.get("websocket"):
            options["websocket"] = True
        target.add_url_rule(rule["rule"], endpoint, view, **options)

    views: dict[str, Callable[..., str]] = {}
    for rule in data.get("rules", []):
        add(app, rule)
    for bp_data in data.get("blueprints", []):
        bp = Blueprint(
            bp_data["name"], f"real_{data['project']}", url_prefix=bp_data.get("url_prefix")
        )
        for rule in bp_data["rules"]:
            add(bp, rule)
        app.register_blueprint(bp)
    return app


def flask_answer(app: Flask, probe: Probe) -> Answer:
    adapter = app.url_map.bind("localhost")
    try:
        rule, args = adapter.match(app_path(probe.path), probe.method, return_rule=True)
    except RequestRedirect as exc:
        return Answer("redirect", target=exc.new_url.split("localhost", 1)[1])
    except MethodNotAllowed:
        return Answer("405")
    except NotFound:
        return Answer("404")
    # a rule's ``defaults`` reach the view as arguments but are not in the path: leave them out
    args = {k: v for k, v in args.items() if k in rule._converters}
    endpoint = str(rule.endpoint)
    shadow = endpoint == "static" or endpoint.endswith(".static")
    return Answer("route", endpoint, _params(args), shadow=shadow)


# --------------------------------------------------------------------------- Starlette / FastAPI


DOCS = (("openapi_url", "/openapi.json"), ("docs_url", "/docs"), ("redoc_url", "/redoc"))
MARK = "ROUTE "  # every dummy endpoint's answer starts with it
FILE_OR_PAGE = {"static": "/app.js", "frontend": "/flows"}
SHADOW = "@static-"  # in the id of a route meshware does not publish (StaticFiles, frontend)


@contextlib.contextmanager
def convertors(data: dict[str, Any]) -> Iterator[None]:
    """Starlette's convertors registered as the app registers them, for the app's lifetime here.

    ``register_url_convertor`` is process-wide (FastHTML even replaces ``path``): the previous
    set is restored afterwards so that no other test sees them.
    """
    from starlette.convertors import CONVERTOR_TYPES, Convertor, register_url_convertor

    saved = dict(CONVERTOR_TYPES)
    try:
        for name, spec in data.get("convertors", {}).items():
            cls = type(
                f"{name.title()}Convertor",
                (Convertor,),
                {
                    "regex": spec["regex"],
                    "convert": lambda self, value: value,
                    "to_string": lambda self, value: str(value),
                },
            )
            register_url_convertor(name, cls())
        yield
    finally:
        CONVERTOR_TYPES.clear()
        CONVERTOR_TYPES.update(saved)


def build_asgi(data: dict[str, Any]) -> Any:
    """The app, with its convertors registered (call it inside ``convertors(data)``)."""
    from fastapi import APIRouter, FastAPI
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Host, Mount, Route, Router, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket

    def reply(route_id: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return PlainTextResponse(
                MARK + route_id + "\n" + json.dumps(_params(request.path_params))
            )

        # real classes, not strings: FastAPI reads the signature to find the Request parameter
        endpoint.__annotations__ = {"request": Request, "return": Response}
        return endpoint

    def ws_reply(route_id: str) -> Callable[[WebSocket], Any]:
        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text(
                MARK + route_id + "\n" + json.dumps(_params(websocket.path_params))
            )
            await websocket.close()

        endpoint.__annotations__ = {"websocket": WebSocket, "return": None}
        return endpoint

    class Static(StaticFiles):  # the real class (meshware recognises it); answers its id
        def __init__(self, route_id: str) -> None:
            super().__init__(directory=".", check_dir=False)
            self.route_id = route_id

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await PlainTextResponse(MARK + self.route_id + "\n[]")(scope, receive, send)

    counter = iter(range(1, 1_000_000))

    def rid(node: dict[str, Any]) -> str:
        name = node.get("name") or node["type"]
        if node["type"] == "static":  # Answer.shadow recognises it by this
            name = SHADOW + name
        return f"r{next(counter)}_{name}"

    def starlette_nodes(nodes: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            kind = node["type"]
            if kind == "route":
                route_id = rid(node)
                node["_id"] = route_id
                out.append(
                    Route(node["path"], reply(route_id), methods=node.get("methods"), name=route_id)
                )
            elif kind == "websocket":
                route_id = rid(node)
                node["_id"] = route_id
                out.append(WebSocketRoute(node["path"], ws_reply(route_id), name=route_id))
            elif kind == "static":
                route_id = rid(node)
                node["_id"] = route_id
                out.append(Mount(node["path"], app=Static(route_id), name=route_id))
            elif kind == "mount" and "app" in node:  # a whole app mounted (its own docs, config)
                out.append(Mount(node["path"], app=make_app(node["app"]), name=node.get("name")))
            elif kind == "mount":
                out.append(
                    Mount(
                        node["path"], routes=starlette_nodes(node["routes"]), name=node.get("name")
                    )
                )
            elif kind == "host" and "app" in node:  # a whole app behind a Host
                out.append(Host(node["host"], app=make_app(node["app"]), name=node.get("name")))
            elif kind == "host":
                out.append(
                    Host(
                        node["host"],
                        app=Router(routes=starlette_nodes(node["routes"])),
                        name=node.get("name"),
                    )
                )
            elif kind == "router":  # a plain Starlette app has no routers: flatten with the prefix
                out.extend(starlette_nodes(_prefixed(node)))
            else:
                raise ValueError(f"unknown node type {kind!r}")
        return out

    def fastapi_into(router: Any, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            kind = node["type"]
            if kind == "route":
                route_id = rid(node)
                node["_id"] = route_id
                router.add_api_route(
                    node["path"],
                    reply(route_id),
                    methods=node.get("methods") or ["GET"],
                    name=route_id,
                )
            elif kind == "websocket":
                route_id = rid(node)
                node["_id"] = route_id
                router.add_api_websocket_route(node["path"], ws_reply(route_id), name=route_id)
            elif kind == "router":
                sub = APIRouter()
                fastapi_into(sub, node["routes"])
                router.include_router(sub, prefix=node.get("prefix", ""))
            elif kind in ("mount", "static", "host"):
                router.routes.extend(starlette_nodes([node]))
            elif kind == "frontend":  # FastAPI's APIRouter.frontend: static files, tried last
                route_id = rid({**node, "type": "static"})
                node["_id"] = route_id
                directory = Path(tempfile.mkdtemp(prefix="meshware-frontend-"))
                atexit.register(shutil.rmtree, directory, ignore_errors=True)
                (directory / "index.html").write_text(MARK + route_id + "\n[]")
                router.frontend(node["path"], directory=directory, fallback="index.html")
            else:
                raise ValueError(f"unknown node type {kind!r}")

    def make_app(spec: dict[str, Any]) -> Any:
        config = spec.get("config", {})
        if spec["framework"] == "fastapi":
            docs = config.get("docs", True)
            if config.get("root_path"):  # deprecated in FastAPI, still what the app does
                warnings.filterwarnings("ignore", "The `root_path` parameter is deprecated")
            urls = {key: config.get(key, default) if docs else None for key, default in DOCS}
            app = FastAPI(
                openapi_url=urls["openapi_url"],
                docs_url=urls["docs_url"],
                redoc_url=urls["redoc_url"],
                redirect_slashes=config.get("redirect_slashes", True),
                root_path=config.get("root_path", ""),
            )
            fastapi_into(app.router, spec["routes"])
            return app
        return Starlette(routes=starlette_nodes(spec["routes"]))

    return make_app(data)


def _prefixed(node: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = node.get("prefix", "")
    out = []
    for child in node["routes"]:
        child = dict(child)
        if child["type"] == "router":
            child["prefix"] = prefix + child.get("prefix", "")
        else:
            child["path"] = prefix + child["path"]
        out.append(child)
    return out


async def asgi_answer(app: Any, probe: Probe) -> Answer:
    raw = quote(probe.path, safe="/%:@!$&'()*+,;=-._~")
    headers = [(b"host", (probe.host or "testserver").encode())]
    scope: dict[str, Any] = {
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws" if probe.websocket else "http",
        "path": app_path(probe.path),
        "raw_path": raw.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []
    if probe.websocket:
        scope["type"] = "websocket"
        scope["subprotocols"] = []
        incoming = [{"type": "websocket.connect"}]
    else:
        scope["type"] = "http"
        scope["method"] = probe.method
        incoming = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        return {
            "type": "websocket.disconnect" if probe.websocket else "http.disconnect",
            "code": 1000,
        }

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if probe.websocket:
        texts = [m["text"] for m in sent if m["type"] == "websocket.send"]
        if texts:
            return _answer_from_body(texts[0])
        return Answer("404")  # closed before accepting: no route
    start = next(m for m in sent if m["type"] == "http.response.start")
    status = start["status"]
    if status in (301, 302, 307, 308):
        location = dict(start["headers"])[b"location"].decode("latin-1")
        target = re.sub(r"^[a-z]+://[^/]*", "", location)
        return Answer("redirect", target=target)
    if status in (404, 405):
        return Answer(str(status))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status != 200:
        raise AssertionError(f"{probe}: unexpected answer {status} {body[:200]!r}")
    text = body.decode()
    if not text.startswith(MARK):  # FastAPI's own docs pages (openapi, swagger, redoc)
        return Answer("route", "docs:" + app_path(probe.path), shadow=True)
    return _answer_from_body(text)


def _answer_from_body(text: str) -> Answer:
    route, params = text[len(MARK) :].split("\n", 1)
    values = tuple((str(k), str(v)) for k, v in json.loads(params))
    return Answer("route", route, values, shadow=SHADOW in route)


# --------------------------------------------------------------------------- introspection


def mesh_table(project: str, app: Any, report: Report) -> RoutingTable:
    """The table meshware builds from the app's published record (via the fake mesh)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with FakeMesh() as mesh:
            try:
                mesh.add(project, app)
            except TemplateError as exc:  # the integration cannot introspect the app at all
                report.introspection.append(f"APP CANNOT JOIN: TemplateError: {exc}")
                return _without_unpublishable(project, app, report)
            table = mesh.table
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen and issubclass(w.category, UserWarning) and "/meshware/" in w.filename:
            seen.add(text)
            report.introspection.append(f"warning: {text}")
    report.rejected = dict(table.rejected)
    records = [rec for _, rec in table.records()]
    report.published = sum(len(r.routes) for r in records)
    if table.rejected:
        table = _without_unacceptable(project, app, report)
    return table


def _without_unpublishable(project: str, app: Any, report: Report) -> RoutingTable:
    """The integration raised for some routes: exclude them by name (as its error says to do)
    and keep testing the rest."""
    from meshware import InstanceRecord
    from meshware.integrations._flask_routes import flask_routes
    from meshware.integrations._starlette_routes import starlette_routes

    excluded: list[str] = []
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if isinstance(app, Flask):
                    specs, routing = flask_routes(app, exclude=excluded), "specificity"
                else:
                    specs, routing = starlette_routes(app, exclude=excluded), "ordered"
            break
        except TemplateError as exc:
            found = re.search(r"\((?:name|endpoint) '([^']+)'\)", str(exc))
            if found is None or found.group(1) in excluded or len(excluded) > 1000:
                raise
            excluded.append(found.group(1))
            report.dropped.append(str(exc).split(":", 1)[0])
    report.dropped_names.update(excluded)
    report.published = len(specs)
    table = RoutingTable.from_records(
        [InstanceRecord(project, "1", "http://a:1", tuple(specs), routing=routing)]  # type: ignore[arg-type]
    )
    report.rejected = dict(table.rejected)
    return table


def _without_unacceptable(project: str, app: Any, report: Report) -> RoutingTable:
    """The record was refused whole: keep testing the rest, without the routes it refuses."""
    from meshware import InstanceRecord

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with FakeMesh() as mesh:
            routes, routing = _published(mesh, project, app)
    report.published = len(routes)
    kept = []
    for spec in routes:
        one = RoutingTable.from_records(
            [InstanceRecord(project, "1", "http://a:1", (spec,), routing=routing)]
        )
        if one.rejected:
            report.dropped.append(str(getattr(spec.template, "text", spec.template)))
            report.dropped_names.add(spec.name or "")
        else:
            kept.append(spec)
    return RoutingTable.from_records(
        [InstanceRecord(project, "1", "http://a:1", tuple(kept), routing=routing)]
    )


def _published(mesh: FakeMesh, project: str, app: Any) -> tuple[list[Any], Any]:
    """The route specs and routing mode of the record the fake mesh built for ``app``."""
    mesh.add(project, app)
    record = next(iter(mesh._replicas.values())).record
    return list(record.routes), record.routing


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Var:
    name: str
    regex: str  # the converter's regex for the value
    slashes: bool  # whether the value may hold '/'


@dataclass
class RouteInfo:
    """One rule of the app, for generating paths: its pieces (text or Var), methods, host."""

    pieces: list[str | Var]
    methods: tuple[str, ...]
    websocket: bool = False
    host: str | None = None

    def fill(self, values: dict[str, str]) -> str:
        return "".join(p if isinstance(p, str) else values[p.name] for p in self.pieces)

    @property
    def variables(self) -> list[Var]:
        return [p for p in self.pieces if isinstance(p, Var)]


UUID = "c0ffee00-0000-4000-8000-000000000042"
# Values tried for each variable: the first ones its regex accepts are the valid values.
CANDIDATES = (
    "abc",
    "42",
    "7",
    "0",
    "1.5",
    "-3",
    UUID,
    UUID.replace("-", ""),
    "sha256:" + "0123456789abcdef" * 4,
    "v1.2.3",
    "latest",
    "en",
    "2024",
    "x.txt",
    "png",
    "css",
    "true",
    "ns/repo",
    "a/b/c",
    "ns/repo/sub",
    "x",
)
# Values of the wrong kind for most converters.
WRONG = ("abc", "-1", "1.5", "3", "x.y", "ns/repo", UUID, "ABC-123", "0x1f")
NON_ASCII = ("ünï", "日本")
# Probes per app at most (sampled): FastAPI's own dispatch costs ~2 ms a request at 300 routes (CPU on this machine: ~7 s for the ten apps).
MAX_PROBES = 2000
EXTRA_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def _valid(var: Var) -> list[str]:
    rx = re.compile(var.regex)
    return [c for c in CANDIDATES if (var.slashes or "/" not in c) and rx.fullmatch(c)]


def _matches(var: Var, value: str) -> bool:
    return (var.slashes or "/" not in value) and re.fullmatch(var.regex, value) is not None


def _encode_all(text: str) -> str:
    """Percent-encode every unreserved letter too (a caller may encode more than it must)."""
    return "".join(
        f"%{ord(c):02X}" if c.isalnum() and c.isascii() else quote(c, safe="/") for c in text
    )


def route_probes(route: RouteInfo) -> Iterator[Probe]:
    variables = route.variables
    choices = {v.name: _valid(v) for v in variables}
    if any(not c for c in choices.values()):
        # no candidate fits (an unusual regex): probe its prefix only
        values = None
    else:
        values = {name: c[0] for name, c in choices.items()}
    methods = [m for m in route.methods if m not in ("HEAD", "OPTIONS")] or ["GET"]
    first = methods[0]
    ws = route.websocket
    host = route.host

    def probe(path: str, origin: str, method: str = first) -> Probe:
        return Probe(method, path, origin, host=host, websocket=ws)

    static_prefix = ""
    for p in route.pieces:
        if not isinstance(p, str):
            break
        static_prefix += p
    cut = static_prefix.rsplit("/", 1)[0]
    if values is None:
        yield probe(static_prefix, "prefix")
        yield probe(cut + "/", "prefix")
        return
    path = route.fill(values)
    yield probe(path, "valid")
    if ws:  # a plain HTTP GET on a WebSocket route's path: the app has no HTTP route there
        yield Probe("GET", path, "http-on-websocket", host=host)
    if not ws:
        for m in methods[1:]:
            yield probe(path, "valid", m)
        other = next(m for m in EXTRA_METHODS if m not in route.methods)
        yield probe(path, "other-method", other)
    for var in variables:
        for alt in choices[var.name][1:3]:
            yield probe(route.fill({**values, var.name: alt}), "valid-alt")
        wrong = [w for w in WRONG if not _matches(var, w)][:3]
        for w in wrong:
            yield probe(route.fill({**values, var.name: w}), "wrong-type")
        yield probe(route.fill({**values, var.name: ""}), "empty")
        for text in NON_ASCII:
            yield probe(route.fill({**values, var.name: text}), "non-ascii")
            yield probe(route.fill({**values, var.name: quote(text)}), "non-ascii-encoded")
        if var.slashes:
            yield probe(route.fill({**values, var.name: "/" + values[var.name]}), "leading-slash")
            yield probe(
                route.fill({**values, var.name: values[var.name] + "/"}), "trailing-slash-in"
            )
    yield probe(path[:-1] if path.endswith("/") and path != "/" else path + "/", "slash-toggle")
    if path.endswith("/"):
        yield probe(path + "/", "slash-extra")
    yield probe(path + "//", "slash-double-end")
    yield probe(path + "/extra", "extra-segment")
    yield probe(path + "/extra/more", "extra-segments")
    if path.count("/") >= 2:
        at = path.index("/", 1)
        yield probe(path[:at] + "/" + path[at:], "double-slash")
    if path != "/":
        yield probe("/" + path, "double-slash-lead")
    yield probe(_encode_all(path), "percent-encoded")
    yield probe(path.replace("/", "%2F").replace("%2F", "/", 1), "encoded-slashes")
    if static_prefix not in ("", "/"):
        yield probe(static_prefix, "prefix")
        yield probe(cut + "/", "prefix")
        if not cut:
            return
        yield probe(cut, "prefix")


def segment_pool(routes: list[RouteInfo]) -> list[str]:
    """Static segments of the table, converter values, empty segments: what random paths mix."""
    static = {
        seg
        for r in routes
        for piece in r.pieces
        if isinstance(piece, str)
        for seg in piece.split("/")
        if seg
    }
    return sorted(static) + [c for c in CANDIDATES if "/" not in c] + ["", "", "ünï"]


# Edits a caller's path may carry (name -> edit(path, n)): each keeps the path close to a real one.
EDITS: dict[str, Callable[[str, int], str]] = {
    "slash+": lambda p, n: p + "/",
    "slash-": lambda p, n: p[:-1] if len(p) > 1 and p.endswith("/") else p,
    "double": lambda p, n: p.replace("/", "//", 1 + n % max(1, p.count("/"))).replace(
        "//", "/", n % 2
    ),
    "empty": lambda p, n: p.rsplit("/", 1)[0] + "//" + p.rsplit("/", 1)[1],
    "drop-last": lambda p, n: p.rsplit("/", 1)[0] or "/",
    "extra": lambda p, n: p + "/" + CANDIDATES[n % len(CANDIDATES)],
    "encode": lambda p, n: _encode_all(p),
    "non-ascii": lambda p, n: p.rsplit("/", 1)[0] + "/" + NON_ASCII[n % 2],
}


def edit(path: str, steps: Iterable[tuple[str, int]]) -> str:
    for name, n in steps:
        path = EDITS[name](path, n)
    return path if path.startswith("/") else "/" + path


def valid_paths(routes: list[RouteInfo]) -> list[str]:
    return sorted({p.path for r in routes for p in route_probes(r) if p.origin == "valid"})


def edited_probes(routes: list[RouteInfo], count: int, seed: int) -> Iterator[Probe]:
    """Valid paths of the app with one or two random edits (seeded)."""
    rng = random.Random(seed)
    valid = valid_paths(routes)
    names = sorted(EDITS)
    for _ in range(count if valid else 0):
        steps = [(rng.choice(names), rng.randrange(50)) for _ in range(rng.randint(1, 2))]
        yield Probe(rng.choice(("GET", "POST")), edit(rng.choice(valid), steps), "random-edit")


def random_probes(routes: list[RouteInfo], count: int, seed: int) -> Iterator[Probe]:
    """Paths mixing static segments of the table and converter values (seeded)."""
    rng = random.Random(seed)
    pool = segment_pool(routes)
    for _ in range(count):
        segs = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
        path = "/" + "/".join(segs)
        if rng.random() < 0.2:
            path += "/"
        yield Probe(rng.choice(("GET", "POST")), path, "random")


_FLASK_VAR = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<arguments>.*?)\))?:)?"
    r"(?P<variable>[a-zA-Z_][a-zA-Z0-9_]*)>"
)


def flask_route_infos(app: Flask) -> list[RouteInfo]:
    out = []
    for rule in app.url_map.iter_rules():
        pieces: list[str | Var] = []
        pos = 0
        for m in _FLASK_VAR.finditer(rule.rule):
            pieces.append(rule.rule[pos : m.start()])
            conv = rule._converters[m.group("variable")]
            pieces.append(Var(m.group("variable"), conv.regex, not conv.part_isolating))
            pos = m.end()
        pieces.append(rule.rule[pos:])
        methods = tuple(sorted(rule.methods or ("GET",)))
        out.append(RouteInfo([p for p in pieces if p != ""], methods, websocket=rule.websocket))
    return out


_STARLETTE_VAR = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def asgi_route_infos(data: dict[str, Any]) -> list[RouteInfo]:
    from starlette.convertors import CONVERTOR_TYPES

    out: list[RouteInfo] = []

    def pieces_of(path: str) -> list[str | Var]:
        pieces: list[str | Var] = []
        pos = 0
        for m in _STARLETTE_VAR.finditer(path):
            pieces.append(path[pos : m.start()])
            conv = (m.group(2) or ":str")[1:]
            regex = CONVERTOR_TYPES[conv].regex
            pieces.append(
                Var(m.group(1), regex, conv == "path" or "/" in regex.replace("[^/]", ""))
            )
            pos = m.end()
        pieces.append(path[pos:])
        return [p for p in pieces if p != ""]

    def host_example(pattern: str) -> str:
        return _STARLETTE_VAR.sub("tenant", pattern)

    def walk(nodes: list[dict[str, Any]], prefix: str, host: str | None) -> None:
        for node in nodes:
            kind = node["type"]
            if kind in ("route", "websocket"):
                methods = tuple(node.get("methods") or ("GET",))
                out.append(
                    RouteInfo(pieces_of(prefix + node["path"]), methods, kind == "websocket", host)
                )
            elif kind in ("static", "frontend"):
                out.append(
                    RouteInfo(
                        # a file for StaticFiles; a page (index.html fallback) for a frontend
                        pieces_of(prefix + node["path"].rstrip("/") + FILE_OR_PAGE[kind]),
                        ("GET",),
                        host=host,
                    )
                )
            elif kind == "mount" and "app" in node:
                walk(node["app"]["routes"], prefix + node["path"].rstrip("/"), host)
                docs(node["app"], prefix + node["path"].rstrip("/"), host)
            elif kind == "mount":
                walk(node["routes"], prefix + node["path"].rstrip("/"), host)
            elif kind == "router":
                walk(node["routes"], prefix + node.get("prefix", ""), host)
            elif kind == "host" and "app" in node:
                walk(node["app"]["routes"], prefix, host_example(node["host"]))
                docs(node["app"], prefix, host_example(node["host"]))
            elif kind == "host":
                walk(node["routes"], prefix, host_example(node["host"]))

    def docs(spec: dict[str, Any], prefix: str, host: str | None = None) -> None:
        config = spec.get("config", {})
        if spec["framework"] == "fastapi" and config.get("docs", True):
            for key, default in DOCS:
                if config.get(key, default):
                    out.append(RouteInfo([prefix + config.get(key, default)], ("GET",), host=host))

    walk(data["routes"], "", None)
    docs(data, "")
    return out


def probes_for(
    routes: list[RouteInfo], random_count: int = 400, seed: int = 10, cap: int = MAX_PROBES
) -> list[Probe]:
    seen: set[tuple[str, str, str | None, bool]] = set()
    out: list[Probe] = []
    generated = [p for r in routes for p in route_probes(r)]
    generated += random_probes(routes, random_count, seed)
    generated += edited_probes(routes, random_count, seed)
    for probe in generated:
        key = (probe.method, probe.path, probe.host, probe.websocket)
        if key not in seen and probe.path.startswith("/"):
            seen.add(key)
            out.append(probe)
    if len(out) > cap:  # a deterministic sample; every rule keeps its valid probes
        kept_origins = ("valid", "http-on-websocket")
        keep = [p for p in out if p.origin in kept_origins]
        rest = [p for p in out if p.origin not in kept_origins]
        rest = random.Random(seed).sample(rest, max(0, cap - len(keep)))
        chosen = {id(p) for p in keep + rest}
        out = [p for p in out if id(p) in chosen]
    return out


# --------------------------------------------------------------------------- running


def run(project: str, random_count: int = 400) -> Report:
    """Build the app, its mesh table, the probes; compare every answer."""
    data = load(project)
    framework = data["framework"]
    if framework == "flask":
        return _run_flask(project, data, random_count)
    return _run_asgi(project, data, random_count)


def rule_count(data: dict[str, Any]) -> int:
    if data["framework"] == "flask":
        return len(data.get("rules", [])) + sum(len(b["rules"]) for b in data.get("blueprints", []))

    def count(nodes: list[dict[str, Any]]) -> int:
        return sum(
            count(n["routes"]) if "routes" in n else count(n["app"]["routes"]) if "app" in n else 1
            for n in nodes
        )

    return count(data["routes"])


def _run_flask(project: str, data: dict[str, Any], random_count: int) -> Report:
    app = build_flask(data)
    report = Report(project, "flask", rule_count(data), 0)
    table = mesh_table(project, app, report)
    probes = probes_for(flask_route_infos(app), random_count, cap=1_000_000)  # werkzeug is fast
    report.probes = len(probes)

    for probe in probes:
        theirs = flask_answer(app, probe)
        ours = mesh_answer(table, probe, leaf=False)
        kind = classify(
            theirs, ours, lambda t, m=probe.method: flask_answer(app, Probe(m, t, "redirect"))
        )
        report.add(kind, probe, theirs, ours)
    return report


def _run_asgi(project: str, data: dict[str, Any], random_count: int) -> Report:
    with convertors(data):
        return _run_asgi_app(project, data, random_count)


def _run_asgi_app(project: str, data: dict[str, Any], random_count: int) -> Report:
    app = build_asgi(data)
    report = Report(project, data["framework"], rule_count(data), 0)
    table = mesh_table(project, app, report)
    probes = probes_for(asgi_route_infos(data), random_count)
    report.probes = len(probes)

    async def ask_all() -> list[tuple[Probe, Answer, Answer | None]]:
        out: list[tuple[Probe, Answer, Answer | None]] = []
        for probe in probes:
            theirs = await asgi_answer(app, probe)
            target = None
            if theirs.status == "redirect":
                target = await asgi_answer(
                    app, Probe(probe.method, theirs.target, "redirect", probe.host)
                )
            out.append((probe, theirs, target))
        return out

    for probe, theirs, target in asyncio.run(ask_all()):
        ours = mesh_answer(table, probe, leaf=True)
        kind = classify(theirs, ours, lambda t, a=target: a or Answer("404"))
        report.add(kind, probe, theirs, ours)
    return report


def main(argv: Iterable[str]) -> None:
    names = list(argv) or projects()
    total: Counter[str] = Counter()
    for name in names:
        report = run(name)
        total.update(report.counts())
        print(report.summary())
    print("== total: " + ", ".join(f"{k}={total[k]}" for k in sorted(total)))


if __name__ == "__main__":
    main(sys.argv[1:])
