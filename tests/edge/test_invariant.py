"""The edge's security invariant, as a property over generated apps and paths:

    no path that the app dispatches to a private route or a shadow leaves the edge.

The oracle is the framework's own router: werkzeug's ``MapAdapter.match`` for Flask apps, the
Starlette app itself (called through its ASGI interface) for Starlette apps. Each generated app
has public, private and ``@meshware.exclude`` routes (catch-alls, typed and ``path``
parameters, trailing slashes), is introspected as the integrations publish it (routes and
shadows), and its table drives both edges:

* **nginx**: the rendered configuration, run by a model of nginx's location selection (``=``
  locations first, then nginx's 301 to a proxied ``=`` location named with one more ``/``,
  then regex locations in order, first match; nested locations likewise; the
  ``if`` lines in order; regexes over the decoded path's UTF-8 bytes, as nginx's PCRE without
  UTF mode), checked here for many cases; the same configuration on a real nginx for a fixed
  sample (:func:`test_a_fixed_sample_on_a_real_nginx`);
* **the public-only proxy**: its decision (:func:`~meshware.edge.proxy.public_target`, one table
  lookup), and the real ASGI proxy in :mod:`test_dispatch`.

A forwarded path the app answers with a redirect, 404 or 405 is not a leak (nothing private is
served); a forwarded path it dispatches to a private route or a shadow is.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect
from werkzeug.serving import make_server

import meshware
from meshware import InstanceRecord, RoutingTable
from meshware.edge.nginx import NginxOptions, find_nginx, render
from meshware.edge.proxy import PublicTarget, public_target
from meshware.edge.public import refuse_target
from meshware.integrations._flask_routes import flask_published
from meshware.integrations._starlette_routes import starlette_published

from .conftest import free_port, raw, stop, wait_port

# --- generated apps -----------------------------------------------------------------------------

_SEGMENTS = ["a", "b", "users", "é", "{x}", "{n:int}", "{p:path}"]
_KINDS = ["public", "private", "excluded"]


@dataclass(frozen=True)
class Rule:
    segments: tuple[str, ...]
    slash: bool
    kind: str
    methods: tuple[str, ...]

    def template(self) -> str:
        segs = (_named(seg, k) for k, seg in enumerate(self.segments))
        return "/" + "/".join(segs) + ("/" if self.slash else "")


def _named(seg: str, k: int) -> str:
    if seg == "{x}":
        return f"{{x{k}}}"
    if seg.startswith("{"):
        name, conv = seg[1:-1].split(":")
        return f"{{{name}{k}:{conv}}}"
    return seg


def _flask_rule(template: str) -> str:
    return re.sub(
        r"\{(\w+)(?::(\w+))?\}",
        lambda m: f"<{m.group(2)}:{m.group(1)}>" if m.group(2) else f"<{m.group(1)}>",
        template,
    )


rules_st = st.lists(
    st.builds(
        Rule,
        st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3).map(tuple),
        st.booleans(),
        st.sampled_from(_KINDS),
        st.sampled_from([("GET",), ("POST",), ("GET", "POST")]),
    ),
    min_size=1,
    max_size=7,
    unique_by=lambda r: (r.template(), r.methods),
)


def _view(kind: str, i: int, asgi: bool) -> Any:
    word = "PUBLIC" if kind == "public" else "PRIVATE"
    if asgi:

        async def view(request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"{word}:{i}")

    else:

        def view(**kw: Any) -> str:  # type: ignore[misc]
            return f"{word}:{i}"

    view.__name__ = f"v{i}"
    if kind == "public":
        return meshware.public(view)
    if kind == "excluded":
        return meshware.exclude(view)
    return view


def flask_app(rules: list[Rule]) -> Flask:
    app = Flask(f"gen{id(rules)}")
    for i, r in enumerate(rules):
        app.add_url_rule(
            _flask_rule(r.template()), f"v{i}", _view(r.kind, i, False), methods=list(r.methods)
        )
    return app


def starlette_app(rules: list[Rule]) -> Starlette:
    return Starlette(
        routes=[
            Route(r.template(), _view(r.kind, i, True), methods=list(r.methods))
            for i, r in enumerate(rules)
        ]
    )


def table_of(app: Any, url: str = "http://127.0.0.1:9") -> RoutingTable:
    if isinstance(app, Flask):
        published, routing = flask_published(app), "specificity"
    else:
        published, routing = starlette_published(app), "ordered"
    record = InstanceRecord(
        "app", "i1", url, tuple(published), routing=routing, shadows=published.shadows
    )
    table = RoutingTable.from_records([record])
    assert not table.rejected, table.rejected
    return table


# --- the oracle: the framework's own router -------------------------------------------------


def flask_dispatch(app: Flask, rules: list[Rule], method: str, path: str) -> str:
    """'public', 'private' (a private, excluded or static view) or 'none' (404, 405, redirect)."""
    adapter = app.url_map.bind("localhost")
    try:
        endpoint, _ = adapter.match(path, method)
    except (HTTPException, RequestRedirect):
        return "none"
    if endpoint == "static":
        return "private"  # a shadow: never public
    return "public" if rules[int(endpoint[1:])].kind == "public" else "private"


def starlette_dispatch(client: TestClient, method: str, path: str) -> str:
    response = client.request(method, quote(path), follow_redirects=False)
    if response.text.startswith("PUBLIC"):
        return "public"
    if response.text.startswith("PRIVATE"):
        return "private"
    return "none"


# --- a model of nginx's location selection, over the rendered text ------------------------


def _unquote(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in "\"'\\":
            out.append(s[i + 1])
            i += 2
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


_HEAD = re.compile(r'^location (=|~) "(.*)" \{$')
_IF_IN = re.compile(r'^if \(\$request_method ~ "\^\((.*)\)\$"\) \{ return (\d+); \}$')
_IF_OUT = re.compile(r'^if \(\$request_method !~ "\^\((.*)\)\$"\) \{ return (\d+); \}$')


@dataclass
class Block:
    kind: str
    pattern: str
    steps: list[tuple[str, str, int]]  # ("in"|"out"|"always"|"proxy", methods, status)
    nested: list[Block]


def parse(text: str) -> list[Block]:
    """The public locations of a rendered server block (depth by braces, as rendered)."""
    top: list[Block] = []
    stack: list[Block] = []
    for line in text.split("\n"):
        s = line.strip()
        m = _HEAD.match(s)
        if m:
            block = Block(m.group(1), _unquote(m.group(2)), [], [])
            (stack[-1].nested if stack else top).append(block)
            stack.append(block)
            continue
        if not stack:
            continue
        if s == "}":
            stack.pop()
        elif (m := _IF_IN.match(s)) is not None:
            stack[-1].steps.append(("in", m.group(1), int(m.group(2))))
        elif (m := _IF_OUT.match(s)) is not None:
            stack[-1].steps.append(("out", m.group(1), int(m.group(2))))
        elif s == "return 404;":
            stack[-1].steps.append(("always", "", 404))
        elif s.startswith("proxy_pass "):
            stack[-1].steps.append(("proxy", "", 0))
        elif s.startswith(("location ", "if ")) or s.endswith("{"):
            raise AssertionError(f"the model does not know {s!r}")
    return top


def _run(block: Block, method: str, data: bytes) -> str:
    for inner in block.nested:
        if re.match(_unquote_regex(inner.pattern), data):
            return _run(inner, method, data)
    for what, methods, status in block.steps:
        hit = re.fullmatch(methods, method) is not None
        if (what == "in" and hit) or (what == "out" and not hit) or what == "always":
            return str(status)
        if what == "proxy":
            return "forward"
    return "404"


def _unquote_regex(pattern: str) -> bytes:
    return pattern.encode("utf-8")


def nginx_model(blocks: list[Block], method: str, path: str) -> str:
    """'forward', or the status nginx answers itself."""
    for b in blocks:
        if b.kind == "=" and b.pattern == path:
            return _run(b, method, b"")
    for b in blocks:  # nginx redirects to a proxied location's name without its slash
        if b.kind == "=" and b.pattern == path + "/" and path:
            return "301"
    data = path.encode("utf-8")
    for b in blocks:
        if b.kind == "~" and re.match(_unquote_regex(b.pattern), data):
            return _run(b, method, data)
    return "404"


# --- paths ----------------------------------------------------------------------------------

_VALUES = ["7", "42", "٣", "ada", "é", "x.y", "a/b", "drafts/3", "users", "a", "b"]


def paths_for(rules: list[Rule]) -> list[str]:
    out = {"/", "/a", "/a/", "/b/7", "/static/x.js", "/users/42", "/é"}
    for r in rules:
        for v in _VALUES:
            segs = [
                v if s.startswith("{") and (s.endswith(":path}") or "/" not in v) else s
                for s in r.segments
            ]
            base = "/" + "/".join(segs)
            out.update({base, base + "/", base + "/a", base + "/a/b"})
    return sorted(p for p in out if refuse_target(quote(p)) is None)


def check(app: Any, rules: list[Rule], dispatch: Any) -> None:
    table = table_of(app)
    blocks = parse(render(table, NginxOptions(standalone=False)))
    for path in paths_for(rules):
        for method in ("GET", "POST"):
            truth = dispatch(method, path)
            edge = nginx_model(blocks, method, path)
            assert not (edge == "forward" and truth == "private"), ("nginx", method, path, rules)
            proxied = isinstance(public_target(table, (), method, quote(path)), PublicTarget)
            assert not (proxied and truth == "private"), ("proxy", method, path, rules)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(rules_st)
def test_flask_no_private_dispatch_leaves_either_edge(rules: list[Rule]) -> None:
    app = flask_app(rules)
    check(app, rules, lambda m, p: flask_dispatch(app, rules, m, p))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rules_st)
def test_starlette_no_private_dispatch_leaves_either_edge(rules: list[Rule]) -> None:
    app = starlette_app(rules)
    with TestClient(app) as client:
        check(app, rules, lambda m, p: starlette_dispatch(client, m, p))


# --- the model against a real nginx, on a fixed sample ---------------------------------------

SAMPLE = [
    Rule(("pages", "{p:path}"), False, "public", ("GET",)),
    Rule(("pages", "drafts", "{n:int}"), False, "private", ("GET",)),
    Rule(("pages", "admin", "purge"), False, "excluded", ("GET",)),
    Rule(("users", "{x}"), False, "public", ("GET", "POST")),
    Rule(("users", "{n:int}"), False, "private", ("GET",)),
    Rule(("users", "{n:int}", "{p:path}"), False, "public", ("GET",)),
    Rule(("a",), True, "public", ("GET",)),
    Rule(("a", "{x}"), False, "excluded", ("POST",)),
    Rule(("{p:path}",), False, "private", ("GET",)),
]


@pytest.fixture(scope="module")
def sample_nginx(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, Flask, list[Block]]]:
    try:
        binary = find_nginx()
    except meshware.ConfigError as exc:
        pytest.skip(str(exc))
    app = flask_app(SAMPLE)
    up = free_port()
    server = make_server("127.0.0.1", up, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    table = table_of(app, f"http://127.0.0.1:{up}")
    prefix = tmp_path_factory.mktemp("nginx-sample")
    port = free_port()
    text = render(
        table,
        NginxOptions(
            listen=f"127.0.0.1:{port}",
            prefix=str(prefix),
            user="root" if os.geteuid() == 0 else None,
        ),
    )
    conf = Path(prefix) / "nginx.conf"
    conf.write_text(text)
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)])
    try:
        wait_port(port, proc)
        yield port, app, parse(text)
    finally:
        stop(proc)
        server.shutdown()
        thread.join(10)


def test_a_fixed_sample_on_a_real_nginx(sample_nginx: tuple[int, Flask, list[Block]]) -> None:
    port, app, blocks = sample_nginx
    for path in paths_for(SAMPLE):
        for method in ("GET", "POST"):
            status, data = raw(
                port,
                f"{method} {quote(path)} HTTP/1.1\r\nHost: e\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert b"PRIVATE" not in data, (method, path)
            model = nginx_model(blocks, method, path)
            if model == "forward":  # what nginx forwards, the app answers as it would directly
                with app.test_client() as c:
                    expected = c.open(quote(path), method=method).status_code
                assert status == expected, (method, path, data[:200])
            else:  # what the model says nginx answers, it does
                assert status == int(model), (method, path, model, data[:200])
