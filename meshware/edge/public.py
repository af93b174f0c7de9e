"""What the edge exposes: the public routes of the table, their public paths, hostile targets.

Design notes
------------
Pure, shared by the nginx renderer and the local router so that both expose exactly the same
thing:

* **Public routes** (:func:`public_routes`): a route is public only when its service published
  it so (``@meshware.public`` or ``Mesh(public=[...])``); of two services claiming one method
  and template, the table's winner is the one exposed. Routes come out in the order an edge must
  try them: static templates first, then by the table's precedence.
* **Rewrites** (:class:`Rewrite`): ``users:/users=/user-service/users`` exposes the public
  routes of ``users`` that start with ``/user-service/users`` under ``/users`` instead (the
  nginx-in-front-of-vulcand setup this project comes from).
* **Hostile targets** (:func:`refuse_target`): the edge answers ``400`` itself to a request
  target that is not a plain origin-form path, or whose meaning depends on how a server
  decodes or normalises it (dot segments, encoded slashes, dots or backslashes, NUL, doubled
  slashes). What is left is matched exactly, by both edges, against what the mesh routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._core.records import ANY_METHOD
from .._core.table import Route, RoutingTable
from .._core.templates import Template, parse_template
from .._errors import ConfigError

__all__ = ["Guard", "PublicRoute", "Rewrite", "public_routes", "refuse_target"]

_SERVICE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Expose ``service``'s routes under ``internal`` at ``public`` instead."""

    service: str
    public: str
    internal: str

    @classmethod
    def parse(cls, text: str) -> Rewrite:
        """``SERVICE:PUBLIC=INTERNAL``, e.g. ``users:/users=/user-service/users``."""
        service, sep, rest = text.partition(":")
        public, sep2, internal = rest.partition("=")
        if not sep or not sep2 or not _SERVICE.match(service):
            raise ConfigError(
                f"rewrite {text!r} must look like SERVICE:PUBLIC=INTERNAL, "
                "e.g. users:/users=/user-service/users",
                setting="rewrite",
            )
        for prefix in (public, internal):
            if prefix != "/" and (
                not prefix.startswith("/")
                or prefix.endswith("/")
                or "{" in prefix
                or "//" in prefix
            ):
                raise ConfigError(
                    f"rewrite {text!r}: {prefix!r} must be a path prefix like /users "
                    "(no trailing slash, no parameters)",
                    setting="rewrite",
                )
        return cls(service, public.rstrip("/"), internal.rstrip("/"))

    def applies(self, route: Route) -> bool:
        text = route.template.text
        return route.service == self.service and (
            self.internal == "" or text == self.internal or text.startswith(self.internal + "/")
        )

    def to_public(self, internal_path: str) -> str:
        return (self.public + internal_path[len(self.internal) :]) or "/"

    def to_internal(self, public_path: str) -> str | None:
        """The mesh path for a public path under this rewrite's public prefix, else None."""
        if (
            self.public
            and public_path != self.public
            and not public_path.startswith(self.public + "/")
        ):
            return None
        return (self.internal + public_path[len(self.public) :]) or "/"


@dataclass(frozen=True, slots=True)
class Guard:
    """Paths (``regex``, a full match over the public path) a public route must not serve for
    ``methods`` (``("*",)``: any), because ``what`` takes them in the app's own dispatch."""

    regex: str
    methods: tuple[str, ...]
    what: str


@dataclass(frozen=True, slots=True)
class PublicRoute:
    """One route the edge exposes: its public template, methods, and where it goes."""

    route: Route
    public: Template  # the template public clients use
    methods: tuple[str, ...]  # ("*",) for any
    rewrite: Rewrite | None
    instances: tuple[str, ...] = ()  # URLs of the serving instances that declare the route
    guards: tuple[Guard, ...] = ()  # what earlier routes take from it (edge/dispatch.py)
    location: str = ""  # the regex of its public paths as nginx runs it (edge/dispatch.py)

    @property
    def service(self) -> str:
        return self.route.service

    def internal_path(self, public_path: str) -> str:
        """The mesh path for a public path that matched :attr:`public`."""
        if self.rewrite is None:
            return public_path
        found = self.rewrite.to_internal(public_path)
        return public_path if found is None else found


def public_routes(table: RoutingTable, rewrites: tuple[Rewrite, ...] = ()) -> list[PublicRoute]:
    """The public HTTP routes of ``table`` with at least one serving instance, in match order."""
    losers = {(loser.service, loser.route_id) for c in table.conflicts() for loser in c.losers}
    out: list[PublicRoute] = []
    seen: set[tuple[str, str]] = set()
    for route, endpoints in table.routes():
        spec = route.spec
        if not spec.public or spec.kind != "http" or spec.host is not None or not endpoints.serving:
            continue
        if (route.service, route.route_id) in losers:
            continue
        rewrite = next((r for r in rewrites if r.applies(route)), None)
        text = route.template.text if rewrite is None else rewrite.to_public(route.template.text)
        public = parse_template(text)
        methods = (ANY_METHOD,) if route.any_method else tuple(sorted(route.methods))
        key = (public.text, ",".join(methods))
        if key in seen:
            continue
        seen.add(key)
        urls = tuple(sorted(i.url for i in endpoints.serving))
        out.append(PublicRoute(route, public, methods, rewrite, urls))
    out.sort(key=lambda p: (bool(p.public.params), p.route.rank, p.route.order, p.public.text))
    return out


_ENCODED = re.compile(r"%(2[eEfF]|5[cC]|00)")
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")


def refuse_target(target: str) -> str | None:
    """Why an edge refuses this request target with 400, or ``None`` if it is acceptable."""
    if not target.startswith("/"):
        return "only origin-form targets (/path) are accepted"
    path = target.split("?", 1)[0]
    if len(target) > 8192:
        return "the target is too long"
    if "\\" in path or "\x00" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        return "backslashes, control characters and spaces are not accepted in a path"
    if "#" in target:  # a fragment never belongs in a request; clients would drop what follows
        return "'#' is not accepted in a request target"
    if _ENCODED.search(path):
        return "encoded dots, slashes, backslashes and NUL are not accepted in a path"
    if "//" in path:
        return "empty path segments are not accepted"
    if _DOT_SEGMENT.search(path):
        return "dot segments are not accepted"
    return None
