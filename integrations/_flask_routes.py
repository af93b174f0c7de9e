"""Flask route introspection: ``app.url_map`` as canonical :class:`RouteSpec` s.

Design notes
------------
:func:`flask_routes` reads the werkzeug rules the app will match with, so blueprints, nested
blueprints and url prefixes are already applied (Flask builds the full rule when a blueprint is
registered). It is pure: it reads the map and never binds, matches or calls a view. The caller
publishes the list with ``routing="specificity"``: werkzeug tries the most specific rule first,
as meshware's matcher does.

Converters (werkzeug ``<conv(args):name>`` -> canonical ``{name:type}``):

========================================  ==================================================
werkzeug                                  published
========================================  ==================================================
``<name>``, ``<string:name>``             ``{name}``
``<string(length=2):name>``, min/max      ``{name:re:[^\\x2f]{2}}`` (the converter's regex)
``<int:name>``                            ``{name:int}``
``<float:name>``                          ``{name:re:[0-9]+\\.[0-9]+}`` (werkzeug needs the dot;
                                          the canonical ``float`` also matches ``3``)
``int(fixed_digits=4)``                   ``{name:re:[0-9]{4}}``
``int(signed=True)`` / ``float(signed=)`` ``{name:re:-?[0-9]+}`` / ``re:-?[0-9]+\\.[0-9]+``
``int(min=1, max=9)``                     ``{name:int}`` and a warning: bounds are not
                                          expressible, the template matches more
``<uuid:name>``                           ``{name:re:...}`` with werkzeug's regex (dashes
                                          required; the canonical ``uuid`` makes them optional)
``<path:name>``                           ``{name:path}`` (werkzeug's is never empty and
                                          never starts with ``/``: the canonical one may be)
``<any(a, b):name>``                      ``{name:re:(?:a|b)}`` (items escaped)
custom ``BaseConverter``                  ``{name:re:REGEX}`` with the converter's regex
custom, ``part_isolating = False``        ``{name:path}`` with the converter's regex in
                                          ``patterns`` (the app's matcher runs it when it can
                                          in linear time; else a warning: ``path`` matches more)
========================================  ==================================================

Regexes are carried with every ``/`` written ``\\x2f`` (the canonical form refuses a ``/`` in
``re:``). werkzeug matches a ``part_isolating`` converter one segment at a time, so a custom
regex such as ``.+`` is narrowed to the segment (``[^\\x2f]+``) rather than published as
``path``; a custom converter whose regex is werkzeug's default ``[^/]+`` is plain ``{name}``.
Numbers are written ``[0-9]`` where werkzeug's ``\\d`` also accepts non-ASCII digits.

Methods are ``rule.methods`` exactly as werkzeug has them: ``HEAD`` wherever ``GET`` is (werkzeug
adds it), ``OPTIONS`` wherever Flask adds it (unless ``provide_automatic_options=False``),
sorted; a raw ``Rule`` without methods is ``("*",)``. WebSocket rules are ``kind="websocket"``,
``("GET",)``.

Hosts: with ``host_matching`` a rule's ``host`` (``<tenant>.example.com``) becomes
``RouteSpec.host`` (``{tenant}.example.com``). With ``subdomain_matching`` and ``SERVER_NAME``
the host is ``subdomain.SERVER_NAME`` (``SERVER_NAME`` itself for the empty subdomain), as
werkzeug compares them, port included. Rules Flask can never match are left out with a warning:
no ``host`` under ``host_matching``; a subdomain other than the default while
``subdomain_matching`` is off (Flask then treats every request as the default subdomain) or
while ``SERVER_NAME`` is unset.

What is published:

* ``name`` is the endpoint (``"api.users.show"`` for nested blueprints).
* The static-file routes (the app's and blueprints' ``send_static_file``) only with
  ``include_static=True``.
* ``build_only`` rules never match and are left out.
* Rules with ``redirect_to`` and ``alias=True`` rules *are* published: the app answers those
  paths (with a 308 to the target), and leaving them out would turn the compatibility URLs the
  redirect exists for into mesh ``NoRouteError`` s. The redirect reaches the caller as it would
  without the mesh (httpx does not follow redirects unless asked). The slash redirects of
  ``strict_slashes`` (``/users`` -> ``/users/``) are not published: only the rule itself.
* Marks (:mod:`meshware._markers`) come from the view function, and for class-based views from
  ``view_func.view_class``; a ``MethodView`` may mark single handler methods, and those methods
  then get their own ``RouteSpec`` (see :func:`~._select.specs_for`). ``exclude`` drops the
  route (or the method).
* ``include`` / ``exclude`` patterns: see :class:`~._select.Selection`.

Shadows (:func:`flask_published`): every rule the app matches but meshware does not publish
(the static routes unless ``include_static``, rules and methods excluded by a mark or a pattern)
is published as a shadow, at its place in the rule order, so that no other route takes its
paths. Rules whose converters werkzeug weighs differently from the canonical converter they are
published as (``float`` as ``re:``, signed or fixed-width numbers, custom converters) carry
their ``weights``: werkzeug orders equally shaped rules by them.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask
from flask.sansio.scaffold import Scaffold
from flask.views import MethodView
from werkzeug.routing import (
    AnyConverter,
    BaseConverter,
    FloatConverter,
    IntegerConverter,
    PathConverter,
    Rule,
    UnicodeConverter,
    UUIDConverter,
)
from werkzeug.routing.rules import parse_converter_args

from meshware._core.records import Kind, Published, RouteSpec, Shadow, ShadowReason
from meshware._errors import TemplateError
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

__all__ = ["flask_published", "flask_routes"]

# werkzeug's variable syntax (``werkzeug.routing.rules._part_re``): <converter(args):name>.
_VARIABLE = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<arguments>.*?)\))?:)?"
    r"(?P<variable>[a-zA-Z_][a-zA-Z0-9_]*)>"
)


def flask_routes(
    app: Flask,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    include_static: bool = False,
) -> list[RouteSpec]:
    """Every route ``app`` serves, as canonical ``RouteSpec`` s.

    The order is ``app.url_map.iter_rules()`` (the order the rules were added, which breaks
    werkzeug's ties between equally weighted rules).

    ``include`` / ``exclude`` are fnmatch patterns tried against each route's template and
    endpoint name (``include=None``: everything; ``exclude`` wins). The static-file routes are
    left out unless ``include_static``. Routes that cannot be published exactly are published
    as a broader template with a :class:`UserWarning` naming them; a route that cannot be
    written as a template at all raises :class:`~meshware.TemplateError` (exclude it by name).
    The caller publishes the list with ``routing="specificity"``.
    """
    return list(
        flask_published(app, include=include, exclude=exclude, include_static=include_static).routes
    )


def flask_published(
    app: Flask,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    include_static: bool = False,
) -> Published:
    """:func:`flask_routes`, and the rules left out of them as shadows (see the module notes)."""
    selection = Selection(include, exclude)
    routes: list[RouteSpec] = []
    shadows: list[Shadow] = []
    for rule in app.url_map.iter_rules():
        published, hidden = _rule_specs(app, rule, selection, include_static=include_static)
        for spec, reason in hidden:
            shadows.append(Shadow(spec, len(routes), reason))
        routes.extend(published)
    return Published(tuple(routes), tuple(shadows))


def _rule_specs(
    app: Flask, rule: Rule, selection: Selection, *, include_static: bool
) -> tuple[list[RouteSpec], list[tuple[RouteSpec, ShadowReason]]]:
    if rule.build_only:
        return [], []
    name = rule.endpoint if isinstance(rule.endpoint, str) else None
    view = app.view_functions.get(name) if name is not None else None
    static = not include_static and _is_static(app, rule, view)
    where = f"Flask route {rule.rule!r} (endpoint {name!r})"
    base_marks = _view_marks(view)
    try:
        host = _host(app, rule, where)
        text = re.sub("/{2,}", "/", rule.rule) if rule.merge_slashes else rule.rule
        pieces, weights = _pieces_and_weights(rule, text, where)
        template = render_template(pieces, where=where)
    except TemplateError:
        if selection.excludes_name(name) or static or base_marks.get("exclude"):
            return [], []  # not expressible as a template: it cannot be a shadow either
        raise
    except _Unreachable as exc:
        if not static and not base_marks.get("exclude"):
            warnings.warn(f"{where} is not published: {exc}", stacklevel=2)
        return [], []
    kind: Kind = "websocket" if rule.websocket else "http"
    methods: Sequence[str] = ("GET",)
    if not rule.websocket:
        methods = sorted(rule.methods) if rule.methods else ("*",)
    if static or base_marks.get("exclude"):
        spec = RouteSpec(
            template,
            tuple(methods),
            name=name,
            kind=kind,
            host=host,
            weights=weights,
            patterns=_patterns(rule, text),
            strict_slashes=bool(rule.strict_slashes),
        )
        return [], [(spec, "static" if static else "excluded")]
    marks = _method_marks(view, base_marks)
    specs = specs_for(template, methods, name=name, kind=kind, host=host, marks=marks)
    patterns = _patterns(rule, text)
    if weights is not None or patterns is not None or not rule.strict_slashes:
        specs = [
            dataclasses.replace(
                s, weights=weights, patterns=patterns, strict_slashes=bool(rule.strict_slashes)
            )
            for s in specs
        ]
    published = [s for s in specs if selection.selects(s.template, s.name)]
    hidden: list[tuple[RouteSpec, ShadowReason]] = [
        (
            dataclasses.replace(s, public=False, idempotent=None, timeout=None, retries=None),
            "excluded",
        )
        for s in specs
        if s not in published
    ]
    left_out = sorted(m for m in methods if marks(m).get("exclude"))
    if left_out:
        spec = RouteSpec(
            template, tuple(left_out), name=name, kind=kind, host=host, weights=weights
        )
        hidden.append((spec, "excluded"))
    return published, hidden


# --------------------------------------------------------------------------- views and marks


def _is_static(app: Flask, rule: Rule, view: object) -> bool:
    """The app's static route (its view is a lambda) or a blueprint's (``send_static_file``)."""
    if (
        rule.endpoint == "static"
        and app.has_static_folder
        and rule.rule == f"{app.static_url_path}/<path:filename>"
    ):
        return True
    return getattr(view, "__name__", None) == "send_static_file" and isinstance(
        getattr(view, "__self__", None), Scaffold
    )


def _view_marks(view: object) -> dict[str, Any]:
    if view is None:
        return {}
    marks: dict[str, Any] = {}
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        marks.update(marks_of(view_class))
    marks.update(marks_of(view))
    return marks


def _method_marks(view: object, base: Mapping[str, Any]) -> Callable[[str], Mapping[str, Any]]:
    view_class = getattr(view, "view_class", None)
    if not (isinstance(view_class, type) and issubclass(view_class, MethodView)):
        return lambda method: base

    def marks(method: str) -> Mapping[str, Any]:
        attr = method.lower()
        if method == "HEAD" and not hasattr(view_class, "head"):
            attr = "get"  # MethodView answers HEAD with ``get``
        handler = getattr(view_class, attr, None) if method != "*" else None
        if handler is None:  # e.g. Flask's automatic OPTIONS
            return base
        return {**base, **marks_of(handler)}

    return marks


# --------------------------------------------------------------------------- hosts


class _Unreachable(Exception):
    """The rule can never match a request (Flask's host / subdomain settings)."""


def _host(app: Flask, rule: Rule, where: str) -> str | None:
    url_map = app.url_map
    if url_map.host_matching:
        if not rule.host:
            raise _Unreachable("the app uses host_matching and the rule has no host")
        return render_template(_pieces(rule, rule.host, where), where=where, host=True)
    subdomain = rule.subdomain or ""
    if app.subdomain_matching:
        server_name = app.config.get("SERVER_NAME")
        if server_name:
            server = str(server_name).lower()
            if not subdomain:
                return render_template([server], where=where, host=True)
            pieces = [*_pieces(rule, subdomain, where), "." + server]
            return render_template(pieces, where=where, host=True)
        if subdomain:
            raise _Unreachable(
                f"subdomain {subdomain!r} never matches: SERVER_NAME is not set, so Flask "
                "sees every request as the empty subdomain"
            )
        return None
    forced = url_map.default_subdomain or ""
    if subdomain != forced and not _subdomain_matches(rule, subdomain, forced):
        raise _Unreachable(
            f"subdomain {subdomain!r} never matches: subdomain_matching is off, so Flask sees "
            f"every request as subdomain {forced!r}"
        )
    return None


def _subdomain_matches(rule: Rule, subdomain: str, value: str) -> bool:
    """Whether a subdomain rule with variables matches the fixed subdomain ``value``."""
    regex: list[str] = []
    pos = 0
    for m in _VARIABLE.finditer(subdomain):
        regex.append(re.escape(subdomain[pos : m.start()]))
        regex.append(f"(?:{_converter(rule, m).regex})")
        pos = m.end()
    regex.append(re.escape(subdomain[pos:]))
    return re.fullmatch("".join(regex), value) is not None


# --------------------------------------------------------------------------- converters


def _pieces(rule: Rule, text: str, where: str) -> list[Piece]:
    return _pieces_and_weights(rule, text, where)[0]


def _patterns(rule: Rule, text: str) -> tuple[str | None, ...] | None:
    """The regexes of custom converters published as ``path`` (``part_isolating = False``)."""
    out: list[str | None] = []
    for m in _VARIABLE.finditer(text):
        converter = _converter(rule, m)
        custom = not converter.part_isolating and type(converter) is not PathConverter
        out.append(str(converter.regex) if custom else None)
    return tuple(out) if any(p is not None for p in out) else None


_CANONICAL_WEIGHTS = {"int": 50, "float": 50, "path": 200}


def _pieces_and_weights(
    rule: Rule, text: str, where: str
) -> tuple[list[Piece], tuple[int, ...] | None]:
    """The template pieces, and werkzeug's converter weights when one differs from the
    canonical converter's (``None`` otherwise)."""
    pieces: list[Piece] = []
    weights: list[int] = []
    differs = False
    pos = 0
    for m in _VARIABLE.finditer(text):
        pieces.append(text[pos : m.start()])
        variable = m.group("variable")
        converter = _converter(rule, m)
        kind = _kind(converter, where, variable)
        pieces.append(Param(variable, kind))
        weight = int(getattr(converter, "weight", 100))
        weights.append(weight)
        differs = differs or weight != _CANONICAL_WEIGHTS.get(kind, 100)
        pos = m.end()
    pieces.append(text[pos:])
    return pieces, tuple(weights) if differs else None


def _converter(rule: Rule, m: re.Match[str]) -> BaseConverter:
    variable = m.group("variable")
    converter = rule._converters.get(variable)  # the instance the rule matches with
    if converter is None:
        args, kwargs = parse_converter_args(m.group("arguments") or "")
        converter = rule.get_converter(variable, m.group("converter") or "default", args, kwargs)
    return converter


_WERKZEUG_UUID = "[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}"


def _kind(converter: BaseConverter, where: str, variable: str) -> str:
    cls = type(converter)
    if cls is PathConverter:
        return "path"
    if cls is UUIDConverter:
        return "re:" + _WERKZEUG_UUID
    if cls is IntegerConverter or cls is FloatConverter:
        return _number_kind(converter, where, variable)
    if cls is UnicodeConverter or cls is AnyConverter:
        regex = segment_regex(converter.regex)
        return "str" if is_str_regex(regex) else "re:" + regex
    # A custom converter, carried by its regex.
    if not converter.part_isolating:
        warnings.warn(
            f"{where}: converter {cls.__name__} of {variable!r} can match '/'; published as a "
            "path parameter, which matches more than the converter",
            stacklevel=2,
        )
        return "path"
    regex = segment_regex(converter.regex)
    if regex_can_match_slash(regex):
        # werkzeug matches it within one segment: narrow it to the segment.
        regex = segment_regex(converter.regex, confine=True)
        if regex_can_match_slash(regex):
            warnings.warn(
                f"{where}: the regex {converter.regex!r} of converter {cls.__name__} of "
                f"{variable!r} cannot be confined to one segment; published as a plain "
                "parameter, which matches more than the converter",
                stacklevel=2,
            )
            return "str"
    return "str" if is_str_regex(regex) else "re:" + regex


def _number_kind(converter: Any, where: str, variable: str) -> str:
    is_int = type(converter) is IntegerConverter
    signed = bool(converter.signed)
    fixed = int(converter.fixed_digits or 0) if is_int else 0
    low, high = converter.min, converter.max
    if fixed:
        options = [f"[0-9]{{{fixed}}}"]
        if signed and fixed > 1:
            options.append(f"-[0-9]{{{fixed - 1}}}")  # werkzeug counts the sign as a digit
        kind = "re:" + (options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")")
    elif signed:
        kind = "re:-?[0-9]+" if is_int else r"re:-?[0-9]+\.[0-9]+"
    else:
        kind = "int" if is_int else r"re:[0-9]+\.[0-9]+"
    if high is not None or (low is not None and (signed or low > 0)):
        warnings.warn(
            f"{where}: the bounds (min={low!r}, max={high!r}) of {variable!r} cannot be written "
            f"in a template; published as {kind!r}, which matches more than the converter",
            stacklevel=2,
        )
    return kind
