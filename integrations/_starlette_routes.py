"""Starlette and FastAPI route introspection: the app's route tree as canonical ``RouteSpec`` s.

Design notes
------------
Starlette matches routes in declaration order, first match wins, so :func:`starlette_routes`
returns them in that order (depth first through mounts) and the caller publishes the list with
``routing="ordered"``. It is pure: it reads route objects and never calls the app.

* ``Route``: methods as Starlette computes them (``GET`` implies ``HEAD``; FastAPI's
  ``APIRoute`` does not add ``HEAD``). With ``methods=None`` the endpoint is an ASGI app: an
  ``HTTPEndpoint`` class publishes the methods it implements (Starlette's own list: ``GET``,
  ``HEAD`` (via ``get``), ``POST``, ``PUT``, ``PATCH``, ``DELETE``, ``OPTIONS``, ``QUERY``),
  anything else -- or an ``HTTPEndpoint`` overriding ``dispatch`` -- is ``("*",)``.
* ``WebSocketRoute``: ``kind="websocket"``, methods ``("GET",)``.
* ``Mount``: prefixes concatenate (``Mount("/api", routes=[Route("/", ...)])`` is ``/api/``).
  A mounted ``Router``, ``Starlette`` or ``FastAPI`` app (or any object whose ``.router`` is a
  ``Router``) is introspected recursively, through any middleware wrapped around it (each
  ``.app`` is followed). Anything else -- a plain ASGI callable, a WSGI app under a WSGI
  middleware -- is opaque: one route ``{prefix}/{path:path}``, methods ``("*",)``,
  ``kind="mount"``. ``StaticFiles`` mounts are
  left out unless ``include_static`` (then ``("GET", "HEAD")``, ``kind="mount"``), and so are
  FastAPI's ``APIRouter.frontend(...)`` directories, which FastAPI tries after every other
  route, so they come last in their router.
* ``Host``: ``RouteSpec.host`` is the canonical host pattern (``{tenant}.example.com``), without
  the port, as Starlette compares it.
* A router with a custom ``default`` app answers every path its routes do not: it is published
  as an opaque catch-all after them.
* Names: ``route.name``, prefixed ``mount:`` / ``host:`` for named mounts and hosts, exactly the
  name ``url_path_for`` takes (``"api:users"``). An opaque mount is named like the mount.
* FastAPI: ``include_router`` keeps the included ``APIRouter`` s as containers; their routes are
  read, prefixes applied, through ``fastapi.routing.iter_route_contexts``. The docs routes
  (``openapi_url``, ``docs_url``, ``redoc_url``, ``swagger_ui_oauth2_redirect_url``) are left
  out unless ``include_docs``.
* Converters: ``str`` / ``int`` / ``float`` / ``uuid`` / ``path`` map to themselves; a
  convertor registered with ``register_url_convertor`` is carried as ``{name:re:REGEX}`` (every
  ``/`` written ``\\x2f``), or, when its regex can match ``/``, published as ``path`` with a
  warning. Starlette's ``uuid`` accepts UUIDs without dashes; the canonical ``uuid`` does not.
* Marks (:mod:`meshware._markers`) from ``marks_of(endpoint)``; an ``HTTPEndpoint`` may mark single
  handler methods. Marks on a mounted app (or a middleware around it) apply to every route
  under the mount; ``exclude`` there drops the whole mount.
* ``include`` / ``exclude`` patterns: see :class:`~._select.Selection`.
* Shadows (:func:`starlette_published`): what the app answers but meshware does not publish is
  published as a shadow at its place in the order: ``StaticFiles`` mounts and frontend
  directories (``static``), the docs routes (``docs``), routes and mounts excluded by a mark or a
  pattern (``excluded``), and, after the routes of every introspected ``Mount`` or ``Host``, the
  rest of it (``mount``: ``{prefix}/{path:path}``, any method): Starlette hands every path under
  a mount to its sub-app, which answers 404 (or 405, or its own slash redirect) for paths none
  of its routes match, so no later route may take them.

``root_path`` (``FastAPI(root_path="/api")``), measured with FastAPI 0.165 / Starlette 1.10 and
``TestClient`` calling the app directly, as a mesh peer does: FastAPI writes its ``root_path``
into every request's scope and Starlette strips it from the path before routing when the path
starts with it. A route ``/users/{id}`` therefore answers both ``/api/users/1`` and
``/users/1``, but a route whose own path starts with the root path (``/api/x``) answers only
``/api/api/x``, and the routes of a mounted sub-app answer only under the root path
(``/api/sub/s``, never ``/sub/s``). The prefixed form is the one that always reaches the route,
and it is the URL the app itself generates (``url_for``, the OpenAPI ``servers``), so routes
are published as ``root_path + path``. A mounted FastAPI sub-app with its own ``root_path``
replaces the mount's root path in the scope: its routes are reachable only when that
``root_path`` is the path it is mounted at (then they publish as ``root_path + path``);
otherwise none of them is reachable and they are left out with a warning. A root path set by
the server (``uvicorn --root-path``) is not visible to the app object and is not applied.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import (
    Convertor,
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    StringConvertor,
    UUIDConvertor,
)
from starlette.endpoints import HTTPEndpoint
from starlette.routing import PARAM_REGEX, BaseRoute, Host, Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles

from meshware._core.records import ANY_METHOD, Kind, Published, RouteSpec, Shadow, ShadowReason
from meshware._errors import ConfigError, TemplateError
from meshware._markers import marks_of

from ._select import (
    Param,
    Piece,
    Selection,
    is_str_regex,
    regex_can_match_slash,
    render_template,
    segment_regex,
    specs_for,
)

__all__ = ["starlette_published", "starlette_routes"]

_BUILTIN_CONVERTORS: dict[type[Any], str] = {
    StringConvertor: "str",
    PathConvertor: "path",
    IntegerConvertor: "int",
    FloatConvertor: "float",
    UUIDConvertor: "uuid",
}
# The methods ``HTTPEndpoint`` dispatches (``HTTPEndpoint.__init__``'s ``_allowed_methods``).
_ENDPOINT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY")
_STATIC_METHODS = ("GET", "HEAD")
_MAX_WRAPPERS = 32


def starlette_routes(
    app: object,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    include_static: bool = False,
    include_docs: bool = False,
) -> list[RouteSpec]:
    """Every route a Starlette / FastAPI app (or a ``Router``) serves, in matching order.

    ``app`` may be wrapped in ASGI middleware. ``include`` / ``exclude`` are fnmatch patterns
    tried against each route's template and name (``include=None``: everything; ``exclude``
    wins). ``StaticFiles`` mounts and FastAPI's docs routes are left out unless
    ``include_static`` / ``include_docs``. Routes that cannot be published exactly are published
    as a broader template with a :class:`UserWarning` naming them; a route that cannot be written
    as a template at all raises :class:`~meshware.TemplateError` (exclude it by name). The caller
    publishes the list with ``routing="ordered"``. Raises :class:`~meshware.ConfigError` if no
    router can be found in ``app``.
    """
    return list(
        starlette_published(
            app,
            include=include,
            exclude=exclude,
            include_static=include_static,
            include_docs=include_docs,
        ).routes
    )


def starlette_published(
    app: object,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    include_static: bool = False,
    include_docs: bool = False,
) -> Published:
    """:func:`starlette_routes`, and what the app answers outside them as shadows."""
    target = _unwrap(app)
    if target.router is None:
        raise ConfigError(
            f"cannot find the routes of {app!r}: expected a Starlette or FastAPI app or a "
            "Router, possibly wrapped in middleware",
            setting="app",
        )
    root = _root_path(target.app)
    level = _Level(
        prefix=(root,) if root else (),
        raw=root,
        marks=target.marks,
        root=root,
    )
    walker = _Walker(
        Selection(include, exclude), include_static=include_static, include_docs=include_docs
    )
    if not target.marks.get("exclude"):
        walker.router(target, level)
    else:
        walker.hide((*level.prefix, "/", Param("path", "path")), (ANY_METHOD,), level, "excluded")
    return Published(tuple(walker.out), tuple(walker.shadows))


# --------------------------------------------------------------------------- unwrapping


@dataclass(frozen=True, slots=True)
class _Target:
    """What a mounted app turned out to be, once middleware is peeled off."""

    router: Router | None = None  # set when the routes can be read
    app: object = None  # the Starlette / FastAPI app owning ``router``, if any
    static: bool = False
    marks: Mapping[str, Any] = field(default_factory=dict)


def _unwrap(obj: object) -> _Target:
    chain: list[object] = []
    current: object = obj
    router: Router | None = None
    owner: object = None
    static = False
    while current is not None and len(chain) < _MAX_WRAPPERS:
        chain.append(current)
        if isinstance(current, Starlette):
            router, owner = current.router, current
            break
        if isinstance(current, Router):
            router = owner = current
            break
        if isinstance(current, StaticFiles):
            static = True
            break
        own_router = getattr(current, "router", None)  # an app object built around a Router
        if isinstance(own_router, Router):
            router, owner = own_router, current
            break
        inner = getattr(current, "app", None)  # the ASGI middleware convention
        if inner is None or inner is current or not callable(inner):
            break
        current = inner
    marks: dict[str, Any] = {}
    for wrapper in reversed(chain):  # the outermost mark wins
        marks.update(marks_of(wrapper))
    return _Target(router=router, app=owner, static=static, marks=marks)


def _fastapi_routing() -> Any:
    # An app can only hold FastAPI objects if FastAPI is imported: never import it here.
    return sys.modules.get("fastapi.routing")


def _is_fastapi(app: object) -> bool:
    applications: Any = sys.modules.get("fastapi.applications")
    return applications is not None and isinstance(app, applications.FastAPI)


def _root_path(app: object) -> str:
    if not _is_fastapi(app):
        return ""
    root = getattr(app, "root_path", "")
    return root if isinstance(root, str) else ""


def _docs_paths(app: object) -> frozenset[str]:
    if not _is_fastapi(app):
        return frozenset()
    names = ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")
    return frozenset(p for p in (getattr(app, n, None) for n in names) if isinstance(p, str))


def _strip_root(path: str, root: str) -> str:
    """The path Starlette routes on (``starlette._utils.get_route_path``)."""
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


# --------------------------------------------------------------------------- walking


@dataclass(frozen=True, slots=True)
class _Level:
    """Where the walker is: what every route found here is prefixed with."""

    prefix: tuple[Piece, ...] = ()  # published path prefix
    raw: str = ""  # the same, as written, for messages
    host: tuple[Piece, ...] | None = None
    namespace: str = ""  # "mount:" prefixes of route names
    marks: Mapping[str, Any] = field(default_factory=dict)  # inherited from mounted apps
    root: str = ""  # root path in the scope of the current app (published form)
    rel: str = ""  # mount paths since that app, as written


class _Walker:
    def __init__(self, selection: Selection, *, include_static: bool, include_docs: bool) -> None:
        self.selection = selection
        self.include_static = include_static
        self.include_docs = include_docs
        self.out: list[RouteSpec] = []
        self.shadows: list[Shadow] = []

    def hide(
        self,
        pieces: Iterable[Piece],
        methods: Sequence[str],
        level: _Level,
        reason: ShadowReason,
        *,
        name: str | None = None,
        kind: Kind = "http",
        start: int | None = None,
    ) -> None:
        """Publish what the app answers but meshware does not route to as a shadow."""
        try:
            template = render_template(pieces, where="a shadow")
            host = None
            if level.host is not None:
                host = render_template(level.host, where="a shadow", host=True)
        except TemplateError:
            return  # not expressible as a template: it cannot be a shadow either
        spec = RouteSpec(template, tuple(sorted(set(methods))), name=name, kind=kind, host=host)
        self.shadows.append(Shadow(spec, len(self.out), reason, start))

    # -- routers

    def router(self, target: _Target, level: _Level) -> None:
        router = target.router
        assert router is not None
        docs = frozenset() if self.include_docs else _docs_paths(target.app)
        for route in router.routes:
            self.route(route, level, docs)
        self.frontend(router, level)
        default = router.default
        if not (
            getattr(default, "__name__", None) == "not_found"
            and getattr(default, "__self__", None) is router
        ):
            where = f"default app of the router at {level.raw or '/'!r}"
            self.opaque(_unwrap(default), level, level.prefix, name=None, where=where)

    def route(self, route: BaseRoute, level: _Level, docs: frozenset[str]) -> None:
        if isinstance(route, Route):
            if type(route) is Route and route.path in docs:
                self.http(route, level, reason="docs")
                return
            self.http(route, level)
        elif isinstance(route, WebSocketRoute):
            self.websocket(route, level)
        elif isinstance(route, Mount):
            self.mount(route, level)
        elif isinstance(route, Host):
            self.host(route, level)
        else:
            self.container(route, level)

    def container(self, route: BaseRoute, level: _Level) -> None:
        """A route type Starlette does not define: FastAPI's included routers, or unknown."""
        iter_contexts = getattr(_fastapi_routing(), "iter_route_contexts", None)
        if iter_contexts is None or not hasattr(route, "original_router"):
            warnings.warn(
                f"a route of type {type(route).__name__} under {level.raw or '/'!r} cannot be "
                "read by meshware; it is not published",
                stacklevel=2,
            )
            return
        contexts: list[Any] = list(iter_contexts([route]))  # empty for a router of frontend files
        # Each context reads like a Route / Mount / ... with the include prefixes applied.
        for context in contexts:
            original = context.original_route
            if isinstance(original, Route):
                self.http(context, level)
            elif isinstance(original, WebSocketRoute):
                self.websocket(context, level)
            elif isinstance(original, Mount):
                self.mount(context, level)
            elif isinstance(original, Host):
                self.host(context, level)
            else:
                self.container(original, level)

    # -- leaves

    def http(self, route: Any, level: _Level, reason: ShadowReason | None = None) -> None:
        endpoint = route.endpoint
        name = self.name(level, route.name)
        where = f"Starlette route {level.raw + route.path!r} (name {name!r})"
        base = {**level.marks, **marks_of(endpoint)}
        # No methods (None, or the empty set FastAPI copies it to) means "no method check".
        methods: Sequence[str] = sorted(route.methods) if route.methods else ()
        if not methods:
            methods = _endpoint_methods(endpoint)
        if not methods:
            return  # an HTTPEndpoint with no handler answers nothing but 405
        if reason is not None or base.get("exclude"):
            try:
                pieces = (*level.prefix, *_pieces(route.path, route.param_convertors, where))
            except TemplateError:
                return
            self.hide(pieces, methods, level, reason or "excluded", name=name)
            return
        template = self.template(level, route.path, route.param_convertors, name, where)
        if template is None:
            return
        self.emit(template, methods, name, "http", level, where, _method_marks(endpoint, base))

    def websocket(self, route: Any, level: _Level) -> None:
        name = self.name(level, route.name)
        where = f"Starlette websocket route {level.raw + route.path!r} (name {name!r})"
        base = {**level.marks, **marks_of(route.endpoint)}
        if base.get("exclude"):
            return
        template = self.template(level, route.path, route.param_convertors, name, where)
        if template is not None:
            self.emit(template, ("GET",), name, "websocket", level, where, lambda m: base)

    # -- mounts and hosts

    def mount(self, route: Any, level: _Level) -> None:
        path: str = route.path
        name = self.name(level, route.name) if route.name else None
        where = f"Starlette mount {level.raw + path!r} (name {name!r})"
        try:
            pieces = (*level.prefix, *_pieces(path, route.param_convertors, where))
        except TemplateError:
            if self.selection.excludes_name(name):
                return
            raise
        self.enter(
            route.app,
            level,
            pieces=pieces,
            raw=level.raw + path,
            rel=level.rel + path,
            host=level.host,
            name=route.name,
            where=where,
        )

    def host(self, route: Any, level: _Level) -> None:
        name = self.name(level, route.name) if route.name else None
        where = f"Starlette host {route.host!r} (name {name!r})"
        pieces = _pieces(route.host, route.param_convertors, where)
        if pieces and isinstance(pieces[-1], str) and not pieces[-1].endswith("]"):
            # Starlette ignores the port (starlette.routing.compile_path).
            pieces[-1] = pieces[-1].rsplit(":", 1)[0]
        if level.host is not None:
            warnings.warn(
                f"{where} is nested in another Host; only the inner host is published",
                stacklevel=2,
            )
        self.enter(
            route.app,
            level,
            pieces=level.prefix,
            raw=level.raw,
            rel=level.rel,
            host=tuple(pieces),
            name=route.name,
            where=where,
        )

    def enter(
        self,
        app: object,
        level: _Level,
        *,
        pieces: tuple[Piece, ...],
        raw: str,
        rel: str,
        host: tuple[Piece, ...] | None,
        name: str | None,
        where: str,
    ) -> None:
        target = _unwrap(app)
        marks = {**level.marks, **target.marks}
        rest = (*pieces, "/", Param("path", "path"))
        if marks.get("exclude"):
            self.hide(rest, (ANY_METHOD,), _Level(host=host), "excluded")
            return
        namespace = level.namespace + (name + ":" if name else "")
        inner = _Level(
            prefix=pieces,
            raw=raw,
            host=host,
            namespace=namespace,
            marks=marks,
            root=level.root,
            rel=rel,
        )
        if target.router is None:
            opaque_name = level.namespace + name if name else None
            self.opaque(target, inner, pieces, name=opaque_name, where=where)
            return
        sub_root = _root_path(target.app)
        if sub_root:
            if _strip_root(sub_root, level.root) != rel:
                warnings.warn(
                    f"{where}: the mounted app's root_path {sub_root!r} replaces the mount's "
                    "root path, so none of its routes can be reached; they are not published",
                    stacklevel=2,
                )
                self.hide(rest, (ANY_METHOD,), inner, "mount")
                return
            inner = _Level(
                prefix=(sub_root,),
                raw=sub_root,
                host=host,
                namespace=namespace,
                marks=marks,
                root=sub_root,
            )
        start = len(self.out) + len(self.shadows)  # where the mount's own routes begin
        self.router(target, inner)
        # Starlette hands every path under the mount to its sub-app: what none of its routes
        # match is answered there (404/405), never by a later route
        self.hide(rest, (ANY_METHOD,), inner, "mount", start=start)

    def opaque(
        self,
        target: _Target,
        level: _Level,
        pieces: tuple[Piece, ...],
        *,
        name: str | None,
        where: str,
    ) -> None:
        """An app meshware cannot look into: every path under ``pieces``."""
        rest = (*pieces, "/", Param("path", "path"))
        if target.static and not self.include_static:
            self.hide(rest, (ANY_METHOD,), level, "static", name=name, kind="mount")
            return
        marks = {**level.marks, **target.marks}
        if marks.get("exclude"):
            self.hide(rest, (ANY_METHOD,), level, "excluded", name=name, kind="mount")
            return
        methods = _STATIC_METHODS if target.static else (ANY_METHOD,)
        template = self.render(rest, name, where)
        if template is not None:
            self.emit(template, methods, name, "mount", level, where, lambda m: marks)

    def frontend(self, router: Router, level: _Level) -> None:
        """FastAPI's ``APIRouter.frontend(...)`` directories: static files, tried last."""
        iter_low = getattr(router, "_iter_low_priority_routes", None)
        if iter_low is None:
            return
        for item in iter_low():
            group = getattr(item, "original_route", item)
            prefix = getattr(item, "frontend_prefix", "") or ""
            for route in getattr(group, "routes", ()):
                path = getattr(route, "path", None)
                if not isinstance(path, str):
                    continue
                full = (prefix + path if path != "/" else prefix) if prefix else path
                where = f"FastAPI frontend {level.raw + full!r}"
                pieces = (*level.prefix, full.rstrip("/"), "/", Param("path", "path"))
                if not self.include_static:
                    self.hide(pieces, (ANY_METHOD,), level, "static", kind="mount")
                    continue
                template = self.render(pieces, None, where)
                if template is not None:
                    self.emit(template, _STATIC_METHODS, None, "mount", level, where, lambda m: {})

    # -- helpers

    @staticmethod
    def name(level: _Level, name: str | None) -> str | None:
        return level.namespace + name if name else None

    def template(
        self,
        level: _Level,
        path: str,
        convertors: Mapping[str, Convertor[Any]],
        name: str | None,
        where: str,
    ) -> str | None:
        try:
            pieces = _pieces(path, convertors, where)
        except TemplateError:
            if self.selection.excludes_name(name):
                return None
            raise
        return self.render((*level.prefix, *pieces), name, where)

    def render(self, pieces: Iterable[Piece], name: str | None, where: str) -> str | None:
        try:
            return render_template(pieces, where=where)
        except TemplateError:
            if self.selection.excludes_name(name):
                return None
            raise

    def emit(
        self,
        template: str,
        methods: Sequence[str],
        name: str | None,
        kind: Kind,
        level: _Level,
        where: str,
        marks: Callable[[str], Mapping[str, Any]],
    ) -> None:
        host = None
        if level.host is not None:
            host = render_template(level.host, where=where, host=True)
        left_out = sorted(m for m in methods if marks(m).get("exclude"))
        if left_out:
            spec = RouteSpec(template, tuple(left_out), name=name, kind=kind, host=host)
            self.shadows.append(Shadow(spec, len(self.out), "excluded"))
        for spec in specs_for(template, methods, name=name, kind=kind, host=host, marks=marks):
            if self.selection.selects(spec.template, spec.name):
                self.out.append(spec)
            else:
                hidden = RouteSpec(spec.template, spec.methods, name=name, kind=kind, host=host)
                self.shadows.append(Shadow(hidden, len(self.out), "excluded"))


# --------------------------------------------------------------------------- endpoints


def _endpoint_class(endpoint: object) -> type[HTTPEndpoint] | None:
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    if isinstance(endpoint, type) and issubclass(endpoint, HTTPEndpoint):
        return endpoint
    return None


def _endpoint_methods(endpoint: object) -> Sequence[str]:
    cls = _endpoint_class(endpoint)
    if cls is None or cls.dispatch is not HTTPEndpoint.dispatch:
        return (ANY_METHOD,)
    return sorted(
        m
        for m in _ENDPOINT_METHODS
        if getattr(cls, m.lower(), None) is not None
        or (m == "HEAD" and getattr(cls, "get", None) is not None)
    )


def _method_marks(endpoint: object, base: Mapping[str, Any]) -> Callable[[str], Mapping[str, Any]]:
    cls = _endpoint_class(endpoint)
    if cls is None:
        return lambda method: base

    def marks(method: str) -> Mapping[str, Any]:
        attr = method.lower()
        if method == "HEAD" and not hasattr(cls, "head"):
            attr = "get"  # HTTPEndpoint answers HEAD with ``get``
        handler = getattr(cls, attr, None) if method != ANY_METHOD else None
        return base if handler is None else {**base, **marks_of(handler)}

    return marks


# --------------------------------------------------------------------------- converters


def _pieces(text: str, convertors: Mapping[str, Convertor[Any]], where: str) -> list[Piece]:
    pieces: list[Piece] = []
    pos = 0
    for m in PARAM_REGEX.finditer(text):
        pieces.append(text[pos : m.start()])
        name = m.group(1)
        pieces.append(Param(name, _kind(convertors[name], where, name)))
        pos = m.end()
    pieces.append(text[pos:])
    return pieces


def _kind(convertor: Convertor[Any], where: str, name: str) -> str:
    builtin = _BUILTIN_CONVERTORS.get(type(convertor))
    if builtin is not None:
        return builtin
    regex = segment_regex(convertor.regex)
    if regex_can_match_slash(regex):
        warnings.warn(
            f"{where}: convertor {type(convertor).__name__} of {name!r} can match '/'; "
            "published as a path parameter, which matches more than the convertor",
            stacklevel=2,
        )
        return "path"
    return "str" if is_str_regex(regex) else "re:" + regex
