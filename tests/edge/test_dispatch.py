"""The issue's cases: a path leaves the edge only if the app dispatches it to a public route.

A real Flask app (werkzeug's own server in a thread) introspected as the integration publishes
it (routes and shadows), behind a real nginx running the rendered configuration and the real
public-only proxy. Every private and excluded view answers "PRIVATE ...".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

import meshware
from meshware import InstanceRecord, RoutingTable
from meshware.edge.nginx import NginxOptions, find_nginx, render, validate
from meshware.edge.proxy import MeshProxy
from meshware.edge.serve import ProxyLimits
from meshware.integrations._flask_routes import flask_published

from .conftest import free_port, raw, running_nginx, serving_proxy


def issue_app() -> Flask:
    app = Flask("issue11")

    @app.get("/pages/<path:slug>")
    @meshware.public
    def page(slug: str) -> str:
        return f"PUBLIC page {slug}"

    @app.get("/pages/drafts/<int:draft_id>")  # private; the app picks it over the catch-all
    def draft(draft_id: int) -> str:
        return f"PRIVATE draft {draft_id}"

    @app.get("/pages/admin/purge")
    @meshware.exclude  # not published; the app still serves it
    def purge() -> str:
        return "PRIVATE purge"

    @app.get("/repository/<path:path>")
    @meshware.public
    def repository(path: str) -> str:
        return f"PUBLIC repository {path}"

    @app.get("/repository/<path:path>/trigger/<t>")
    def trigger(path: str, t: str) -> str:
        return f"PRIVATE trigger {path} {t}"

    @app.get("/users/<name>")
    @meshware.public
    def user_by_name(name: str) -> str:
        return f"PUBLIC user {name}"

    @app.get("/users/<int:uid>")
    @meshware.public
    def user_by_id(uid: int) -> str:
        return f"PUBLIC user id {uid}"

    @app.get("/users/<int:uid>/secret")
    def secret(uid: int) -> str:
        return "PRIVATE secret"

    return app


CASES = [
    ("/pages/a", "PUBLIC page a"),
    ("/pages/a/b/c", "PUBLIC page a/b/c"),
    ("/pages/drafts/3", None),
    ("/pages/drafts/x", "PUBLIC page drafts/x"),  # not an int: the app gives it to the catch-all
    ("/pages/admin/purge", None),
    ("/pages/admin/purgex", "PUBLIC page admin/purgex"),
    ("/repository/ns/repo", "PUBLIC repository ns/repo"),
    ("/repository/ns/repo/trigger/42", None),
    ("/users/42", "PUBLIC user id 42"),
    ("/users/ada", "PUBLIC user ada"),
    ("/users/42/secret", None),
]


@pytest.fixture(scope="module")
def flask_upstream() -> Iterator[tuple[str, Flask]]:
    app = issue_app()
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def issue_table(flask_upstream: tuple[str, Flask]) -> RoutingTable:
    url, app = flask_upstream
    published = flask_published(app)
    record = InstanceRecord(
        "pages", "p1", url, tuple(published), routing="specificity", shadows=published.shadows
    )
    return RoutingTable.from_records([record])


@pytest.fixture(scope="module")
def issue_nginx(
    issue_table: RoutingTable, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    try:
        binary = find_nginx()
    except meshware.ConfigError as exc:
        pytest.skip(str(exc))
    prefix = tmp_path_factory.mktemp("nginx-issue")
    port = free_port()
    options = NginxOptions(
        listen=f"127.0.0.1:{port}", prefix=str(prefix), user="root" if os.geteuid() == 0 else None
    )
    text = render(issue_table, options)
    validate(text)
    with running_nginx(binary, Path(prefix), text, port):
        yield port


@pytest.fixture(scope="module")
def issue_proxy(issue_table: RoutingTable) -> Iterator[int]:

    port = free_port()
    client = meshware.AsyncClient(issue_table, total_timeout=10)
    app = MeshProxy(client, type("M", (), {"table": issue_table})(), public_only=True)
    with serving_proxy(app, port, ProxyLimits()):
        yield port


@pytest.fixture(params=["nginx", "proxy"])
def issue_edge(request: pytest.FixtureRequest) -> int:
    return int(request.getfixturevalue(f"issue_{request.param}"))


@pytest.mark.parametrize(("path", "served"), CASES, ids=[p for p, _ in CASES])
def test_only_what_the_app_dispatches_to_a_public_route_goes_out(
    issue_edge: int, flask_upstream: tuple[str, Flask], path: str, served: str | None
) -> None:
    # the oracle: the app itself
    with flask_upstream[1].test_client() as c:
        direct = c.get(path).get_data(as_text=True)
    assert (served is None) == direct.startswith("PRIVATE"), direct
    status, data = raw(
        issue_edge, f"GET {path} HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n".encode()
    )
    assert b"PRIVATE" not in data
    if served is None:
        assert status == 404, data[:200]
    else:
        assert status == 200, data[:300]
        assert data.endswith(served.encode()), data[-200:]


def test_the_nginx_configuration_denies_inside_the_public_location(
    issue_table: RoutingTable,
) -> None:
    text = render(issue_table, NginxOptions())
    block = text[text.index('location ~ "^/pages/') :]
    block = block[: block.index("\n    }\n")]
    assert "taken by pages private /pages/drafts/{draft_id:int}" in block
    assert "taken by pages shadow /pages/admin/purge" in block
    with contextlib.suppress(ValueError):
        assert block.index("return 404") < block.index("proxy_pass")
