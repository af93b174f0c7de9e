"""One service's compiled router: werkzeug's rules and Starlette's first match, exactly.

The cases come from issue 10 (each reproduced against werkzeug 3.1 / Starlette 1.x by hand);
randomised comparisons with the frameworks themselves are in
``tests/integrations/test_same_route_as_the_app.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from meshware._core.matcher import ServiceMatcher, precedence_key
from meshware._core.templates import Template, parse_template


@dataclass(eq=False)
class E:
    """A stand-in for the table's Route: what the matcher reads."""

    text: str
    methods: frozenset[str] = frozenset({"GET"})
    order: int = 0
    shadow: bool = False
    reason: str | None = None
    host: str | None = None
    weights: tuple[int, ...] | None = None
    clean: bool = False
    websocket: bool = False
    strict_slashes: bool = True
    start: int = -1
    shadows: tuple[Any, ...] = ()
    template: Template = field(init=False)

    def __post_init__(self) -> None:
        self.template = parse_template(self.text)


def matcher(flavor: str, *texts: str | E) -> ServiceMatcher:
    entries = [t if isinstance(t, E) else E(t) for t in texts]
    for i, e in enumerate(entries):
        e.order = i
    return ServiceMatcher(flavor, entries)


def pick(m: ServiceMatcher, path: str, method: str = "GET") -> tuple[str, tuple[Any, ...], bool]:
    got = m.match(method, path, None, set())
    assert got is not None, path
    return got[0].text, got[1], got[2]


# --------------------------------------------------------------------------- werkzeug


def test_werkzeug_prefers_more_static_parts_after_a_path_parameter() -> None:
    m = matcher(
        "specificity", "/repository/{path:path}", "/repository/{path:path}/trigger/{trigger}"
    )
    assert pick(m, "/repository/ns/repo/trigger/42") == (
        "/repository/{path:path}/trigger/{trigger}",
        ("ns/repo", "42"),
        False,
    )


def test_werkzeug_path_is_never_empty() -> None:
    m = matcher("specificity", "/files/{p:path}", "/{route:path}")
    assert pick(m, "/files/") == ("/{route:path}", ("files/",), False)


def test_werkzeug_path_never_starts_with_a_slash() -> None:
    m = matcher("specificity", "/files/{p:path}")
    assert m.match("GET", "/files//x", None, set()) == (m.entries[0], ("x",), True)  # merged


def test_werkzeug_static_tail_beats_a_parameter_tail() -> None:
    m = matcher("specificity", "/{p:path}/a/a", "/{p:path}/{x}")
    assert pick(m, "/b/a/a")[0] == "/{p:path}/a/a"


def test_several_path_parameters_in_one_template() -> None:
    m = matcher("specificity", "/v2/{repository:path}/blobs/{digest:path}")
    assert pick(m, "/v2/lib/ubuntu/blobs/sha256/ab")[1] == ("lib/ubuntu", "sha256/ab")


def test_werkzeug_numbers_before_strings_whatever_the_rule_order() -> None:
    m = matcher("specificity", "/f/{name}", E("/f/{v:re:[0-9]+\\.[0-9]+}", weights=(50,)))
    assert pick(m, "/f/3.5")[0] == "/f/{v:re:[0-9]+\\.[0-9]+}"


def test_werkzeug_equal_weights_keep_the_rule_order() -> None:
    m = matcher("specificity", "/u/{name}", "/u/{u:uuid}")
    assert pick(m, "/u/" + "0" * 32)[0] == "/u/{name}"


def test_werkzeug_int_takes_non_ascii_digits() -> None:
    m = matcher("specificity", "/n/{id:int}", "/n/{name}")
    assert pick(m, "/n/٣")[0] == "/n/{id:int}"


def test_werkzeug_method_mismatch_searches_on() -> None:
    m = matcher("specificity", "/a/{id:int}", E("/a/{name}", frozenset({"POST"})))
    allowed: set[str] = set()
    assert m.match("POST", "/a/1", None, allowed) is not None
    assert m.match("PUT", "/a/1", None, allowed) is None
    assert allowed == {"GET", "POST"}


def test_werkzeug_redirects_to_the_slash_form() -> None:
    m = matcher("specificity", "/a/", "/{x}")
    assert pick(m, "/a") == ("/a/", (), True)  # strict_slashes stops the search there


def test_werkzeug_path_with_a_trailing_slash_is_suffixed() -> None:
    m = matcher("specificity", "/d/{p:path}/")
    assert pick(m, "/d/x/y/") == ("/d/{p:path}/", ("x/y",), False)
    assert pick(m, "/d/x/y") == ("/d/{p:path}/", ("x/y",), True)


def test_werkzeug_rules_without_strict_slashes_match_both_forms() -> None:
    m = matcher("specificity", E("/e/{x}/", strict_slashes=False), "/{p:path}")
    assert pick(m, "/e/a") == ("/e/{x}/", ("a",), False)  # no redirect
    assert pick(m, "/e/a//") == ("/e/{x}/", ("a",), False)  # a last "/" left over


def test_werkzeug_drops_leading_slashes() -> None:
    m = matcher("specificity", "/a")
    assert pick(m, "//a") == ("/a", (), False)


# --------------------------------------------------------------------------- Starlette


def test_starlette_first_declared_match_wins() -> None:
    m = matcher("ordered", "/u/{name}", "/u/me", "/u/{id:int}")
    assert pick(m, "/u/me")[0] == "/u/{name}"
    assert pick(m, "/u/7")[0] == "/u/{name}"


def test_starlette_full_match_beats_an_earlier_partial_one() -> None:
    m = matcher("ordered", E("/u/{x}", frozenset({"POST"})), "/u/{name}")
    assert pick(m, "/u/a")[0] == "/u/{name}"


def test_starlette_path_may_be_empty() -> None:
    m = matcher("ordered", "/files/{p:path}")
    assert pick(m, "/files/") == ("/files/{p:path}", ("",), False)


def test_starlette_strips_every_trailing_slash_before_retrying() -> None:
    m = matcher("ordered", "/api/flows/")
    assert m.match("POST", "/api/flows//", None, set()) is None
    m = matcher("ordered", "/api/flows")
    assert pick(m, "/api/flows//") == ("/api/flows", (), True)
    assert pick(m, "/api/flows") == ("/api/flows", (), False)


def test_starlette_adds_a_missing_slash() -> None:
    m = matcher("ordered", "/x/")
    assert pick(m, "/x") == ("/x/", (), True)


def test_starlette_trailing_newline_matches_before_it() -> None:
    m = matcher("ordered", "/u/{id:int}")
    assert pick(m, "/u/42\n") == ("/u/{id:int}", ("42",), False)


def test_a_mount_answers_everything_under_it() -> None:
    m = matcher(
        "ordered",
        "/api/items",
        E("/api/{path:path}", frozenset({"*"}), shadow=True, reason="mount"),
        "/{catch:path}",
    )
    got = m.match("GET", "/api/other", None, set())
    assert got is not None
    assert got[0].reason == "mount"
    assert pick(m, "/api/items/") == ("/api/items", (), True)  # the sub-router's redirect
    assert pick(m, "/elsewhere")[0] == "/{catch:path}"


def test_clean_routes_are_answered_without_a_full_search() -> None:
    m = matcher("ordered", "/a/{x}", "/b/{y}", "/a/static")
    clean = {e.text: e.clean for e in m.entries}
    assert clean == {"/a/{x}": True, "/b/{y}": True, "/a/static": False}


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("flavor", ["specificity", "ordered"])
@pytest.mark.parametrize("n", [256, 1000])
def test_long_templates_never_recurse(flavor: str, n: int) -> None:
    text = "/s" * n
    m = matcher(flavor, text, "/s" * (n - 1) + "/{x}", "/s/{p:path}/s")
    assert pick(m, text)[0] == text
    assert pick(m, "/s" * (n - 1) + "/t")[0] == "/s" * (n - 1) + "/{x}"
    assert len(m.overlapping(text)) == 3


def test_cross_service_precedence_is_static_typed_str_path() -> None:
    order = sorted(["/u/{p:path}", "/u/{name}", "/u/{id:int}", "/u/me"], key=precedence_key)
    assert order == ["/u/me", "/u/{id:int}", "/u/{name}", "/u/{p:path}"]


def test_a_mount_redirects_to_its_own_routes_only() -> None:
    # Starlette: Route("/a/a/") then Mount("/a", routes=[Route("/x")]): GET /a/a goes into the
    # mount, whose router has no "/a/": 404, not a redirect to the parent's /a/a/
    barrier = E("/a/{path:path}", frozenset({"*"}), shadow=True, reason="mount", start=1)
    m = matcher("ordered", "/a/a/", "/a/x", barrier)
    got = m.match("GET", "/a/a", None, set())
    assert got is not None
    assert got[0] is barrier  # the table reports no route
    assert pick(m, "/a/x/") == ("/a/x", (), True)
