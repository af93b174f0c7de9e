"""Which paths of a public route the app itself dispatches elsewhere: what an edge must deny.

Design notes
------------
A public route's template is not its public set: the owning app (or another service, by the
mesh's precedence) may dispatch some of the paths it matches to another route, a private one
or a *shadow* (a route the app serves without publishing it: static files, docs,
``@meshware.exclude``). A public ``/pages/{slug:path}`` with a private
``/pages/drafts/{id:int}`` under it exposes ``/pages/a`` but not ``/pages/drafts/3``.

The table knows, as the app does (``RoutingTable.preceding``: every route or shadow that takes
some of a route's paths from it, in the app's order; conservative):

* a **static** public route is one path: it is exposed for exactly the methods the table
  dispatches it to that route (:func:`static_methods`, one lookup per method);
* a **dynamic** public route gets :func:`guards`: the regexes of every entry that precedes it,
  over the *public* path (rewrites applied), with the methods they take. The nginx renderer
  denies them inside the route's location, before it proxies. Denying a public entry too is
  harmless (its own location comes first) and keeps the rule simple: whatever precedes, is
  denied here.

An entry whose regex nginx could not run safely (a backtracking ``re:``, a token over nginx's
limit) is denied by a superset, its static prefix followed by anything: never less than it
takes. The proxy needs none of this: it asks the table once per request.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import re

from .._core.records import ANY_METHOD
from .._core.table import Resolution, Route, RoutingTable
from .._core.templates import CONVERTERS, Param, _noncapturing, segment_pieces
from .public import Guard, PublicRoute

log = logging.getLogger("meshware.edge")

__all__ = ["CHECKED_METHODS", "dispatched", "guards", "public_order", "static_methods"]

# the methods an any-method (mounted) static route is checked for, one by one
CHECKED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_REGEX_MAX = 3000  # bytes: nginx takes tokens up to 4 KB, escaped


def static_methods(table: RoutingTable, r: PublicRoute) -> tuple[str, ...]:
    """The methods for which the table dispatches a static public route's one path to it."""
    path = r.route.template.text
    methods = CHECKED_METHODS if ANY_METHOD in r.methods else r.methods
    return tuple(m for m in methods if _is(table.lookup(m, path), r.route))


def _is(found: object, route: Route) -> bool:
    return isinstance(found, Resolution) and found.route.key == route.key


def guards(table: RoutingTable, r: PublicRoute) -> list[Guard]:
    """What must be denied on ``r``'s public paths, in the app's order (see the module notes)."""
    out: list[Guard] = []
    for e in table.preceding(r.route):
        methods = _shared(e, r)
        if not methods:
            continue  # e takes none of the methods r serves: r still gets them
        kind = "shadow" if e.shadow else ("public" if e.spec.public else "private")
        out.append(Guard(_public_regex(e, r), methods, f"{e.service} {kind} {e.template.text}"))
    return out


def _shared(e: Route, r: PublicRoute) -> tuple[str, ...]:
    if ANY_METHOD in e.methods:
        return (ANY_METHOD,)
    if ANY_METHOD in r.methods:
        return tuple(sorted(e.methods))
    return tuple(sorted(set(e.methods) & set(r.methods)))


def _public_regex(e: Route, r: PublicRoute) -> str:
    """``e``'s paths as seen on ``r``'s public side, as a superset (see :func:`location_regex`)."""
    rw = r.rewrite
    text = e.template.text
    if rw is not None:
        inner = rw.internal
        if inner and text != inner and not text.startswith(inner + "/"):
            # it may still match under the internal prefix (a parameter spans it): deny all
            return re.escape(rw.public) + "(?:/.*)?" if rw.public else "/.*"
        text = rw.to_public(text)
    found = location_regex(text, e.ordered, superset=True)
    assert found is not None  # a superset always exists
    return found


# A parameter's language in nginx's PCRE, which matches the decoded path as *bytes* (no UTF
# mode: an invalid UTF-8 path must not make a regex fail, nginx would answer 500), while the
# app matches characters with Python's Unicode classes. A public location must match no more
# than the app's route (a subset); a guard no less than the entry it denies (a superset).
_NON_ASCII = "\\x80-\\xff"
# what may match a non-ASCII character, or count characters, differently on bytes
_UNICODE_SENSITIVE = re.compile(r"\\[dDwWsSbB]|\(\?[a-zA-Z]|\[\^|[^\x00-\x7f]")


def _param(p: Param, ordered: bool, superset: bool) -> str | None:
    conv = p.converter
    if conv == "path":
        return ".*" if ordered or superset else "[^/].*?"
    if conv == "int":
        if ordered:
            return "[0-9]+"
        return f"[0-9{_NON_ASCII}]+" if superset else "[0-9]+"  # werkzeug's \\d+ is Unicode
    if conv == "re":
        if _UNICODE_SENSITIVE.search(p.regex) is None:
            return _noncapturing(p.regex)
        return "[^/]*" if superset else None
    if conv in CONVERTERS:
        return CONVERTERS[conv].regex  # ASCII classes: the same language in bytes
    return "[^/]*" if superset else None


def location_regex(text: str, ordered: bool, *, superset: bool) -> str | None:
    """The paths a route with template ``text`` matches in its app, as a regex nginx runs the
    same way: exactly, or a ``superset`` (for denying) / a subset (for exposing; ``None`` when
    no useful one exists). Anchors are the caller's."""
    out: list[str] = []
    for pieces in segment_pieces(text):
        seg: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                seg.append(re.escape(piece))
                continue
            rx = _param(piece, ordered, superset)
            if rx is None:
                return None
            seg.append(f"({rx})")
        out.append("".join(seg))
    regex = "/" + "/".join(out)
    if len(regex.encode("utf-8", "surrogatepass")) > _REGEX_MAX:
        if not superset:
            return None
        cut = text.find("{")
        return re.escape(text if cut < 0 else text[:cut])[: _REGEX_MAX // 2] + ".*"
    return regex


def public_order(table: RoutingTable, routes: list[PublicRoute]) -> list[PublicRoute]:
    """``routes`` with every public route after those that take paths from it (for nginx's
    first-match regex locations); otherwise as given."""
    index = {r.route.key: k for k, r in enumerate(routes)}
    before: dict[int, set[int]] = {k: set() for k in range(len(routes))}
    for k, r in enumerate(routes):
        if r.public.params:
            before[k] = {index[e.key] for e in table.preceding(r.route) if e.key in index} - {k}
    waiting = {k: len(b) for k, b in before.items()}
    after: dict[int, list[int]] = {}
    for k, b in before.items():
        for e in b:
            after.setdefault(e, []).append(k)
    ready = [k for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[PublicRoute] = []
    placed: set[int] = set()
    while len(out) < len(routes):
        if not ready:  # a cycle (not expected): the first one left, as given
            ready = [min(k for k in range(len(routes)) if k not in placed)]
        k = heapq.heappop(ready)
        if k in placed:
            continue
        placed.add(k)
        out.append(routes[k])
        for n in after.get(k, ()):
            waiting[n] -= 1
            if waiting[n] == 0 and n not in placed:
                heapq.heappush(ready, n)
    return out


def dispatched(table: RoutingTable, routes: list[PublicRoute]) -> list[PublicRoute]:
    """``routes`` as an edge must expose them: static ones narrowed to the methods the app
    dispatches to them (left out if none), dynamic ones with their :func:`guards`, in
    :func:`public_order`."""
    out: list[PublicRoute] = []
    for r in routes:
        if r.public.params:
            location = location_regex(r.public.text, r.route.ordered, superset=False)
            if location is None:
                log.warning(
                    "edge: leaving %s's public route %s out of nginx: its regex would match "
                    "differently on nginx's bytes than in the app",
                    r.service,
                    r.route.template.text,
                )
                continue
            out.append(dataclasses.replace(r, guards=tuple(guards(table, r)), location=location))
            continue
        methods = static_methods(table, r)
        if methods:
            out.append(r if methods == r.methods else dataclasses.replace(r, methods=methods))
    return public_order(table, out)
