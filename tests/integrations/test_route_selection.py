"""The framework-independent half of route introspection: selection, marks, pieces, regexes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from meshware._core.records import RouteSpec
from meshware._core.templates import parse_template
from meshware._errors import ConfigError, TemplateError
from meshware.integrations._select import (
    Param,
    Selection,
    regex_can_match_slash,
    render_template,
    segment_regex,
    specs_for,
)

# --------------------------------------------------------------------------- selection


def test_no_include_selects_everything() -> None:
    assert Selection().selects("/users/{id:int}", "users.show")


def test_include_matches_the_template_or_the_name() -> None:
    selection = Selection(include=["/users/*", "admin.*"])
    assert selection.selects("/users/{id:int}", None)
    assert selection.selects("/dashboard", "admin.dashboard")
    assert not selection.selects("/orders/{id:int}", "orders.show")


def test_exclude_wins_over_include() -> None:
    selection = Selection(include=["/users/*"], exclude=["*/internal*"])
    assert not selection.selects("/users/internal/debug", "users.debug")


def test_empty_include_selects_nothing() -> None:
    assert not Selection(include=[]).selects("/users", "users")


def test_patterns_are_case_sensitive_and_star_crosses_slashes() -> None:
    selection = Selection(include=["/api/*"])
    assert selection.selects("/api/v1/users/{id:int}", None)
    assert not selection.selects("/API/v1", None)


def test_a_single_string_is_refused_as_patterns() -> None:
    with pytest.raises(ConfigError, match="sequence of fnmatch patterns"):
        Selection(include="/users/*")


# --------------------------------------------------------------------------- marks


def test_methods_are_grouped_by_their_marks() -> None:
    marks: dict[str, dict[str, Any]] = {"PUT": {"idempotent": True}, "DELETE": {"exclude": True}}
    specs = specs_for(
        "/items/{id:int}",
        ["PUT", "GET", "HEAD", "DELETE"],
        name="items",
        marks=lambda m: {"public": True, **marks.get(m, {})},
    )
    assert specs == [
        RouteSpec("/items/{id:int}", ("GET", "HEAD"), name="items", public=True),
        RouteSpec("/items/{id:int}", ("PUT",), name="items", public=True, idempotent=True),
    ]


def test_policy_marks_fill_the_route_spec() -> None:
    [spec] = specs_for(
        "/x",
        ["GET"],
        name=None,
        kind="mount",
        host="a.example.com",
        marks=lambda m: {"timeout": 2, "retries": 3, "idempotent": False},
    )
    assert spec == RouteSpec(
        "/x", ("GET",), kind="mount", host="a.example.com", timeout=2.0, retries=3, idempotent=False
    )


# --------------------------------------------------------------------------- templates


def test_pieces_render_canonically() -> None:
    text = render_template(
        ["/v", Param("version", "int"), "/files/", Param("name"), ".txt/", Param("rest", "path")],
        where="test",
    )
    assert text == "/v{version:int}/files/{name}.txt/{rest:path}"
    parse_template(text)


def test_a_repeated_parameter_name_is_renamed() -> None:
    text = render_template(["/u/", Param("id"), "/x/", Param("id", "int")], where="test")
    assert text == "/u/{id}/x/{id_2:int}"


def test_a_literal_brace_is_a_template_error_naming_the_route() -> None:
    with pytest.raises(TemplateError, match=r"route /weird"):
        render_template(["/weird{x"], where="route /weird")


def test_a_path_parameter_may_share_its_segment() -> None:
    # Starlette's `/book/{fname:path}.{ext}` and werkzeug's `<path:p>.txt` are valid routes
    text = render_template(["/files/", Param("p", "path"), ".txt"], where="route")
    assert text == "/files/{p:path}.txt"


# --------------------------------------------------------------------------- regexes


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        ("[^/]+", r"[^\x2f]+"),
        (r"[a-z]{2,3}", r"[a-z]{2,3}"),
        (r"a\/b", r"a\x2fb"),
        ("[{}]x", r"[\{\}]x"),
        ("a{b", r"a\{b"),
        ("x}", r"x\}"),
        ("[]a]", r"[\]a]"),
    ],
)
def test_segment_regex_writes_slashes_and_lone_braces_escaped(regex: str, expected: str) -> None:
    out = segment_regex(regex)
    assert out == expected
    for probe in ("ab", "a/b", "{}x", "a{b", "x}", "]", "abc"):
        assert bool(re.fullmatch(out, probe)) == bool(re.fullmatch(regex, probe)), probe


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        (".+", r"[^\x2f]+"),
        (r"\S+", r"[^\s\x2f]+"),
        ("[^-]+", r"[^-\x2f]+"),
        (r"[^\x2f]+", r"[^\x2f]+"),
    ],
)
def test_confined_regex_no_longer_matches_slashes(regex: str, expected: str) -> None:
    out = segment_regex(regex, confine=True)
    assert out == expected
    assert not regex_can_match_slash(out)


@pytest.mark.parametrize(
    ("regex", "can"),
    [
        ("[^/]+", False),
        ("[a-z0-9-]+", False),
        (r"[0-9]{4}", False),
        (r"(?:a|b\.c)", False),
        (r"\w+", False),
        (r"a(?=/)", False),
        (".*", True),
        (r"\S+", True),
        ("[^-]+", True),
        ("[!-0]", True),
        ("a|b/c", True),
        (r"\W", True),
        ("(a|/)", True),
    ],
)
def test_regex_can_match_slash_reads_the_parse_tree(regex: str, can: bool) -> None:
    assert regex_can_match_slash(regex) is can
