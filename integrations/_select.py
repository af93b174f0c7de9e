"""What the route introspectors share: selecting routes, marks, template pieces, regexes.

Design notes
------------
:func:`~meshware.integrations._flask_routes.flask_routes` and
:func:`~meshware.integrations._starlette_routes.starlette_routes` read very different route
tables but publish the same thing, so the parts that do not depend on the framework live here:

* **Selection** (:class:`Selection`): ``include`` / ``exclude`` are :func:`fnmatch.fnmatchcase`
  patterns (``*``, ``?``, ``[...]``; case-sensitive; ``*`` also matches ``/``), each tried
  against the route's canonical template *and* against its name. ``include=None`` selects
  everything, an empty ``include`` selects nothing; ``exclude`` wins over ``include``.
* **Marks** (:func:`specs_for`): the per-view marks of :mod:`meshware._markers` become
  :class:`~meshware._core.records.RouteSpec` fields. Class-based views may mark single handler
  methods (``@meshware.policy(idempotent=True)`` on ``def put``); the methods of one route are
  then grouped by their effective marks, one ``RouteSpec`` per group, and a method marked
  ``exclude`` is left out.
* **Template pieces** (:class:`Param`, :func:`render_template`): introspectors build a template
  as static text and typed parameters and render it once, so that the canonical-form rules live
  in one place: literal ``{`` / ``}`` are refused with :class:`~meshware.TemplateError`, and a
  parameter name repeated across mount
  levels (the framework lets the inner one win) is renamed ``name_2`` so the template stays
  valid.
* **Regexes** (:func:`segment_regex`, :func:`regex_can_match_slash`): a converter's regex is
  carried as ``{name:re:REGEX}``. The canonical form refuses a ``/`` anywhere in REGEX (even in
  ``[^/]``), so every slash is written ``\\x2f``; braces inside character classes, and braces
  that are not quantifiers, are escaped so that the braces of REGEX balance. Whether a regex
  can consume a ``/`` is decided on the parse tree of :mod:`re` (not by looking for a ``/`` in
  the text): ``.``, ``\\S``, ``[^-]`` can.

This module is pure: no I/O, no framework imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from meshware._core.limits import RouteLimits, limits_from_json
from meshware._core.records import ANY_METHOD, Kind, Published, RouteSpec
from meshware._errors import ConfigError, TemplateError

__all__ = [
    "Param",
    "RouteOptions",
    "Selection",
    "is_str_regex",
    "regex_can_match_slash",
    "render_template",
    "segment_regex",
    "specs_for",
]

# ``re._parser`` (Python >= 3.11) has no type stubs; its parse tree is stable across 3.11+.
_sre_parser: Any = importlib.import_module("re._parser")

# --------------------------------------------------------------------------- selection


class Selection:
    """``include`` / ``exclude`` fnmatch patterns, matched against a template and a name."""

    __slots__ = ("exclude", "include")

    def __init__(self, include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> None:
        self.include = None if include is None else _patterns(include, "include")
        self.exclude = _patterns(exclude, "exclude")

    def selects(self, template: str, name: str | None) -> bool:
        """Whether a route with this template and name is published."""
        if self._matches(self.exclude, template, name):
            return False
        return self.include is None or self._matches(self.include, template, name)

    def excludes_name(self, name: str | None) -> bool:
        """Whether ``exclude`` drops every route of this name, whatever its template."""
        return name is not None and any(fnmatchcase(name, p) for p in self.exclude)

    @staticmethod
    def _matches(patterns: tuple[str, ...], template: str, name: str | None) -> bool:
        return any(
            fnmatchcase(template, p) or (name is not None and fnmatchcase(name, p))
            for p in patterns
        )


def _patterns(value: Sequence[str], setting: str) -> tuple[str, ...]:
    patterns = () if isinstance(value, str | bytes) else tuple(value)
    if isinstance(value, str | bytes) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(
            f"{setting} must be a sequence of fnmatch patterns such as ['/internal/*'], "
            f"got {value!r}",
            setting=setting,
        )
    return patterns


# --------------------------------------------------------------------------- marks

Marks = Mapping[str, Any]


def specs_for(
    template: str,
    methods: Iterable[str],
    *,
    name: str | None,
    kind: Kind = "http",
    host: str | None = None,
    marks: Callable[[str], Marks],
) -> list[RouteSpec]:
    """The ``RouteSpec`` s for one route: its methods grouped by their effective marks.

    ``marks(method)`` returns the marks that apply to ``method`` (``"*"`` for "any method").
    Methods marked ``exclude`` are dropped; the groups come out ordered by their first method.
    """
    groups: dict[
        tuple[bool, bool | None, float | None, int | None, RouteLimits | None], list[str]
    ] = {}
    for method in sorted(set(methods)):
        m = marks(method)
        if m.get("exclude"):
            continue
        key = (
            bool(m.get("public", False)),
            _opt_bool(m.get("idempotent")),
            _opt_float(m.get("timeout")),
            _opt_int(m.get("retries")),
            _limits_of(m),
        )
        groups.setdefault(key, []).append(method)
    return [
        RouteSpec(
            template=template,
            methods=(ANY_METHOD,) if ANY_METHOD in group else tuple(group),
            name=name,
            public=public,
            kind=kind,
            host=host,
            idempotent=idempotent,
            timeout=timeout,
            retries=retries,
            limits=limits,
        )
        for (public, idempotent, timeout, retries, limits), group in groups.items()
    ]


def _limits_of(marks: Marks) -> RouteLimits | None:
    """The limits of ``@meshware.rate_limit`` and ``@meshware.concurrency_limit`` together."""
    raw: dict[str, Any] = {}
    rate = marks.get("rate_limit")
    if isinstance(rate, Mapping):
        raw.update(rate)
    if marks.get("concurrency_limit") is not None:
        raw["concurrency"] = marks["concurrency_limit"]
    if not raw:
        return None
    try:
        return limits_from_json(raw)
    except ValueError as exc:
        raise ConfigError(f"a meshware limit mark: {exc}") from None


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise ConfigError(f"a meshware timeout mark must be a positive number, not {value!r}")


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"a meshware retries mark must be a whole number >= 0, not {value!r}")


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter of a template being built: ``kind`` is ``str``, ``int``, ``float``, ``uuid``,
    ``path`` or ``re:REGEX``."""

    name: str
    kind: str = "str"


Piece = str | Param


def render_template(pieces: Iterable[Piece], *, where: str, host: bool = False) -> str:
    """Render static text and parameters as a canonical template (or host pattern).

    Raises :class:`~meshware.TemplateError` naming ``where`` when the route cannot be written in
    the canonical form.
    """
    items: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str):
            if not piece:
                continue
            if "{" in piece or "}" in piece:
                raise TemplateError(
                    f"{where}: a literal '{{' or '}}' in a route ({piece!r}) cannot be published "
                    "in the canonical template form"
                )
            if items and isinstance(items[-1], str):
                items[-1] += piece
                continue
        items.append(piece)
    out: list[str] = []
    used: set[str] = set()
    for piece in items:
        if isinstance(piece, str):
            out.append(piece)
            continue
        name = piece.name
        n = 2
        while name in used:
            name = f"{piece.name}_{n}"
            n += 1
        used.add(name)
        out.append("{" + name + "}" if piece.kind == "str" else "{" + name + ":" + piece.kind + "}")
    return "".join(out)


# --------------------------------------------------------------------------- regexes

_SLASH = r"\x2f"
_QUANTIFIER = re.compile(r"\{(\d*),?(\d*)\}")
_STR_REGEXES = frozenset({r"[^\x2f]+", r"[^\x2f]{1,}"})


def segment_regex(regex: str, *, confine: bool = False) -> str:
    r"""A converter regex rewritten for ``{name:re:REGEX}``; same language, no ``/`` in the text.

    Every ``/`` (and ``\/``) becomes ``\x2f``; braces inside character classes and braces that
    are not quantifiers are escaped, so the braces of the result balance. With ``confine=True``
    (werkzeug matches ``part_isolating`` converters one segment at a time) the atoms that could
    consume a ``/`` are narrowed to exclude it: ``.`` -> ``[^\x2f]``, ``\S`` -> ``[^\s\x2f]``,
    ``\W``, ``\D`` likewise, and ``\x2f`` is added to negated classes.
    """
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\" and i + 1 < n:
            nxt = regex[i + 1]
            if nxt == "/":
                out.append(_SLASH)
            elif confine and nxt in "SWD":
                out.append("[^\\" + nxt.lower() + _SLASH + "]")
            else:
                out.append(regex[i : i + 2])
            i += 2
        elif c == "[":
            i = _copy_class(regex, i, out, confine)
        elif c == "/":
            out.append(_SLASH)
            i += 1
        elif c == "." and confine:
            out.append("[^" + _SLASH + "]")
            i += 1
        elif c == "{":
            m = _QUANTIFIER.match(regex, i)
            if m and (m.group(1) or m.group(2)):
                out.append(m.group(0))
                i = m.end()
            else:
                out.append("\\{")
                i += 1
        elif c == "}":
            out.append("\\}")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _copy_class(regex: str, i: int, out: list[str], confine: bool) -> int:
    """Copy the character class starting at ``regex[i] == '['``; return the index after it."""
    n = len(regex)
    j = i + 1
    negated = j < n and regex[j] == "^"
    if negated:
        j += 1
    body: list[str] = []
    if j < n and regex[j] == "]":  # a leading ']' is literal
        body.append("\\]")
        j += 1
    while j < n and regex[j] != "]":
        c = regex[j]
        if c == "\\" and j + 1 < n:
            body.append(_SLASH if regex[j + 1] == "/" else regex[j : j + 2])
            j += 2
            continue
        if c == "[" and j + 1 < n and regex[j + 1] in ":=.":  # POSIX-looking: keep literal
            body.append("\\[")
        elif c == "/":
            body.append(_SLASH)
        elif c in "{}":
            body.append("\\" + c)
        else:
            body.append(c)
        j += 1
    text = "".join(body)
    if confine and negated and _SLASH not in text:
        text += _SLASH
    out.append("[" + ("^" if negated else "") + text + "]")
    return j + 1


def is_str_regex(regex: str) -> bool:
    """Whether a :func:`segment_regex` result is exactly the ``str`` converter (``[^/]+``)."""
    return regex in _STR_REGEXES


def regex_can_match_slash(regex: str) -> bool:
    """Whether some match of ``regex`` can contain a ``/`` (decided on :mod:`re`'s parse tree).

    Unknown parse-tree nodes count as "can", so the answer errs on the safe side.
    """
    return _consumes_slash(_sre_parser.parse(regex))


def _consumes_slash(items: Iterable[tuple[Any, Any]]) -> bool:
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            if av == ord("/"):
                return True
        elif name == "NOT_LITERAL":
            if av != ord("/"):
                return True
        elif name == "ANY":
            return True
        elif name == "IN":
            if _class_has_slash(av):
                return True
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _lo, hi, sub = av
            if hi != 0 and _consumes_slash(sub):
                return True
        elif name == "SUBPATTERN":
            if _consumes_slash(av[-1]):
                return True
        elif name == "ATOMIC_GROUP":
            if _consumes_slash(av):
                return True
        elif name == "BRANCH":
            if any(_consumes_slash(branch) for branch in av[1]):
                return True
        elif name == "GROUPREF_EXISTS":
            _group, yes, no = av
            if _consumes_slash(yes) or (no is not None and _consumes_slash(no)):
                return True
        elif name in ("AT", "ASSERT", "ASSERT_NOT", "GROUPREF"):
            # Zero-width, or repeats text a group (already checked) matched.
            continue
        else:
            return True
    return False


def _class_has_slash(items: Iterable[tuple[Any, Any]]) -> bool:
    negate = False
    hit = False
    slash = ord("/")
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or av == slash
        elif name == "RANGE":
            hit = hit or av[0] <= slash <= av[1]
        elif name == "CATEGORY":
            # '/' is not a digit, space or word character: only the NOT_ categories hold it.
            hit = hit or "NOT_" in str(av)
        else:
            hit = True
    return hit != negate


# --------------------------------------------------------------------------- options


def _rate_limits(
    raw: Mapping[str, str | Mapping[str, Any]] | None,
) -> tuple[tuple[str, RouteLimits], ...]:
    """``Mesh(rate_limits={"/login": "20/s", "/api/*": {"rate": "100/min", "burst": 20}})``."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "rate_limits must map fnmatch patterns to a rate such as '20/s' or to limits such "
            "as {'rate': '20/s', 'burst': 10, 'per': 'client', 'concurrency': 8}",
            setting="rate_limits",
        )
    out = []
    for pattern, value in raw.items():
        if not isinstance(pattern, str):
            raise ConfigError(f"rate_limits: {pattern!r} is not a pattern", setting="rate_limits")
        try:
            limits = limits_from_json({"rate": value} if isinstance(value, str) else value)
        except ValueError as exc:
            raise ConfigError(f"rate_limits[{pattern!r}]: {exc}", setting="rate_limits") from None
        out.append((pattern, limits))
    return tuple(out)


class RouteOptions:
    """``public=`` patterns and ``policies=`` per pattern, from ``Mesh(...)`` arguments.

    They apply to routes whose template or name matches (fnmatch, as for ``include``); a mark
    set on the view itself (``@meshware.public``, ``@meshware.policy``) wins over them. With
    several matching ``policies`` patterns, the first one listed that sets a field wins.
    """

    __slots__ = ("policies", "public", "rate_limits")

    def __init__(
        self,
        public: Sequence[str] = (),
        policies: Mapping[str, Mapping[str, Any]] | None = None,
        rate_limits: Mapping[str, str | Mapping[str, Any]] | None = None,
    ) -> None:
        self.public = _patterns(public, "public")
        self.policies: tuple[tuple[str, dict[str, Any]], ...] = ()
        self.rate_limits = _rate_limits(rate_limits)
        if policies is None:
            return
        if not isinstance(policies, Mapping):
            raise ConfigError(
                "policies must map fnmatch patterns to policies, such as "
                "{'/users/*': {'idempotent': True, 'timeout': 2.0}}",
                setting="policies",
            )
        out = []
        for pattern, raw in policies.items():
            if not isinstance(pattern, str) or not isinstance(raw, Mapping):
                raise ConfigError(
                    f"policies: {pattern!r} must be a pattern mapped to a dict, not {raw!r}",
                    setting="policies",
                )
            unknown = sorted(set(raw) - {"idempotent", "timeout", "retries"})
            if unknown:
                raise ConfigError(
                    f"policies[{pattern!r}]: unknown key(s) {', '.join(map(str, unknown))} "
                    "(known: idempotent, timeout, retries)",
                    setting="policies",
                )
            try:
                fields = {
                    "idempotent": _opt_bool(raw.get("idempotent")),
                    "timeout": _opt_float(raw.get("timeout")),
                    "retries": _opt_int(raw.get("retries")),
                }
            except ConfigError as exc:
                raise ConfigError(
                    f"policies[{pattern!r}]: {exc}".replace("a meshware ", "its "),
                    setting="policies",
                ) from exc
            out.append((pattern, fields))
        self.policies = tuple(out)

    def apply_published(self, published: Published) -> Published:
        """:meth:`apply` to the routes of ``published`` (shadows are never public)."""
        return Published(tuple(self.apply(published.routes)), published.shadows)

    def apply(self, specs: Iterable[RouteSpec]) -> list[RouteSpec]:
        """``specs`` with the options filled in where the views' own marks left a field unset."""
        if not self.public and not self.policies and not self.rate_limits:
            return list(specs)
        out = []
        for spec in specs:
            changes: dict[str, Any] = {}
            if not spec.public and Selection._matches(self.public, spec.template, spec.name):
                changes["public"] = True
            for pattern, fields in self.policies:
                if Selection._matches((pattern,), spec.template, spec.name):
                    for key, value in fields.items():
                        if value is not None and getattr(spec, key) is None and key not in changes:
                            changes[key] = value
            if spec.limits is None:
                for pattern, limits in self.rate_limits:
                    if Selection._matches((pattern,), spec.template, spec.name):
                        changes["limits"] = limits
                        break
            out.append(dataclasses.replace(spec, **changes) if changes else spec)
        return out
