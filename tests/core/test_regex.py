"""Route regexes from records: refused when they may span segments, linear-time when run."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshware import TemplateError
from meshware._core import regex as rx
from meshware._core.templates import _noncapturing, parse_template

# --- which engine runs what --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", [r"[0-9]+", r"[^/]+", r"v[0-9]{1,3}", r"(?:json|xml)", r"[a-z]{2}-[A-Z]{2}", "x"]
)
def test_backtracking_safe_patterns_run_on_re(pattern: str) -> None:
    assert rx.backtracking_safe(pattern)
    assert rx.compile_fullmatch(pattern) == re.compile(pattern).fullmatch


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a|aa)*c",  # exponential on a backtracking engine
        r"(?:a+)+b",
        r"[a-z]+-[a-z]+\.json",  # quadratic
        r"\w+(\.\w+)*",
        r"a*a*a*a*a*a*a*b",
    ],
)
def test_patterns_that_backtrack_run_on_re2(pattern: str) -> None:
    assert not rx.backtracking_safe(pattern)
    assert rx.regex_problem(pattern) is None
    run = rx.compile_fullmatch(pattern)
    assert run is not re.compile(pattern).fullmatch
    # what used to take seconds (0.35 s at 30 characters, doubling with each one more)
    assert run("a" * 38) is None or pattern == r"\w+(\.\w+)*"


def test_the_issue_pathological_template_resolves_without_backtracking() -> None:
    t = parse_template("/x/{a:re:(a|aa)*c}")
    assert t.match("/x/" + "a" * 35) is None
    assert t.match("/x/aaac") == {"a": "aaac"}
    seg = t.segments[1]
    assert not isinstance(seg, str)
    assert seg.fullmatch("a" * 200) is None


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "linear time"),  # back-reference, and it backtracks
        (r"(?=a+)a+b+", "linear time"),  # look-around that backtracks
        (r"[a-z]+", None),
        (r".+", "'/'"),
        (r"\w+(.\w+)*", "'/'"),  # the issue's: '.' spans segments
        (r"[^.]+", "'/'"),
        (r"\S+", "'/'"),
        (r"\W", "'/'"),
        (r"a/b", "'/'"),
        (r"[!-0]", "'/'"),  # a range holding '/'
        (r"[^/]+", None),
        (r"[^/.]+", None),
        (r"(", "bad regex"),
    ],
)
def test_regex_problem(pattern: str, why: str | None) -> None:
    problem = rx.regex_problem(pattern, segment=why != "linear time")
    if why is None:
        assert problem is None
    else:
        assert problem is not None
        assert why in problem


def test_templates_refuse_regexes_that_may_span_segments() -> None:
    with pytest.raises(TemplateError, match="'/'"):
        parse_template(r"/users/{name:re:\w+(.\w+)*}")
    parse_template(r"/users/{name:re:\w+(\.\w+)*}")  # an escaped dot never matches '/'


# --- RE2 runs Python's meaning ------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [r"\w", r"\S", ".", r"[^\d_]"])
def test_classes_agree_with_python_on_every_code_point(pattern: str) -> None:
    ours = rx._re2_fullmatch(pattern, 0)
    theirs = re.compile(pattern).fullmatch
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        assert (ours(ch) is None) == (theirs(ch) is None), hex(c)


_ATOMS = st.sampled_from(
    ["a", "b", "-", r"\.", "[ab]", "[^a/]", r"\d", r"\w", "é", "[a-c]", r"\s", "(?:ab)"]
)


@st.composite
def _regexes(draw: st.DrawFn, depth: int = 2) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 4 if depth else 1))
        if kind <= 1:
            piece = draw(_ATOMS)
        elif kind == 2:
            piece = "(" + draw(_regexes(depth - 1)) + ")"
        elif kind == 3:
            piece = "(?:" + draw(_regexes(depth - 1)) + "|" + draw(_regexes(depth - 1)) + ")"
        else:
            piece = "(?:" + draw(_regexes(depth - 1)) + ")"
        piece += draw(st.sampled_from(["", "*", "+", "?", "{1,3}", "*?", "{2}"]))
        parts.append(piece)
    return "".join(parts)


@settings(max_examples=400, deadline=None)
@given(_regexes(depth=1), st.lists(st.text("ab-.é1 _٣", max_size=6), min_size=1, max_size=8))
def test_re2_matches_what_python_matches(pattern: str, texts: list[str]) -> None:
    # as a segment regex is built: each parameter one group, its own groups non-capturing
    # (captures inside repeats are never read: there the engines may differ on empty repeats)
    # (the reference, Python's re, must itself stay fast: shallow patterns, short texts)
    pattern = "(" + _noncapturing(pattern) + ")-?(" + _noncapturing(pattern) + ")"
    ours = rx._re2_fullmatch(pattern, 0)
    theirs = re.compile(pattern).fullmatch
    # Where a repeated body can match the empty string, the engines split a text between two
    # adjacent parameters differently (RE2 and Python's re stop an empty iteration at different
    # points: '((?:[^a/]|a*?)*)-?(...)' on '1a' gives ('1a', '') against ('1', 'a')). Whether the
    # path matches is the same; the split is compared only where no repeat is nullable.
    compare_groups = not _has_nullable_repeat(re._parser.parse(pattern))
    for text in texts:
        a, b = ours(text), theirs(text)
        assert (a is None) == (b is None), (pattern, text)
        if a is not None and b is not None and compare_groups:
            assert a.groups() == b.groups(), (pattern, text)


def _has_nullable_repeat(items: object) -> bool:
    """Whether a parsed pattern holds a repeat whose body can match the empty string."""
    for op, arg in items:  # type: ignore[attr-defined]
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _lo, _hi, body = arg
            if body.getwidth()[0] == 0 or _has_nullable_repeat(body):
                return True
        elif (name == "SUBPATTERN" and _has_nullable_repeat(arg[-1])) or (
            name == "BRANCH" and any(_has_nullable_repeat(b) for b in arg[1])
        ):
            return True
    return False


def test_the_engines_agree_on_matching_where_they_split_empty_repeats_differently() -> None:
    pattern = "((?:[^a/]|a*?)*)-?((?:[^a/]|a*?)*)"
    assert _has_nullable_repeat(re._parser.parse(pattern))
    assert rx._re2_fullmatch(pattern, 0)("1a") is not None
    assert re.compile(pattern).fullmatch("1a") is not None
    assert not _has_nullable_repeat(re._parser.parse("((?:[^a/]|a)*)-?([ab]+)"))


@settings(max_examples=300, deadline=None)
@given(_regexes(), st.text("ab/-.", min_size=1, max_size=6))
def test_accepted_segment_regexes_never_match_a_slash(pattern: str, text: str) -> None:
    if rx.regex_problem(pattern) is not None:
        return
    if "/" in text:
        assert re.compile(pattern).fullmatch(text) is None
        assert rx.compile_fullmatch(pattern)(text) is None


def test_a_lone_surrogate_matches_nothing_on_re2() -> None:
    run = rx.compile_fullmatch(r"(?:a|b)+(?:c|d)+")
    assert run("ab\ud800c") is None
    assert run("abc") is not None
