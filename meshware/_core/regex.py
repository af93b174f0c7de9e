"""Regexes from records: checked before use, and run in time linear in the input.

Design notes
------------
A route's ``re:`` parameter comes from a record, that is from etcd: untrusted. Python's ``re``
backtracks, so ``(a|aa)*c`` takes seconds on 38 characters. Every regex a template compiles to
goes through :func:`compile_fullmatch`:

* **Backtracking-safe patterns run on** ``re`` (exact Python semantics, the fastest path): at
  most one variable-length repeat, of a single character (a literal, a class, ``.``), and at most
  one alternation, no back-references. A backtracking engine tries at most (alternatives x
  length) positions on those: ``[0-9]+``, ``[^/]+``, ``v[0-9]{1,3}``, ``(?:json|xml)``. The
  built-in converters' segments (``float``, ``uuid``: a few optional parts, each separated) are
  trusted (:func:`trust`); a segment combining several parameters is not.
* **Everything else runs on RE2** (``google-re2``, an automaton: linear time, no backtracking).
  The pattern is parsed by Python's own parser and re-emitted in RE2 syntax with Python's
  meanings (``\\d`` is Unicode ``Nd``, ``\\w`` letters, numbers and ``_``, ``\\s`` Python's
  whitespace, ``.`` anything but ``\\n``), so a template matches the same values on either
  engine (tests compare both over generated strings).
* **Refused** (:func:`regex_problem`, a :class:`~meshware.TemplateError` at parse time):
  a pattern that needs backtracking features RE2 lacks (back-references, look-around, atomic
  groups, possessive repeats, ``\\b``) *and* is not backtracking-safe; and, for every parameter
  but ``path``, a pattern with any part that can match ``/`` (``.``, ``[^a]``, ``\\W``, ``\\S``):
  a segment parameter must never span segments, in the mesh's trie or in nginx's whole-path
  regex. Use ``[^/]`` or a ``path`` parameter.

:func:`backtracking_safe` is also what the nginx renderer asks before handing a regex to PCRE
(nginx's engine backtracks): an unsafe public regex is left out of nginx, not run there.

Pure: no I/O; compiled patterns are cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from re import _constants as _c  # type: ignore[attr-defined]  # the parser behind re
from re import _parser as _p  # type: ignore[attr-defined]
from typing import Any, Protocol

_re2: Any
try:
    from re2 import _re2  # type: ignore[import-untyped,no-redef]
except ImportError:  # pragma: no cover - google-re2 is a dependency; without it: refuse more
    _re2 = None

__all__ = [
    "MatchLike",
    "Unsupported",
    "backtracking_safe",
    "compile_fullmatch",
    "compile_pattern",
    "regex_problem",
]


class MatchLike(Protocol):
    def groups(self) -> tuple[Any, ...]: ...


class Unsupported(ValueError):
    """The pattern uses a construct RE2 cannot run with Python's meaning."""


_SINGLE = {_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN, _c.CATEGORY}
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)


def _parse(pattern: str, flags: int = 0) -> Any:
    return _p.parse(pattern, flags)


_TRUSTED: set[str] = set()


def trust(*patterns: str) -> None:
    """Patterns known to run in linear time on ``re`` (the built-in converters' own)."""
    _TRUSTED.update(patterns)


def backtracking_safe(pattern: str) -> bool:
    """Whether a backtracking engine runs ``pattern`` in time linear in the input."""
    if pattern in _TRUSTED:
        return True
    try:
        tree = _parse(pattern)
    except re.error:
        return False
    counts = {"repeat": 0, "branch": 0}
    return _safe(tree, counts) and counts["repeat"] <= 1 and counts["branch"] <= 1


def _safe(items: Any, counts: dict[str, int]) -> bool:
    for op, av in items:
        if op in _REPEATS or op == _POSSESSIVE:
            lo, hi, body = av
            single = len(body) == 1 and body[0][0] in _SINGLE
            if not single:
                return False
            if lo != hi:
                counts["repeat"] += 1
        elif op == _c.BRANCH:
            counts["branch"] += 1
            for alt in av[1]:
                if not _safe(alt, counts):
                    return False
        elif op == _c.SUBPATTERN:
            if not _safe(av[-1], counts):
                return False
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            if not _safe(av[1], counts):
                return False
        elif op == _ATOMIC:
            if not _safe(av, counts):
                return False
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            return False
    return True


def may_match_slash(pattern: str) -> bool:
    """Whether some part of ``pattern`` can match a ``/`` (conservative: any reachable atom)."""
    return _slash(_parse(pattern))


_SLASH = ord("/")
_SLASH_CATEGORIES = {
    _c.CATEGORY_NOT_DIGIT,
    _c.CATEGORY_NOT_SPACE,
    _c.CATEGORY_NOT_WORD,
    _c.CATEGORY_NOT_LINEBREAK,
}


def _slash(items: Any) -> bool:
    for op, av in items:
        if op == _c.LITERAL:
            if av == _SLASH:
                return True
        elif op == _c.NOT_LITERAL:
            if av != _SLASH:
                return True
        elif op == _c.ANY:
            return True
        elif op == _c.IN:
            if _class_has_slash(av):
                return True
        elif op == _c.CATEGORY:
            if av in _SLASH_CATEGORIES:
                return True
        elif op in _REPEATS or op == _POSSESSIVE:
            if _slash(av[2]):
                return True
        elif op == _c.BRANCH:
            if any(_slash(alt) for alt in av[1]):
                return True
        elif op == _c.SUBPATTERN:
            if _slash(av[-1]):
                return True
        elif op == _ATOMIC:
            if _slash(av):
                return True
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            return True  # what a reference matches is not known here
    return False


def _class_has_slash(items: Any) -> bool:
    negate = False
    hit = False
    for op, av in items:
        if op == _c.NEGATE:
            negate = True
        elif op == _c.LITERAL:
            hit = hit or av == _SLASH
        elif op == _c.RANGE:
            hit = hit or av[0] <= _SLASH <= av[1]
        elif op == _c.CATEGORY:
            hit = hit or av in _SLASH_CATEGORIES
    return hit != negate


def regex_problem(regex: str, *, segment: bool = True) -> str | None:
    """Why a parameter regex from a record is refused, or ``None`` if it may be used."""
    try:
        compiled = re.compile(regex)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"bad regex: {exc}"
    if segment and (_slash(_parse(regex)) or compiled.fullmatch("/")):
        return "may match '/': use [^/] instead of '.' or a negated class, or a path parameter"
    if backtracking_safe(regex):
        return None
    if _re2 is None:
        return "would need backtracking (install google-re2 to run such patterns in linear time)"
    try:
        to_re2(regex)
    except Unsupported as exc:
        return f"cannot run in linear time: {exc}"
    return None


# ---------------------------------------------------------------------------- Python -> RE2


def _hex(c: int) -> str:
    return f"\\x{{{c:x}}}"


@cache
def _ranges(test: str) -> str:
    """Python's own \\d, \\w or \\s as RE2 class ranges (exact for this Python's Unicode)."""
    pred = {"d": str.isdecimal, "w": lambda ch: ch.isalnum() or ch == "_", "s": str.isspace}[test]
    out: list[str] = []
    start = -1
    for c in range(0x110001):
        inside = c < 0x110000 and not 0xD800 <= c < 0xE000 and pred(chr(c))
        if inside and start < 0:
            start = c
        elif not inside and start >= 0:
            out.append(_hex(start) if c - 1 == start else f"{_hex(start)}-{_hex(c - 1)}")
            start = -1
    return "".join(out)


_CLASS_POS = {_c.CATEGORY_DIGIT: "d", _c.CATEGORY_WORD: "w", _c.CATEGORY_SPACE: "s"}
_CLASS_NEG = {_c.CATEGORY_NOT_DIGIT: "d", _c.CATEGORY_NOT_WORD: "w", _c.CATEGORY_NOT_SPACE: "s"}


def to_re2(pattern: str, flags: int = 0) -> str:
    """``pattern`` (Python syntax and meaning) in RE2 syntax; :class:`Unsupported` if it can't."""
    try:
        tree = _parse(pattern, flags)
    except re.error as exc:
        raise Unsupported(str(exc)) from None
    glob = tree.state.flags
    if glob & (re.MULTILINE | re.ASCII | re.LOCALE):
        raise Unsupported("the m, a and L flags are not supported")
    return _emit(list(tree), glob)


def _emit(items: list[Any], flags: int) -> str:
    out: list[str] = []
    for k, (op, av) in enumerate(items):
        if op == _c.LITERAL:
            out.append(_hex(av))
        elif op == _c.NOT_LITERAL:
            out.append(f"[^{_hex(av)}]")
        elif op == _c.ANY:
            out.append("(?s:.)" if flags & re.DOTALL else "[^\\n]")
        elif op == _c.IN:
            out.append(_emit_class(av))
        elif op == _c.CATEGORY:
            out.append(_emit_class([(op, av)]))
        elif op in _REPEATS:
            lo, hi, body = av
            if (hi != _c.MAXREPEAT and hi > 1000) or lo > 1000:
                raise Unsupported("repeat counts above 1000")
            inner = "(?:" + _emit(list(body), flags) + ")"
            if hi == _c.MAXREPEAT:
                q = f"{{{lo},}}"
            elif lo == hi:
                q = f"{{{lo}}}"
            else:
                q = f"{{{lo},{hi}}}"
            out.append(inner + q + ("?" if op == _c.MIN_REPEAT else ""))
        elif op == _c.BRANCH:
            out.append("(?:" + "|".join(_emit(list(a), flags) for a in av[1]) + ")")
        elif op == _c.SUBPATTERN:
            group, add, dele, body = av
            if (add | dele) & ~(re.IGNORECASE | re.DOTALL | re.VERBOSE | re.UNICODE):
                raise Unsupported("local flags other than i, s and x")
            inner_flags = (flags | add) & ~dele
            mods = ("i" if add & re.IGNORECASE else "") + ("-i" if dele & re.IGNORECASE else "")
            text = _emit(list(body), inner_flags)
            if mods:
                text = f"(?{mods}:{text})"
            out.append(("(" if group is not None else "(?:") + text + ")")
        elif op == _c.AT:
            if av in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING):
                out.append("\\A")
            elif av == _c.AT_END_STRING or (av == _c.AT_END and k == len(items) - 1):
                out.append("\\z")  # last: in a full match, `$` before a final "\n" fails anyway
            else:
                raise Unsupported("word boundaries and '$' before the end")
        else:
            raise Unsupported("back-references, look-around, atomic groups, possessive repeats")
    text = "".join(out)
    return f"(?i:{text})" if flags & re.IGNORECASE and text else text


def _emit_class(items: Any) -> str:
    negate = False
    pos: list[str] = []
    neg: list[str] = []
    for op, av in items:
        if op == _c.NEGATE:
            negate = True
        elif op == _c.LITERAL:
            pos.append(_hex(av))
        elif op == _c.RANGE:
            pos.append(f"{_hex(av[0])}-{_hex(av[1])}")
        elif op == _c.CATEGORY and av in _CLASS_POS:
            pos.append(_ranges(_CLASS_POS[av]))
        elif op == _c.CATEGORY and av in _CLASS_NEG:
            neg.append(f"[^{_ranges(_CLASS_NEG[av])}]")
        else:
            raise Unsupported("this character class")
    if not neg:
        if not pos:
            return "[^\\x{0}-\\x{10ffff}]" if not negate else "(?s:.)"
        return ("[^" if negate else "[") + "".join(pos) + "]"
    if negate:
        raise Unsupported("negated classes holding \\D, \\W or \\S")
    alts = (["[" + "".join(pos) + "]"] if pos else []) + neg
    return "(?:" + "|".join(alts) + ")"


# ---------------------------------------------------------------------------- running


class _Re2Match:
    __slots__ = ("_groups",)

    def __init__(self, groups: tuple[str | None, ...]) -> None:
        self._groups = groups

    def groups(self) -> tuple[str | None, ...]:
        return self._groups


class SafePattern:
    """A compiled pattern with ``re.Pattern``'s ``pattern`` and ``fullmatch``."""

    __slots__ = ("fullmatch", "pattern")

    def __init__(self, pattern: str, fullmatch: Callable[[str], MatchLike | None]) -> None:
        self.pattern = pattern
        self.fullmatch = fullmatch


def _re2_fullmatch(pattern: str, flags: int) -> Callable[[str], MatchLike | None]:
    options = _re2.RE2.Options()
    options.log_errors = False
    compiled = _re2.RE2(to_re2(pattern, flags).encode("utf-8"), options)
    if not compiled.ok():  # pragma: no cover - to_re2 emits only what RE2 takes
        raise Unsupported(compiled.error())
    anchor = _re2.RE2.Anchor.ANCHOR_BOTH
    match = compiled.Match

    def fullmatch(text: str) -> MatchLike | None:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no template value holds one
            return None
        spans = match(anchor, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return _Re2Match(tuple(None if s < 0 else data[s:e].decode("utf-8") for s, e in spans[1:]))

    return fullmatch


@lru_cache(maxsize=8192)
def compile_fullmatch(pattern: str, flags: int = 0) -> Callable[[str], MatchLike | None]:
    """``fullmatch`` for ``pattern``, run in linear time (``re`` when safe, else RE2).

    Raises :class:`Unsupported` when neither can (see :func:`regex_problem`, which refuses
    such patterns earlier, when the template is parsed).
    """
    if backtracking_safe(pattern) or _re2 is None:
        if not backtracking_safe(pattern):
            raise Unsupported("would need backtracking (google-re2 is not installed)")
        return re.compile(pattern, flags).fullmatch
    return _re2_fullmatch(pattern, flags)


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str, flags: int = 0) -> SafePattern:
    """A whole-template pattern: ``re`` where safe, else RE2 (see :func:`compile_fullmatch`)."""
    if backtracking_safe(pattern):
        return SafePattern(pattern, re.compile(pattern, flags).fullmatch)
    if _re2 is None:
        raise Unsupported("would need backtracking (google-re2 is not installed)")
    return SafePattern(pattern, _re2_fullmatch(pattern, flags))
