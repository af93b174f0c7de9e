"""Canonical templates: parsing, shapes, segment matching, and clear errors."""

from __future__ import annotations

import uuid

import pytest

from meshware import TemplateError, parse_template
from meshware._core.templates import SegmentMatcher


def test_typed_parameters_are_converted() -> None:
    t = parse_template("/users/{id:int}/ratio/{r:float}/{u:uuid}")
    u = uuid.uuid4()
    assert t.match(f"/users/42/ratio/1.5/{u}") == {"id": 42, "r": 1.5, "u": u}


def test_shape_ignores_parameter_names() -> None:
    assert parse_template("/users/{id:int}").shape == parse_template("/users/{uid:int}").shape


def test_plain_parameter_is_str_and_canonical_without_type() -> None:
    t = parse_template("/users/{name}")
    assert t.params[0].converter == "str"
    assert t.params[0].canonical == "{name}"


def test_regex_parameter_with_braces_parses() -> None:
    t = parse_template("/archive/{year:re:[0-9]{4}}")
    assert t.match("/archive/2024") == {"year": "2024"}
    assert t.match("/archive/24") is None


def test_mixed_segment_matches_static_text_around_parameters() -> None:
    t = parse_template("/files/{name}.{ext}")
    seg = t.segments[1]
    assert isinstance(seg, SegmentMatcher)
    assert seg.match("report.pdf") == ("report", "pdf")
    assert seg.match("report") is None


def test_path_parameter_spans_segments() -> None:
    t = parse_template("/static/{rest:path}")
    assert t.match("/static/a/b/c.css") == {"rest": "a/b/c.css"}


def test_format_builds_a_path() -> None:
    assert parse_template("/users/{id:int}/x").format(id=7) == "/users/7/x"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("users", "must start with '/'"),
        ("/users/{id:bogus}", "unknown converter"),
        ("/users/{1d}", "not an identifier"),
        ("/users/{id", "unclosed"),
        ("/users/id}", "unbalanced"),
        ("/a/{x}/{x}", "repeats"),
        ("/a/{r:re:a/b}", "may match '/'"),
        ("/a/{r:re:[}", "bad regex"),
    ],
)
def test_invalid_templates_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        parse_template(text)


def test_template_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the point is the base class
        parse_template("nope")
