"""``meshware doctor``: one screen telling a new user what works and what to fix.

Design notes
------------
Each check returns a :class:`Check`: facts to show, and problems, each phrased as what to do.
The app is imported the way gunicorn and uvicorn import it (``module:attribute``, the current
directory or ``--app-dir`` first on ``sys.path``) while automatic registration is suppressed,
so importing it never touches etcd. Its routes are read by the integration's own code (with
the options of its ``Mesh(...)``); routes the app serves but does not publish are found by
walking the framework's own route table and each is given the reason it is left out. Conflicts
are computed as a member computes them at start: the live table plus this app's record, which
would be the newest registration (and so loses every contested route).
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import EtcdSettings
from ._core.records import InstanceRecord, Published, RouteSpec, instance_key
from ._core.table import Entry, RoutingTable, Upsert
from ._errors import ConfigError, MeshError

__all__ = ["Check", "diagnose", "load_app"]

FAKE_URL = "http://127.0.0.1:1"  # the record a check builds is never published


@dataclass
class Check:
    """One line of the report: ``title``, facts, and problems (each says what to do)."""

    title: str
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AppLoadError(Exception):
    """The app could not be imported; the message says why and what to do."""


def load_app(target: str, app_dir: str = ".") -> Any:
    """Import ``module:attribute`` (``attribute`` defaults to ``app``) without registering.

    ``module:create_app()`` calls an application factory without arguments, as gunicorn does.
    """
    from ._member import registration_suppressed

    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    factory = attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppLoadError(f"{target!r} is not an import path like users_service:app")
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    with registration_suppressed("meshware doctor"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise AppLoadError(
                    f"no module {module_name!r} in {path}: run meshware doctor from the "
                    "directory that holds it, or give --app-dir"
                ) from exc
            raise AppLoadError(
                f"importing {module_name!r} failed: {exc} (is it installed in this environment?)"
            ) from exc
        except MeshError as exc:
            raise AppLoadError(f"importing {module_name!r} failed: {exc}") from exc
    app: Any = module
    for part in attribute.split("."):
        if not hasattr(app, part):
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        app = getattr(app, part)
    if factory:
        with registration_suppressed("meshware doctor"):
            app = app()
    return app


# --------------------------------------------------------------------------- etcd


def check_etcd(settings: EtcdSettings) -> tuple[Check, RoutingTable | None]:
    from .registry.etcd import EtcdRegistry

    check = Check("etcd")
    endpoints = ", ".join(settings.endpoints)
    registry = EtcdRegistry.from_settings(settings)
    try:
        started = time.monotonic()
        status = registry.client.status()
        took = (time.monotonic() - started) * 1e3
        snapshot = registry.snapshot(settings.prefix + "/")
    except MeshError as exc:
        check.facts.append(f"{endpoints} does not answer: {exc}")
        check.problems.append(
            "start etcd (`meshware dev` runs one on 127.0.0.1:2379 for development) or point "
            "MESHWARE_ETCD_ENDPOINTS (or --etcd) at yours"
        )
        return check, None
    finally:
        registry.close()
    check.facts.append(f"{endpoints} answers: etcd {status.version} ({took:.0f} ms)")
    table = RoutingTable.empty(settings.prefix).apply(snapshot)
    services = table.services
    routes = sum(1 for _ in table.routes())
    check.facts.append(
        f"mesh under {settings.prefix}: {len(services)} service(s)"
        + (f" ({', '.join(services)})" if services else "")
        + f", {routes} route(s), {len(table.conflicts())} conflict(s)"
    )
    for problem in table.rejected.values():
        check.problems.append(f"a record in etcd is skipped by every reader: {problem}")
    return check, table


# --------------------------------------------------------------------------- the app


@dataclass
class Introspected:
    framework: str
    service: str | None
    routes: list[RouteSpec]
    left_out: list[tuple[str, str]]  # (route as the framework writes it, reason)
    mesh: Any


def introspect(app: Any) -> Introspected:
    """The app's published routes (as its ``Mesh`` would publish them) and the ones left out."""
    flask = sys.modules.get("flask")
    if flask is not None and isinstance(app, flask.Flask):
        return _introspect_flask(app)
    starlette = sys.modules.get("starlette.routing")
    if starlette is not None:
        from starlette.applications import Starlette
        from starlette.routing import Router

        if isinstance(app, Starlette | Router):
            return _introspect_starlette(app)
    raise AppLoadError(
        f"{type(app).__name__} is not a Flask, Starlette or FastAPI app (meshware integrates those)"
    )


def _published(mesh: Any, default: Any) -> tuple[list[RouteSpec], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = mesh.member._routes() if mesh is not None else default()
        routes = list(got.routes if isinstance(got, Published) else got)
    return routes, [str(w.message) for w in caught]


def _introspect_flask(app: Any) -> Introspected:
    from .integrations._flask_routes import _is_static, _view_marks, flask_routes
    from .integrations._select import Selection

    mesh = app.extensions.get("meshware")
    routes, notes = _published(mesh, lambda: flask_routes(app))
    published = {r.name for r in routes}
    selection = Selection(mesh.include, mesh.exclude) if mesh is not None else Selection()
    left_out = []
    for rule in app.url_map.iter_rules():
        if rule.build_only or rule.endpoint in published:
            continue
        view = app.view_functions.get(rule.endpoint)
        shown = f"{','.join(sorted(rule.methods or ()))} {rule.rule}"
        note = next((n for n in notes if repr(rule.rule) in n), None)
        if _is_static(app, rule, view):
            reason = "static files (Mesh(include_static=True) publishes them)"
        elif _view_marks(view).get("exclude"):
            reason = "marked @meshware.exclude"
        elif note is not None:
            reason = note
        elif not selection.selects(rule.rule, rule.endpoint):
            reason = "left out by the Mesh's include/exclude patterns"
        else:
            reason = "not published (every method excluded)"
        left_out.append((shown, reason))
    service = mesh.member.settings.service if mesh is not None and mesh.member else None
    return Introspected("Flask", service, routes, left_out, mesh)


def _introspect_starlette(app: Any) -> Introspected:
    from ._markers import marks_of
    from .integrations._starlette_routes import starlette_routes

    state = getattr(app, "state", None)
    mesh = getattr(state, "meshware", None) if state is not None else None
    routes, notes = _published(mesh, lambda: starlette_routes(app))
    published = {r.name for r in routes if r.name}
    templates = {r.template for r in routes}
    docs = {getattr(app, a, None) for a in ("docs_url", "redoc_url", "openapi_url")} - {None}
    left_out = []
    for path, route in _starlette_walk(getattr(app, "routes", ())):
        name = getattr(route, "name", None)
        if name in published or path in templates:
            continue
        methods = ",".join(sorted(getattr(route, "methods", None) or ())) or "*"
        shown = f"{methods} {path}"
        endpoint = getattr(route, "endpoint", None)
        note = next((n for n in notes if path in n), None)
        if type(getattr(route, "app", None)).__name__ == "StaticFiles":
            reason = "static files (Mesh(include_static=True) publishes them)"
        elif path in docs or path.startswith(tuple(f"{d}/" for d in docs if d)):
            reason = "API docs (Mesh(include_docs=True) publishes them)"
        elif endpoint is not None and marks_of(endpoint).get("exclude"):
            reason = "marked @meshware.exclude"
        elif note is not None:
            reason = note
        else:
            reason = "left out by the Mesh's include/exclude patterns"
        left_out.append((shown, reason))
    framework = "FastAPI" if type(app).__name__ == "FastAPI" else "Starlette"
    service = mesh.member.settings.service if mesh is not None and mesh.member else None
    return Introspected(framework, service, routes, left_out, mesh)


def _starlette_walk(routes: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for route in routes:
        path = prefix + getattr(route, "path", "")
        inner = getattr(route, "routes", None)
        if inner is not None and type(getattr(route, "app", None)).__name__ != "StaticFiles":
            yield from _starlette_walk(inner, path)
        else:
            yield path or "/", route


def check_app(target: str, found: Introspected, table: RoutingTable | None) -> list[Check]:
    app_check = Check("app")
    described = f"{target}: a {found.framework} app"
    if found.service is not None:
        described += f", service {found.service!r}"
    app_check.facts.append(described)
    if found.mesh is None:
        app_check.problems.append(
            f'{target} has no meshware Mesh: add `Mesh(app, service="NAME")` '
            f"(from meshware.integrations.{'flask' if found.framework == 'Flask' else 'starlette'}"
            " import Mesh); the routes below are what it would publish"
        )
    routes = Check("routes")
    if not found.routes:
        routes.problems.append("the app publishes no route: check the Mesh's include/exclude")
    for spec in found.routes:
        marks = [m for m in ("public" if spec.public else "",) if m]
        routes.facts.append(
            f"{','.join(spec.methods)} {spec.template}"
            + (f"  ({', '.join(marks)})" if marks else "")
        )
    left = Check("left out")
    left.facts.extend(f"{shown}: {reason}" for shown, reason in found.left_out)
    if not found.left_out:
        left.facts.append("nothing: every route the app serves is published")
    checks = [app_check, routes, left]
    if table is not None and found.service is not None and found.routes:
        checks.append(_check_conflicts(found, table))
    return checks


def _check_conflicts(found: Introspected, table: RoutingTable) -> Check:
    check = Check("conflicts")
    assert found.service is not None
    record = InstanceRecord(found.service, "meshware-doctor", FAKE_URL, tuple(found.routes))
    rev = table.revision + 1
    key = instance_key(table.prefix, record.service, record.instance_id)
    mine = table.apply(Upsert(Entry(key, record.encode(), rev, rev), rev))
    running = [i for i in table.instances(found.service) if i.serving]
    if running:
        check.facts.append(
            f"{len(running)} instance(s) of {found.service!r} already serve: "
            + ", ".join(i.url for i in running)
        )
    lost = [
        c
        for c in mine.conflicts()
        if any(r.service == found.service for r in c.losers) and c.winner.service != found.service
    ]
    grouped: dict[tuple[str, str], list[str]] = {}
    for c in lost:
        template = next(r.template.text for r in c.losers if r.service == found.service)
        grouped.setdefault((template, c.winner.service), []).append(c.method)
    for (template, winner), methods in grouped.items():
        check.problems.append(
            f"{', '.join(methods)} {template} is already served by {winner!r}, which keeps it: "
            f"rename or exclude the route in {found.service!r}, or stop {winner!r} "
            "serving it (MESHWARE_STRICT=true refuses to start instead)"
        )
    if not lost:
        check.facts.append("none with the live mesh")
    return check


# --------------------------------------------------------------------------- advertise URL


def check_advertise(found: Introspected | None) -> Check:
    check = Check("advertise")
    settings = found.mesh.member.settings if found is not None and found.mesh else None
    url = (
        settings.advertise_url if settings is not None else os.environ.get("MESHWARE_ADVERTISE_URL")
    )
    if url:
        check.facts.append(f"{url} (MESHWARE_ADVERTISE_URL / advertise_url=)")
        return check
    host = socket.gethostname()
    check.facts.append(
        "read from the server's listening socket at start: `-b 127.0.0.1:8001` publishes "
        f"http://127.0.0.1:8001; a wildcard bind (0.0.0.0) publishes http://{host}:PORT"
    )
    try:
        resolved = socket.gethostbyname(host)
    except OSError:
        check.problems.append(
            f"this machine's host name {host!r} does not resolve: bind a real address, or set "
            "MESHWARE_ADVERTISE_URL to the URL peers should call"
        )
    else:
        if resolved.startswith("127.") and host != "localhost":
            check.facts.append(
                f"(host name {host!r} resolves to {resolved}: peers on other machines need "
                "MESHWARE_ADVERTISE_URL when the server binds 0.0.0.0)"
            )
    return check


# --------------------------------------------------------------------------- all of it


def diagnose(
    target: str | None, *, etcd: str | None, prefix: str | None, app_dir: str = "."
) -> list[Check]:
    """Every check, in the order they are shown."""
    checks: list[Check] = []
    found: Introspected | None = None
    load_problem: Check | None = None
    if target is not None:
        try:
            found = introspect(load_app(target, app_dir))
        except (AppLoadError, ConfigError, MeshError) as exc:
            load_problem = Check("app", problems=[str(exc)])
    args = {k: v for k, v in {"etcd_endpoints": etcd, "prefix": prefix}.items() if v is not None}
    if found is not None and found.mesh is not None and found.mesh.member is not None and not args:
        settings = found.mesh.member.settings.etcd  # what the app itself would use
    else:
        settings = EtcdSettings.load(args)
    etcd_check, table = check_etcd(settings)
    checks.append(etcd_check)
    if load_problem is not None:
        checks.append(load_problem)
    if found is not None:
        checks.extend(check_app(target or "", found, table))
    checks.append(check_advertise(found))
    return checks
