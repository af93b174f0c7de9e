"""Canonical route templates: parsing, converters, and per-segment matchers.

Design notes
------------
Every framework's route syntax is translated, at introspection time, into one canonical form
(Starlette's): ``/users/{id:int}/files/{rest:path}``. Converters:

========  =========================  ===========================  ======
name      matches (one segment)      value                        rank
========  =========================  ===========================  ======
static    the literal text           —                            0
mixed     static text + parameters   per parameter                1
int       ``[0-9]+``                 ``int``                      2
float     ``[0-9]+(\\.[0-9]+)?``       ``float``                    3
uuid      a UUID, dashes optional    ``uuid.UUID``                4
re:RX     the regex RX (no ``/``)    ``str``                      5
str       ``[^/]+``                  ``str``                      6
path      ``.*`` (spans segments)    ``str``                      7
========  =========================  ===========================  ======

The regexes are Starlette's, exactly: the canonical form *is* Starlette's; a framework whose
converter matches something else publishes it as ``re:`` with its own regex (werkzeug's ``float``
needs a dot, its ``uuid`` needs dashes).

The rank is the precedence of DESIGN §2: at each segment the matcher tries the lowest rank first
(static beats typed beats ``str`` beats ``path``), so every client resolves the same path to the
same route. ``re:`` carries a framework's custom converter by its regex; braces in the regex must
balance (``{year:re:[0-9]{4}}``), a backslash escapes the next character.

A template is split on ``/`` into segments; each segment compiles to a :class:`SegmentMatcher`
whose ``key`` names its *shape* (parameter names left out), so templates that differ only in
parameter names share trie nodes and are recognised as conflicting claims.

This module is pure and its results are cached: parsing happens at table-build time, never on
the request path.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .._errors import TemplateError
from .regex import (
    MatchLike,
    SafePattern,
    compile_fullmatch,
    compile_pattern,
    regex_problem,
    trust,
)

__all__ = [
    "CONVERTERS",
    "PATH_RANK",
    "STATIC_RANK",
    "SegmentMatcher",
    "Template",
    "parse_template",
    "segment_pieces",
]

STATIC_RANK = 0
MIXED_RANK = 1
PATH_RANK = 7

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UUID_RX = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"  # Starlette's
_FLOAT_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UUID_RE = re.compile(_UUID_RX)


@dataclass(frozen=True, slots=True)
class _Converter:
    name: str
    regex: str
    rank: int
    convert: Callable[[str], Any]


def _to_str(value: str) -> str:
    return value


CONVERTERS: dict[str, _Converter] = {
    "int": _Converter("int", "[0-9]+", 2, int),  # `re`'s [0-9] is ASCII only, as int() needs
    "float": _Converter("float", r"[0-9]+(?:\.[0-9]+)?", 3, float),
    "uuid": _Converter("uuid", _UUID_RX, 4, uuid.UUID),
    "str": _Converter("str", "[^/]+", 6, _to_str),  # segments hold no '/'; non-empty
    "path": _Converter("path", ".*", PATH_RANK, _to_str),
}
_RE_RANK = 5
trust(*(f"({c.regex})" for c in CONVERTERS.values()), "(.*)")  # ours: linear on `re`


@dataclass(frozen=True, slots=True)
class Param:
    """One ``{name:type}`` parameter of a template."""

    name: str
    converter: str  # "int", "float", "uuid", "str", "path" or "re"
    regex: str  # the regex one value must match in full

    @property
    def canonical(self) -> str:
        if self.converter == "str":
            return "{" + self.name + "}"
        if self.converter == "re":
            return "{" + self.name + ":re:" + self.regex + "}"
        return "{" + self.name + ":" + self.converter + "}"

    @property
    def shape(self) -> str:
        return self.canonical.replace("{" + self.name, "{", 1)

    def convert(self, raw: str) -> Any:
        conv = CONVERTERS.get(self.converter)
        return conv.convert(raw) if conv is not None else raw

    @property
    def converter_func(self) -> Callable[[str], Any] | None:
        """The conversion of a raw value, ``None`` when the value stays a string."""
        if self.converter in ("int", "float", "uuid"):
            return CONVERTERS[self.converter].convert
        return None


class SegmentMatcher:
    """Matches one ``/``-separated segment of a request path against one template segment.

    ``fullmatch(segment)`` is a compiled regex's ``fullmatch`` with one group per parameter: a
    C call, the same kind at every trie node, so the walk stays on the interpreter's fast path;
    the trie collects the raw strings and the winning route converts them once
    (:meth:`Template.convert`). ``match(segment)`` returns the converted values or ``None``.
    ``key`` is the segment's shape; ``rank`` its precedence.
    """

    __slots__ = ("fullmatch", "key", "params", "pattern", "rank")

    def __init__(self, key: str, rank: int, params: tuple[Param, ...], regex: str) -> None:
        self.key = key
        self.rank = rank
        self.params = params
        self.pattern = regex
        self.fullmatch: Callable[[str], MatchLike | None] = compile_fullmatch(regex)

    def match(self, seg: str) -> tuple[Any, ...] | None:
        m = self.fullmatch(seg)
        if m is None:
            return None
        try:
            return tuple(p.convert(v) for p, v in zip(self.params, m.groups(), strict=True))
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"SegmentMatcher({self.key!r}, rank={self.rank})"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed canonical template.

    ``segments`` is a tuple of ``str`` (static segment text) or :class:`SegmentMatcher`;
    ``shape`` is the
    canonical text with parameter names left out (two templates with the same shape match exactly
    the same paths).
    """

    text: str
    segments: tuple[str | SegmentMatcher, ...]
    params: tuple[Param, ...]
    shape: str
    pattern: str  # the whole template as a regex (compiled on first use: most never need it)
    host: bool = False

    @property
    def regex(self) -> SafePattern:
        """The whole template as a compiled regex (Starlette's way of matching a route)."""
        return compile_pattern(self.pattern, re.IGNORECASE if self.host else 0)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def static_prefix(self) -> str:
        """The template up to its first parameter."""
        cut = self.text.find("{")
        return self.text if cut < 0 else self.text[:cut]

    def match(self, path: str) -> dict[str, Any] | None:
        """Match a whole (decoded) path; the converted parameters, or ``None``.

        Uses the template's full regex, exactly as Starlette matches a route: the slow, simple
        reference that the trie must agree with.
        """
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        out: dict[str, Any] = {}
        for param, raw in zip(self.params, m.groups(), strict=True):
            try:
                out[param.name] = param.convert(raw)
            except ValueError:
                return None
        return out

    def convert(self, raw: tuple[str, ...]) -> dict[str, Any]:
        """Parameter values by name, converted, from the raw strings the trie collected."""
        return {p.name: p.convert(v) for p, v in zip(self.params, raw, strict=True)}

    def format(self, **values: object) -> str:
        """Build a path from parameter values (the reverse of :meth:`match`)."""
        out = self.text
        for p in self.params:
            if p.name not in values:
                raise TemplateError(f"template {self.text} needs a value for {p.name!r}")
            out = out.replace(p.canonical, str(values[p.name]), 1)
        return out


def _split_pieces(text: str) -> list[str | Param]:
    """Split template text into literal strings and parameters, honouring balanced braces."""
    pieces: list[str | Param] = []
    i = 0
    literal: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "}":
            raise TemplateError(f"unbalanced '}}' at position {i} in template {text!r}")
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        depth = 1
        j = i + 1
        while j < n and depth:
            c = text[j]
            if c == "\\":
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            j += 1
        if depth:
            raise TemplateError(f"unclosed '{{' at position {i} in template {text!r}")
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(_parse_param(text[i + 1 : j - 1], text))
        i = j
    if literal:
        pieces.append("".join(literal))
    return pieces


def _parse_param(body: str, text: str) -> Param:
    name, sep, rest = body.partition(":")
    name = name.strip()
    if not _IDENT.match(name):
        raise TemplateError(f"parameter name {name!r} in template {text!r} is not an identifier")
    if not sep:
        return Param(name, "str", CONVERTERS["str"].regex)
    if rest.startswith("re:"):
        problem = regex_problem(rest[3:])  # untrusted: see meshware/_core/regex.py
        if problem is not None:
            raise TemplateError(f"regex parameter {name!r} in template {text!r}: {problem}")
        return Param(name, "re", rest[3:])
    conv = CONVERTERS.get(rest.strip())
    if conv is None:
        raise TemplateError(
            f"unknown converter {rest!r} for {name!r} in template {text!r} "
            f"(expected one of {', '.join(CONVERTERS)} or re:REGEX)"
        )
    return Param(name, conv.name, conv.regex)


def _noncapturing(regex: str) -> str:
    out = []
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if c == "(" and not regex.startswith("?", i + 1):
            out.append("(?:")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _param_regex(p: Param) -> str:
    return _noncapturing(p.regex) if p.converter == "re" else p.regex


def _segment(pieces: list[str | Param], text: str) -> str | SegmentMatcher:
    if not pieces:
        return ""
    if len(pieces) == 1 and isinstance(pieces[0], str):
        return pieces[0]
    params = tuple(p for p in pieces if isinstance(p, Param))
    key = "".join(p if isinstance(p, str) else p.shape for p in pieces)
    regex = "".join(re.escape(p) if isinstance(p, str) else f"({_param_regex(p)})" for p in pieces)
    if len(pieces) == 1:
        p = params[0]
        if p.converter == "path":  # the trie handles it: it may swallow several segments
            return SegmentMatcher(key, PATH_RANK, params, "(.*)")
        rank = CONVERTERS[p.converter].rank if p.converter in CONVERTERS else _RE_RANK
    elif not all(isinstance(p, Param) for p in pieces):
        rank = MIXED_RANK
    else:
        rank = max(
            CONVERTERS[p.converter].rank if p.converter in CONVERTERS else _RE_RANK for p in params
        )
    return SegmentMatcher(key, rank, params, regex)


@lru_cache(maxsize=65536)
def parse_template(text: str, *, host: bool = False) -> Template:
    """Parse a canonical template (or, with ``host=True``, a Host header pattern).

    Raises :class:`~meshware.TemplateError` (a ``ValueError``) with the reason when the text is
    not a valid template.
    """
    if not isinstance(text, str):
        raise TemplateError(f"a template must be a string, got {type(text).__name__}")
    if not host and not text.startswith("/"):
        raise TemplateError(f"template {text!r} must start with '/'")
    if "\x00" in text or any(c.isspace() for c in text):
        raise TemplateError(f"template {text!r} contains whitespace or NUL")
    pieces = _split_pieces(text)
    params = tuple(p for p in pieces if isinstance(p, Param))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise TemplateError(f"template {text!r} repeats a parameter name")
    full_regex = "".join(
        re.escape(p) if isinstance(p, str) else f"({_param_regex(p)})" for p in pieces
    )
    shape = "".join(p if isinstance(p, str) else p.shape for p in pieces)
    if host:
        return Template(text, (), params, shape, full_regex, host=True)
    # Split into segments. A path parameter may share its segment (`/{name:path}.{ext}`).
    segments: list[str | SegmentMatcher] = []
    current: list[str | Param] = []
    for piece in pieces:
        if isinstance(piece, str):
            parts = piece.split("/")
            for k, part in enumerate(parts):
                if k:
                    segments.append(_segment(current, text))
                    current = []
                if part:
                    current.append(part)
        else:
            current.append(piece)
    segments.append(_segment(current, text))
    segments = segments[1:]  # the text starts with '/', so the first segment is empty
    return Template(text, tuple(segments), params, shape, full_regex)


@lru_cache(maxsize=65536)
def segment_pieces(text: str) -> tuple[tuple[str | Param, ...], ...]:
    """A valid template's segments after the leading ``/``, each as static text and parameters.

    ``/a/v{k:int}/`` gives ``(("a",), ("v", Param(k)), ())``: an empty segment is ``()``.
    """
    out: list[tuple[str | Param, ...]] = []
    current: list[str | Param] = []
    for piece in _split_pieces(text):
        if isinstance(piece, str):
            for k, part in enumerate(piece.split("/")):
                if k:
                    out.append(tuple(current))
                    current = []
                if part:
                    current.append(part)
        else:
            current.append(piece)
    out.append(tuple(current))
    return tuple(out[1:])
