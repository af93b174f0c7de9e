"""``meshware edge nginx``: an nginx DMZ configuration rendered from the live routing table.

Design notes
------------
:func:`render` is pure (table and options in, text out); the rest is the I/O around it:
validating with ``nginx -t``, replacing the file atomically, reloading, watching.

What the configuration does (the security tests in ``tests/edge`` run against a real nginx):

* one ``upstream`` per service with a public route: its serving instances, keep-alive
  connections, failover to the next instance on connection errors (``proxy_next_upstream``,
  idempotent requests only);
* one ``location`` per public route matching exactly its template (``location =`` for static
  ones, an anchored regex otherwise, tried in the mesh's precedence order) and its methods
  (others: ``405``); a rewrite maps the public prefix to the service's own; inside it, nested
  locations deny what the app dispatches elsewhere (:mod:`.dispatch`);
* everything else is answered ``404`` by nginx itself, and request targets whose meaning depends
  on decoding or normalisation (:func:`~meshware.edge.public.refuse_target`) ``400``;
* ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are *set* from the connection (incoming values are
  not trusted), hop-by-hop headers and meshware's internal headers are dropped, the body size
  and timeouts are configurable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._core.records import ANY_METHOD
from .._core.regex import backtracking_safe
from .._core.table import Instance, RoutingTable
from .._core.traffic import TrafficState
from .._enforce import CALLER_HEADER, EDGE_CALLER
from .._errors import ConfigError
from .dispatch import dispatched
from .node import render_node
from .public import PublicRoute, Rewrite, public_routes

__all__ = ["NginxOptions", "find_nginx", "render", "validate", "write_if_changed"]

log = logging.getLogger("meshware.edge")

BAD_REQUEST_URI = "/__meshware_bad_request"  # internal only: nginx's own 501/505 become 400
HOP_BY_HOP = (
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Upgrade",
    "X-Meshware-Timeout-Ms",
)


@dataclass(frozen=True, slots=True)
class NginxOptions:
    """How the rendered configuration listens, limits and proxies.

    ``standalone=True`` renders a whole ``nginx.conf`` (``events``, ``http``, pid and temp paths
    under ``prefix``); ``False`` renders the ``upstream`` and ``server`` blocks to include in
    your own ``http`` block.
    """

    listen: str = "127.0.0.1:8080"
    server_name: str = "_"
    client_max_body_size: str = "1m"
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    send_timeout: float = 30.0
    keepalive: int = 16
    rewrites: tuple[Rewrite, ...] = ()
    standalone: bool = True
    prefix: str = ""
    worker_processes: int = 1
    user: str | None = None  # the workers' user (standalone; nginx's default is nobody)
    scope: str = "public"  # "public": the public routes (an edge); "node": every route, loopback

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"listen must be HOST:PORT (e.g. 127.0.0.1:8080), not {self.listen!r}",
                setting="listen",
            )
        if self.scope not in ("public", "node"):
            raise ConfigError(
                f"scope must be 'public' or 'node', not {self.scope!r}", setting="scope"
            )
        if self.scope == "node":
            if not _LOOPBACK.fullmatch(host):
                raise ConfigError(
                    "the node scope exposes private routes: it listens on loopback only "
                    f"(127.0.0.1:PORT, [::1]:PORT or localhost:PORT), not {self.listen!r}",
                    setting="listen",
                )
            if self.rewrites:
                raise ConfigError("rewrites apply to the public scope only", setting="rewrite")
        if not _SIZE.fullmatch(self.client_max_body_size):
            raise ConfigError(
                "client_max_body_size must be an nginx size such as 1m, 512k or 0, "
                f"not {self.client_max_body_size!r}",
                setting="client_max_body_size",
            )
        for name in ("connect_timeout", "read_timeout", "send_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds", setting=name)


_SIZE = re.compile(r"[0-9]+[kKmMgG]?")
_LOOPBACK = re.compile(r"127(\.[0-9]{1,3}){3}|\[::1\]|localhost")


def render(
    table: RoutingTable,
    options: NginxOptions | None = None,
    *,
    weight_of: Callable[[Instance], int] | None = None,
    edges: int = 1,
    host_ok: Callable[[str], bool] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> str:
    """The nginx configuration exposing ``table``'s public routes (see the module docstring).

    ``weight_of`` gives an instance's effective weight (the operator's overrides); by default
    the weight its record publishes. ``edges`` is the number of live edges sharing the routes'
    mesh-wide rate limits: this one enforces ``1/edges`` of each. A route or instance nginx
    cannot take is left out with a warning naming it (:func:`route_problem`; an instance whose
    host ``host_ok`` says nginx cannot resolve); ``exclude`` leaves out more (route keys,
    ``host:port`` of instances; see :func:`render_checked`).
    """
    o = options or NginxOptions()
    if o.scope == "node":
        return _wrap(
            o,
            [
                "# Generated by `meshware edge nginx --scope node` from the mesh routing table. Do",
                "# not edit: it is rewritten whenever the table changes.",
                f"# Every route of the mesh ({len(table.routes())} claim(s)), for local callers.",
            ],
            render_node(
                table,
                listen=o.listen,
                server_name=o.server_name,
                client_max_body_size=o.client_max_body_size,
                connect_timeout=o.connect_timeout,
                read_timeout=o.read_timeout,
                send_timeout=o.send_timeout,
                keepalive=o.keepalive,
                upstream_name=_upstream,
                hostport=lambda url: _usable_hostport(url, host_ok, exclude),
                weighted=_weighted,
                weight_of=weight_of,
            ),
        )
    routes = [
        r for r in public_routes(table, o.rewrites) if _route_key(r) not in exclude and _usable(r)
    ]
    # only what the apps themselves dispatch to a public route: see edge/dispatch.py
    routes = dispatched(table, routes)
    services = sorted({r.service for r in routes})
    lines = [
        "# Generated by `meshware edge nginx` from the mesh routing table. Do not edit: it is",
        "# rewritten whenever the table changes.",
        f"# {len(routes)} public route(s) of {len(services)} service(s).",
    ]
    body: list[str] = []
    # One upstream per service and set of instances declaring a route: during a rolling deploy
    # a route only the new version has goes only to the new instances, as in the mesh.
    groups: dict[str, list[tuple[str, ...]]] = {}
    for r in routes:
        sets = groups.setdefault(r.service, [])
        if r.instances not in sets:
            sets.append(r.instances)
    names: dict[tuple[str, tuple[str, ...]], str] = {}
    weights = {i.url: weight_of(i) if weight_of else i.weight for i in table.instances()}
    for service in services:
        sets = sorted(groups[service])
        for k, urls in enumerate(sets):
            name = _upstream(service) + (f"_{k}" if len(sets) > 1 else "")
            servers = [
                (hp, u) for u in urls if (hp := _usable_hostport(u, host_ok, exclude)) is not None
            ]
            if not servers:  # no usable address: its routes stay 404
                continue
            names[(service, urls)] = name
            body.append(f"upstream {name} {{")
            body += [f"    server {hp}{w} max_fails=0;" for hp, w in _weighted(servers, weights)]
            body.append(f"    keepalive {o.keepalive};")
            body.append("}")
            body.append("")
    usable = [r for r in routes if (r.service, r.instances) in names]
    limits = _limit_zones(usable, edges)
    if limits:
        body[:0] = [line for lim in limits.values() for line in lim.zone_lines] + [""]
    body.extend(
        _server(
            usable,
            {(r.service, r.instances): names[(r.service, r.instances)] for r in usable},
            o,
            limits,
        )
    )
    return _wrap(o, lines, body)


def _wrap(o: NginxOptions, lines: list[str], body: list[str]) -> str:
    """The whole ``nginx.conf`` around ``body`` (standalone), or the blocks alone."""
    if o.standalone:
        prefix = o.prefix or "."
        lines += [
            "daemon off;",
            *([f"user {o.user};"] if o.user else []),
            f"worker_processes {o.worker_processes};",
            f"pid {prefix}/nginx.pid;",
            f"error_log {prefix}/error.log warn;",
            "events { worker_connections 1024; }",
            "http {",
            "    access_log off;",
            f"    client_body_temp_path {prefix}/client_body;",
            f"    proxy_temp_path {prefix}/proxy;",
            f"    fastcgi_temp_path {prefix}/fastcgi;",
            f"    uwsgi_temp_path {prefix}/uwsgi;",
            f"    scgi_temp_path {prefix}/scgi;",
        ]
        lines += ["    " + b if b else "" for b in body]
        lines.append("}")
    else:
        lines += body
    return "\n".join(lines) + "\n"


def _server(
    routes: list[PublicRoute],
    upstreams: dict[tuple[str, tuple[str, ...]], str],
    o: NginxOptions,
    limits: dict[int, _Limit] | None = None,
) -> list[str]:
    limits = limits or {}
    out = [
        "server {",
        f"    listen {o.listen};",
        f"    server_name {o.server_name};",
        "    server_tokens off;",
        "    merge_slashes off;",
        f"    client_max_body_size {o.client_max_body_size};",
        "    large_client_header_buffers 4 8k;",
        "    underscores_in_headers off;",
        "    proxy_http_version 1.1;",
        "    proxy_redirect off;",
        "    proxy_buffering on;",
        f"    proxy_connect_timeout {o.connect_timeout:g}s;",
        f"    proxy_read_timeout {o.read_timeout:g}s;",
        f"    proxy_send_timeout {o.send_timeout:g}s;",
        "    proxy_next_upstream error timeout;",
        "    proxy_next_upstream_tries 3;",
        "    proxy_set_header Host $proxy_host;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
    ]
    out += [f'    proxy_set_header {h} "";' for h in HOP_BY_HOP]
    # set, never passed on: members do not rate-limit again what the edge let in
    out.append(f"    proxy_set_header {CALLER_HEADER} {EDGE_CALLER};")
    out += [
        "    # HTTP/0.9 (no version on the request line): refused (nginx answers it in HTTP/0.9)",
        '    if ($server_protocol !~ "^HTTP/1\\.") { return 400; }',
        "    # targets whose meaning depends on decoding or normalisation: refused outright",
        '    if ($request_uri ~ "^[^/]") { return 400; }',
        r'    if ($request_uri ~* "^[^?]*(%2e|%2f|%5c|%00|\\\\|//|/\\.\\.?(/|\\?|$))") { return 400; }',
        "",
    ]
    if limits:
        out += ["    limit_req_status 429;", "    limit_conn_status 429;"]
    for i, r in enumerate(routes):
        out += _location(r, upstreams[(r.service, r.instances)], limits.get(i))
    for lim in limits.values():
        out += lim.named_location
    out += [
        "    location / {",
        "        return 404;",
        "    }",
        "    # malformed requests nginx itself refuses with 501/505 (an unknown transfer coding,",
        "    # an unknown HTTP version) are the client's fault: say 400",
        "    # an unknown HTTP version has no parsed request to redirect to a named location",
        "    # (nginx answered 500): a URI redirect works on it too",
        f"    error_page 501 505 =400 {BAD_REQUEST_URI};",
        f"    location = {BAD_REQUEST_URI} {{",
        "        internal;",
        '        return 400 "bad request\\n";',
        "    }",
        "}",
    ]
    return out


@dataclass(frozen=True, slots=True)
class _Limit:
    """The nginx lines enforcing one public route's limits at this edge."""

    zone_lines: list[str]
    location_lines: list[str]
    named_location: list[str]


def _nginx_rate(per_second: float) -> tuple[str, float]:
    """nginx takes whole requests per second or per minute: the closest, never under 1/min
    (README: a share below that is enforced as 1/min). The text and its rate per second."""
    if per_second >= 1 and per_second == int(per_second):
        return f"{int(per_second)}r/s", per_second
    per_minute = max(1, round(per_second * 60))
    return f"{per_minute}r/m", per_minute / 60


def _limit_zones(routes: list[PublicRoute], edges: int) -> dict[int, _Limit]:
    """Zones and directives for the public routes that declare limits (route index -> lines).

    The rate and the burst are shared by the live edges (1/N each, the burst rounded up); the
    key is the client's address (``per="client"``) or one key for the route; concurrency is
    per edge, like a member's. Refusals are ``429`` with ``Retry-After`` (the seconds until the
    next request is allowed, at least 1) from a named location.
    """
    out: dict[int, _Limit] = {}
    for i, r in enumerate(routes):
        limits = r.route.spec.limits
        if limits is None:
            continue
        zones: list[str] = []
        here: list[str] = []
        retry_after = 1
        if limits.rate is not None:
            share, burst = limits.share(edges)
            text, rate = _nginx_rate(share)
            key = "$binary_remote_addr" if limits.per == "client" else "$meshware_route_key"
            zones.append(
                f"limit_req_zone {key} zone=meshware_req_{i}:1m rate={text};"
                f"  # {r.service} {r.route.template.text}: {limits.rate_text}"
                f" {limits.per} / {edges} edge(s)"
            )
            here.append(
                f"        limit_req zone=meshware_req_{i}{f' burst={burst}' if burst else ''} nodelay;"
            )
            retry_after = max(1, math.ceil(1 / rate))
        if limits.concurrency is not None:
            zones.append(f"limit_conn_zone $meshware_route_key zone=meshware_conn_{i}:1m;")
            here.append(f"        limit_conn meshware_conn_{i} {limits.concurrency};")
        here.append(f"        error_page 429 @meshware_429_{i};")
        named = [
            f"    location @meshware_429_{i} {{",
            f"        add_header Retry-After {retry_after} always;",
            '        return 429 "too many requests\n";',
            "    }",
        ]
        out[i] = _Limit(zones, here, named)
    if out:
        # a constant key: one bucket for the route (per="route") and for concurrency
        first = next(iter(out.values()))
        first.zone_lines[:0] = ["map $server_port $meshware_route_key { default route; }"]
    return out


def _location(r: PublicRoute, upstream: str, limit: _Limit | None = None) -> list[str]:
    public = r.public
    if public.params:
        header = f'    location ~ "^{_nginx_regex(r.location or public.pattern)}$" {{'
    else:
        header = f'    location = "{_quoted(public.text)}" {{'
    out = [f"    # {r.service}: {r.route.template.text} {','.join(r.methods)}", header]
    handle: list[str] = []
    if ANY_METHOD not in r.methods:
        allowed = "|".join(sorted(set(r.methods)))
        handle.append(f'        if ($request_method !~ "^({allowed})$") {{ return 405; }}')
    if r.rewrite is not None:
        pub = r.rewrite.public or ""
        internal = r.rewrite.internal or ""
        handle.append(f'        rewrite "^{_escape(pub)}(.*)$" "{internal}$1" break;')
    if limit is not None:
        handle += limit.location_lines
    handle.append(f"        proxy_pass http://{upstream};")
    out += _guarded(r, handle)
    out += handle
    out.append("    }")
    return out


def _guarded(r: PublicRoute, handle: list[str]) -> list[str]:
    """Nested locations denying the paths the app dispatches elsewhere (``r.guards``, first in
    the app's order). One method set for all (their union): a path two of them match is denied
    for the methods of both, whichever nginx finds first."""
    if not r.guards:
        return []
    methods = {m for g in r.guards for m in g.methods}
    if ANY_METHOD in methods:
        deny = ["            return 404;"]
    else:
        deny = [
            f'            if ($request_method ~ "^({"|".join(sorted(methods))})$") {{ return 404; }}'
        ]
    out = [f"        # taken by {g.what} ({','.join(g.methods)})" for g in r.guards]
    chunk: list[str] = []
    size = 0
    chunks: list[list[str]] = []
    for g in r.guards:
        regex = _nginx_regex(g.regex)
        if chunk and size + len(regex) > 3000:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(regex)
        size += len(regex) + 5
    chunks.append(chunk)
    for part in chunks:
        out.append(f'        location ~ "^(?:{"|".join(f"(?:{x})" for x in part)})$" {{')
        out += deny
        out += ["    " + line for line in handle]
        out.append("        }")
    return out


def _nginx_regex(pattern: str) -> str:
    # Python's regex dialect as the templates produce it is PCRE-compatible; only the quote and
    # the backslash need care inside an nginx double-quoted string.
    return pattern.replace("\\", "\\\\").replace('"', '\\"')


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _escape(text: str) -> str:
    return re.escape(text).replace("\\", "\\\\").replace('"', '\\"')


def _weighted(servers: list[tuple[str, str]], weights: dict[str, int]) -> list[tuple[str, str]]:
    """`` weight=N`` per server as the mesh balances (nothing when all weights are equal);
    weight 0 is ``down`` (no new requests) unless every instance has weight 0, as in the client."""
    ws = [weights.get(u, 100) for _, u in servers]
    if len(set(ws)) <= 1:
        return [(hp, "") for hp, _ in servers]
    return [
        (hp, f" weight={w}" if w > 0 else " down") for (hp, _), w in zip(servers, ws, strict=True)
    ]


def _upstream(service: str) -> str:
    # injective: "a-b", "a.b" and "a_b" must not share a name (nginx -t would refuse the file)
    return "mesh_" + service.replace("_", "_u").replace("-", "_h").replace(".", "_d")


_HOSTPORT = re.compile(r"^http://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?$")


def _hostport(url: str, host_ok: Callable[[str], bool] | None = None) -> str | None:
    """``host:port`` for nginx's ``server``; None (left out, with a warning) if unusable."""
    m = _HOSTPORT.match(url)
    if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
        _warn_once(f"edge: leaving out instance {url!r}: nginx proxies to http://host:port only")
        return None
    host = m.group(1)
    if host_ok is not None and not host.startswith("[") and not host_ok(host):
        _warn_once(f"edge: leaving out instance {url!r}: nginx cannot resolve {host!r}")
        return None
    return f"{host}:{m.group(2) or 80}"


def _usable_hostport(
    url: str, host_ok: Callable[[str], bool] | None, exclude: frozenset[str]
) -> str | None:
    hp = _hostport(url, host_ok)
    return None if hp in exclude else hp


# ------------------------------------------------------------------ what nginx cannot take

_TOKEN_MAX = 4000  # nginx refuses a configuration token over 4 KB ("too long parameter")
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")
_warned: dict[str, None] = {}


def _warn_once(message: str) -> None:
    """One warning per problem and process (a watch re-renders on every change)."""
    if message in _warned:
        return
    if len(_warned) > 4096:
        _warned.clear()
    _warned[message] = None
    log.warning("%s", message)


def route_problem(r: PublicRoute) -> str | None:
    """Why nginx cannot take this public route as rendered, or ``None``."""
    text = r.public.text
    try:
        text.encode("utf-8")
        r.route.template.text.encode("utf-8")
    except UnicodeEncodeError:
        return "its template is not valid UTF-8 (a lone surrogate)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "its template holds control characters"
    if not _SERVICE_NAME.match(r.service):
        return f"service name {r.service!r} is not [A-Za-z0-9._-]"
    if any(m != ANY_METHOD and not _METHOD.match(m) for m in r.methods):
        return "a method is not an HTTP token"
    if text == BAD_REQUEST_URI:
        return f"{BAD_REQUEST_URI} is the edge's own"
    if r.public.params:
        if len(_nginx_regex(r.public.pattern).encode("utf-8")) > _TOKEN_MAX:
            return f"its regex is longer than nginx takes ({_TOKEN_MAX} bytes)"
        for p in r.public.params:  # nginx's PCRE backtracks: a regex from a record must not
            if p.converter == "re" and not backtracking_safe(p.regex):
                return f"the regex of {p.name!r} could backtrack for long in nginx's PCRE"
    elif len(_quoted(text).encode("utf-8")) > _TOKEN_MAX:
        return f"its template is longer than nginx takes ({_TOKEN_MAX} bytes)"
    return None


def _route_key(r: PublicRoute) -> str:
    return f"route {r.service} {r.route.template.text} {','.join(r.methods)}"


def _usable(r: PublicRoute) -> bool:
    problem = route_problem(r)
    if problem is None:
        return True
    _warn_once(
        f"edge: leaving out {r.service}'s public route "
        f"{r.route.template.text.encode('utf-8', 'backslashreplace').decode()!r}: {problem}"
    )
    return False


# --------------------------------------------------------------------------- I/O around render

_CONF_LINE = re.compile(r" in [^\n]*?\.conf:([0-9]+)")
_OWNER = re.compile(r"^\s*# (?P<service>[^:\s]+): (?P<template>\S+) (?P<methods>\S+)$")


def culprit(text: str, error: str) -> str | None:
    """The route key or instance ``host:port`` behind the line nginx -t names, if one is."""
    m = _CONF_LINE.search(error)
    if m is None:
        return None
    lines = text.split("\n")
    n = int(m.group(1)) - 1
    if not 0 <= n < len(lines):
        return None
    words = lines[n].split()
    if len(words) >= 2 and words[0] == "server" and words[1] != "{":
        return words[1].rstrip(";")  # an upstream's instance
    for k in range(n, max(-1, n - 64), -1):  # up to the location's head and its comment
        line = lines[k].strip()
        if line.startswith("location "):
            owner = _OWNER.match(lines[k - 1]) if k else None
            if owner is None:
                return None
            return f"route {owner['service']} {owner['template']} {owner['methods']}"
        if line == "}" and k != n:
            return None
    return None


def render_checked(
    table: RoutingTable,
    options: NginxOptions,
    check: Callable[[str], None],
    *,
    host_ok: Callable[[str], bool] | None = None,
    weight_of: Callable[[Instance], int] | None = None,
    edges: int = 1,
    attempts: int = 16,
) -> str:
    """:func:`render`, then ``check`` (``nginx -t``); a route or instance nginx refuses is left
    out (with a warning naming it) and the rest rendered again, so one bad record costs only
    itself. Raises the check's :class:`~meshware.ConfigError` when the problem is no record's.
    """
    exclude: set[str] = set()
    while True:
        text = render(
            table,
            options,
            weight_of=weight_of,
            edges=edges,
            host_ok=host_ok,
            exclude=frozenset(exclude),
        )
        try:
            check(text)
            return text
        except ConfigError as exc:
            bad = culprit(text, str(exc))
            if bad is None or bad in exclude or len(exclude) >= attempts:
                raise
            _warn_once(f"edge: leaving out {bad}: nginx refused it: {exc}")
            exclude.add(bad)


_resolved: dict[str, tuple[float, bool]] = {}


def host_resolves(host: str, *, ttl: float = 60.0) -> bool:
    """Whether ``host`` resolves now (nginx refuses a configuration naming one that does not);
    answers are kept ``ttl`` seconds."""
    now = time.monotonic()
    hit = _resolved.get(host)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        ok = True
    except (OSError, UnicodeError):
        ok = False
    if len(_resolved) > 4096:
        _resolved.clear()
    _resolved[host] = (now, ok)
    return ok


def find_nginx(explicit: str | None = None) -> str:
    """The nginx binary: ``explicit``, ``$NGINX_BIN``, ``nginx`` on PATH or in /usr/sbin."""
    for candidate in (
        explicit,
        os.environ.get("NGINX_BIN"),
        shutil.which("nginx"),
        "/usr/sbin/nginx",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(
        "nginx not found: install it, put it on PATH, or pass --nginx / set NGINX_BIN",
        setting="nginx",
    )


def validate(text: str, *, nginx: str | None = None, standalone: bool = True) -> None:
    """Run ``nginx -t`` on ``text``; :class:`~meshware.ConfigError` with nginx's words if bad."""
    binary = find_nginx(nginx)
    with tempfile.TemporaryDirectory(prefix="meshware-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        if standalone:
            conf.write_text(text)
        else:
            (Path(tmp) / "mesh.conf").write_text(text)
            conf.write_text(
                f"pid {tmp}/nginx.pid; error_log {tmp}/error.log; events {{}}\n"
                f"http {{ access_log off; client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/p;"
                f" fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;"
                f" include {tmp}/mesh.conf; }}\n"
            )
        result = subprocess.run(
            [binary, "-t", "-q", "-p", tmp, "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    if result.returncode != 0:
        raise ConfigError(
            f"nginx -t rejected the rendered configuration: {result.stderr.strip()}",
            setting="nginx",
        )


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` atomically (same directory, then rename); False if equal."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


class Watcher:
    """Re-render on table changes (debounced), validate, replace the file, reload nginx.

    ``reload`` is called after a changed configuration was written; nothing happens when the
    rendered text did not change. ``traffic`` returns the view's weight overrides and live
    edges (:attr:`meshware.MeshView.traffic`): a new edge or override re-renders too.
    """

    def __init__(
        self,
        out: Path,
        options: NginxOptions,
        reload: Callable[[], None],
        *,
        debounce: float = 0.5,
        check: Callable[[str], None] | None = None,
        traffic: Callable[[], TrafficState] | None = None,
    ) -> None:
        self.out = out
        self.traffic = traffic  # weight overrides and the number of live edges
        self.options = options
        self.reload = reload
        self.debounce = debounce
        self.check = check
        self.host_ok: Callable[[str], bool] | None = None  # e.g. host_resolves
        self.retry_after = 5.0  # seconds before a failed check or reload is tried again
        self.renders = 0
        self.writes = 0
        self._pending = threading.Event()
        self._latest: RoutingTable | None = None
        self._installed: str | None = None  # the text nginx last reloaded successfully

    def changed(self, table: RoutingTable) -> None:
        """The view's ``on_change`` callback."""
        self._latest = table
        self._pending.set()

    def apply(self, table: RoutingTable) -> bool:
        """Render, and if different, validate, write and reload; whether it wrote."""
        self.renders += 1
        state = self.traffic() if self.traffic is not None else None
        text = render(
            table,
            self.options,
            weight_of=state.weight_of if state is not None else None,
            edges=state.edges if state is not None else 1,
            host_ok=self.host_ok,
        )
        if text == self._installed:
            return False
        if self._installed is None and not self.writes:  # first run: the file may be in force
            with contextlib.suppress(FileNotFoundError):
                if self.out.read_text() == text:
                    self._installed = text
                    return False
        if self.check is not None:  # what nginx refuses is left out, record by record
            text = render_checked(
                table,
                self.options,
                self.check,
                host_ok=self.host_ok,
                weight_of=state.weight_of if state is not None else None,
                edges=state.edges if state is not None else 1,
            )
            if text == self._installed:
                return False
        write_if_changed(self.out, text)
        self.writes += 1
        self.reload()  # raises if nginx did not take it: retried at the next change or tick
        self._installed = text
        return True

    def run(self, stop: threading.Event, on_error: Callable[[Exception], None]) -> None:
        """Loop until ``stop``: wait for a change, let changes settle ``debounce`` s, apply."""
        while not stop.is_set():
            if not self._pending.wait(0.2):
                continue
            deadline = time.monotonic() + self.debounce
            while time.monotonic() < deadline and not stop.is_set():
                time.sleep(min(0.05, self.debounce))
            self._pending.clear()
            table = self._latest
            if table is None:
                continue
            try:
                self.apply(table)
            except Exception as exc:  # keep the last good configuration in place; try again
                on_error(exc)
                if not stop.wait(self.retry_after):
                    self._pending.set()
