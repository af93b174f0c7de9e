"""``meshware edge nginx --scope node``: nginx as the node-local router of the whole mesh.

Design notes
------------
The role vulcand had on every node: callers that are not Python (``curl``, Go, Java) send
``http://127.0.0.1:8480/users/42`` and nginx routes it as ``meshware.Client`` would. Pure, like
:func:`meshware.edge.nginx.render` which calls it.

* **Every route the table routes**, private ones included: the winners of conflicts, in the
  client's precedence, with the client's method fall-through. Host-bound and WebSocket routes
  are left out (the client only routes them when asked with ``host=``; nginx would need
  ``Upgrade`` handling). Shadows (issue 10: routes an app serves but meshware does not route
  to) are never forwarded to: their paths answer ``404`` in the shadow's place, so no other
  route takes them.
* **Resolution in nginx, the same as the trie's.** Each route becomes one regex entry
  ``"METHODS PATH"`` of an nginx ``map`` over ``"$request_method $uri"``; a map tries its regexes
  in order and the first match wins, so the entries are emitted in the order the trie's
  backtracking search would find them (per segment: static, then typed converters by rank,
  then ``str``, then ``path``; among the claims on one template, the conflict winner first).
  Then the table's slow path: a path some route matches with another method answers ``405``;
  then the trailing-slash fallback (a route ending in ``/`` takes the path without it; an
  *ordered* app's route takes the path with an extra ``/``). Starlette's ordered routers are
  kept: an earlier route of the same app that also matches takes the request (a look-ahead
  entry before the later route). Maps are split by the path's first segment (one ``location``
  per static first segment), so a request is checked against its own service's routes and the
  generic ones, never against the whole mesh.
* **The mesh's semantics per route**, in one named location per (instances, policy): retries to
  the next instance (``proxy_next_upstream error timeout http_502 http_503 http_504``, at most
  ``retries + 1`` tries) for what the client retries: nginx, like the client, passes a
  non-idempotent request (POST, PATCH) to the next instance only when it never reached the
  first; a route published ``idempotent`` adds ``non_idempotent``; a route published *not*
  idempotent gets ``proxy_next_upstream off`` (nginx cannot tell "never sent" apart for methods
  it deems idempotent, and resending is the worse mistake). The route's ``timeout`` bounds each
  try. Passive ejection: ``max_fails``/``fail_timeout`` from the client policy (5 failures,
  1 s). Draining instances are not in the upstreams; a route with no serving instance answers
  ``503``.
* The node router trusts its local callers: ``X-Meshware-Timeout-Ms`` passes through (the public
  edge drops it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .._core.policy import ClientPolicy
from .._core.records import ANY_METHOD
from .._core.table import Endpoints, Instance, Route, RoutingTable
from .._core.templates import Template

__all__ = ["NodeEntry", "node_entries", "render_node"]

_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One regex of a node map: requests whose ``"METHOD path"`` matches go to ``route``.

    ``route`` is ``None`` for the table's refusals: ``status`` 405 (the path is served with other
    methods) or 404.
    """

    methods: str  # regex alternatives of the method, e.g. "(?:GET|HEAD)" or "[^ ]+"
    path: str  # regex of the whole path, unanchored
    route: Route | None
    status: int = 0
    bucket: str | None = None  # the first path segment it needs, None when any


def _methods(methods: frozenset[str]) -> str:
    if ANY_METHOD in methods:
        return "[^ ]+"
    return "(?:" + "|".join(sorted(re.escape(m) for m in methods)) + ")"


def _both(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    if ANY_METHOD in a:
        return b
    if ANY_METHOD in b:
        return a
    return a & b


def _pattern(template: Template) -> str:
    return _NAMED_GROUP.sub("(?:", template.pattern)


def _bucket(template: Template) -> str | None:
    first = template.segments[0] if template.segments else ""
    return first if isinstance(first, str) else None


def _order(route: Route) -> tuple[object, ...]:
    segs = tuple((0, s) if isinstance(s, str) else (s.rank, s.key) for s in route.template.segments)
    return (segs, route.rank, route.service, route.order, route.route_id)


def routed(table: RoutingTable) -> list[Route]:
    """The routes (and shadows) the client matches with no ``host=``, in search order."""
    shadows = getattr(table, "shadows", None)
    out = [
        r
        for r in [*(r for r, _ in table.routes()), *(shadows() if shadows is not None else ())]
        if r.spec.host is None and r.spec.kind != "websocket" and r.methods
    ]
    out.sort(key=_order)
    return out


def _is_shadow(route: Route) -> bool:
    return bool(getattr(route, "shadow", False))


def node_entries(table: RoutingTable) -> list[NodeEntry]:
    """Every entry of the node maps, in order (see the module docstring)."""
    routes = routed(table)
    out: list[NodeEntry] = []
    for r in routes:  # the trie's search, with the ordered apps' earlier routes first
        pattern = _pattern(r.template)
        if _is_shadow(r):  # served by the app, never routed: its paths go nowhere (404)
            out.append(NodeEntry(_methods(r.methods), pattern, None, 404, _bucket(r.template)))
            continue
        for earlier in r.shadows:
            both = _both(r.methods, earlier.methods)
            if both and earlier.spec.host is None:
                ahead = f"(?={pattern}$){_pattern(earlier.template)}"
                if _is_shadow(earlier):
                    out.append(NodeEntry(_methods(both), ahead, None, 404, _bucket(r.template)))
                else:
                    out.append(
                        NodeEntry(_methods(both), ahead, earlier, bucket=_bucket(r.template))
                    )
        out.append(NodeEntry(_methods(r.methods), pattern, r, bucket=_bucket(r.template)))
    routes = [r for r in routes if not _is_shadow(r)]
    seen: set[str] = set()
    for r in routes:  # matched with another method: the client's NoRouteError with `allowed`
        pattern = _pattern(r.template)
        if pattern not in seen:
            seen.add(pattern)
            out.append(NodeEntry("[^ ]+", pattern, None, 405, _bucket(r.template)))
    for r in routes:  # a missing trailing slash: the first route "path/" matches, if it may
        pattern = _pattern(r.template)
        if r.template.text.endswith("/") and r.template.text != "/":
            out.append(
                NodeEntry(_methods(r.methods), "(?!.*/$)" + pattern[:-1], r, 0, _bucket(r.template))
            )
        elif pattern.endswith("/(.*)"):  # a path parameter takes "" (the path itself matched above)
            out.append(
                NodeEntry(
                    _methods(r.methods),
                    "(?!.*/$)" + pattern[:-5],
                    r if r.ordered else None,
                    0 if r.ordered else 404,
                    _bucket(r.template),
                )
            )
    for r in routes:  # an extra trailing slash: only an ordered app (Starlette) takes it
        pattern = _pattern(r.template) + "/"
        if r.template.text != "/":
            status = 0 if r.ordered else 404
            out.append(
                NodeEntry(
                    _methods(r.methods),
                    pattern,
                    r if r.ordered else None,
                    status,
                    _bucket(r.template),
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class _Policy:
    upstream: str | None  # None: no serving instance (503)
    next_upstream: str
    tries: int
    timeout: float | None


def _route_policy(route: Route, upstream: str | None, policy: ClientPolicy) -> _Policy:
    spec = route.spec
    statuses = " ".join(f"http_{s}" for s in sorted(policy.retry_statuses) if s in _NGINX_STATUSES)
    if spec.idempotent is False:
        nxt = "off"
    else:
        nxt = f"error timeout {statuses}".strip()
        if spec.idempotent:
            nxt += " non_idempotent"
    retries = spec.retries if spec.retries is not None else policy.retries
    timeout = spec.timeout if spec.timeout is not None else policy.attempt_timeout
    return _Policy(upstream, nxt, retries + 1, timeout)


_NGINX_STATUSES = frozenset({500, 502, 503, 504, 403, 404, 429})


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_node(
    table: RoutingTable,
    *,
    listen: str,
    server_name: str,
    client_max_body_size: str,
    connect_timeout: float,
    read_timeout: float,
    send_timeout: float,
    keepalive: int,
    upstream_name: Callable[[str], str],
    hostport: Callable[[str], str | None],
    weighted: Callable[[list[tuple[str, str]], dict[str, int]], list[tuple[str, str]]],
    weight_of: Callable[[Instance], int] | None = None,
    policy: ClientPolicy | None = None,
) -> list[str]:
    """The ``map``, ``upstream`` and ``server`` blocks of the node router (http-level lines)."""
    policy = policy or ClientPolicy()
    entries = node_entries(table)
    endpoints = {r.key: eps for r, eps in table.routes()}
    none = Endpoints((), ())
    weights = {i.url: weight_of(i) if weight_of else i.weight for i in table.instances()}
    body: list[str] = []

    # upstreams: one per service and set of serving instances declaring a route
    upstreams: dict[tuple[str, tuple[str, ...]], str | None] = {}
    for e in entries:
        r = e.route
        if r is None:
            continue
        urls = tuple(sorted(i.url for i in endpoints.get(r.key, none).serving))
        upstreams.setdefault((r.service, urls), None)
    per_service: dict[str, int] = {}
    for service, _urls in upstreams:
        per_service[service] = per_service.get(service, 0) + 1
    counters: dict[str, int] = {}
    for (service, urls), _ in sorted(upstreams.items()):
        servers = [(hp, u) for u in urls if (hp := hostport(u)) is not None]
        if not servers:
            continue  # no serving instance with a usable address: 503
        k = counters[service] = counters.get(service, -1) + 1
        name = upstream_name(service) + (f"_{k}" if per_service[service] > 1 else "")
        upstreams[(service, urls)] = name
        body.append(f"upstream {name} {{")
        body += [
            f"    server {hp}{w} max_fails={policy.eject_after} fail_timeout={policy.eject_base:g}s;"
            for hp, w in weighted(servers, weights)
        ]
        body.append(f"    keepalive {keepalive};")
        body.append("}")
        body.append("")

    # named locations: one per upstream and route policy
    targets: dict[_Policy, str] = {}

    def target(e: NodeEntry) -> str:
        r = e.route
        if r is None:
            return f"@mesh_{e.status}"
        urls = tuple(sorted(i.url for i in endpoints.get(r.key, none).serving))
        p = _route_policy(r, upstreams.get((r.service, urls)), policy)
        if p.upstream is None:
            return "@mesh_503"
        name = targets.get(p)
        if name is None:
            name = targets[p] = f"@mesh_t{len(targets)}"
        return name

    buckets = sorted({e.bucket for e in entries if e.bucket is not None})
    variables = {b: f"$mesh_b{k + 1}" for k, b in enumerate(buckets)}
    for b, var in [(None, "$mesh_b0"), *((b, variables[b]) for b in buckets)]:
        body.append(f'map "$request_method $uri" {var} {{')
        for e in entries:
            if e.bucket is None or e.bucket == b:
                regex = f"~^{e.methods} {e.path}$"
                body.append(f"    {_quote(regex)} {target(e)};")
        body.append("    default @mesh_404;")
        body.append("}")
        body.append("")
    if len(buckets) > 400:
        size = 1 << (2 * len(buckets)).bit_length()
        body.append(f"variables_hash_max_size {size};")
        body.append("")

    body += [
        "server {",
        f"    listen {listen};",
        f"    server_name {server_name};",
        "    server_tokens off;",
        "    merge_slashes off;",
        f"    client_max_body_size {client_max_body_size};",
        "    proxy_http_version 1.1;",
        "    proxy_redirect off;",
        f"    proxy_connect_timeout {connect_timeout:g}s;",
        f"    proxy_read_timeout {read_timeout:g}s;",
        f"    proxy_send_timeout {send_timeout:g}s;",
        "    proxy_set_header Host $proxy_host;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    # targets whose meaning depends on decoding or normalisation: refused outright",
        '    if ($request_uri ~ "^[^/]") { return 400; }',
        r'    if ($request_uri ~* "^[^?]*(%2e|%2f|%5c|%00|\\\\|//|/\\.\\.?(/|\\?|$))") { return 400; }',
        "",
        "    location / {",
        "        error_page 418 = $mesh_b0;",
        "        return 418;",
        "    }",
    ]
    for b in buckets:
        var = variables[b]
        exact = "/" + b
        places = [f"= {_quote(exact)}"] if b == "" else [f"= {_quote(exact)}", _quote(exact + "/")]
        for place in places:
            body += [
                f"    location {place} {{",
                f"        error_page 418 = {var};",
                "        return 418;",
                "    }",
            ]
    for p, name in targets.items():
        body.append(f"    location {name} {{")
        body.append(f"        proxy_pass http://{p.upstream};")
        body.append(f"        proxy_next_upstream {p.next_upstream};")
        if p.next_upstream != "off":
            body.append(f"        proxy_next_upstream_tries {p.tries};")
        if p.timeout is not None:
            body.append(f"        proxy_connect_timeout {min(connect_timeout, p.timeout):g}s;")
            body.append(f"        proxy_read_timeout {p.timeout:g}s;")
            body.append(f"        proxy_send_timeout {p.timeout:g}s;")
        body.append("    }")
    body += [
        '    location @mesh_404 { default_type text/plain; return 404 "no route\\n"; }',
        '    location @mesh_405 { default_type text/plain; return 405 "method not allowed\\n"; }',
        '    location @mesh_503 { default_type text/plain; return 503 "no serving instance\\n"; }',
        "}",
    ]
    return body
