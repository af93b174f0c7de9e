"""The segment trie: precedence, backtracking, persistence; checked against a brute-force scan."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshware._core.matcher import Trie
from meshware._core.templates import Template, parse_template


def build(*texts: str) -> Trie[str]:
    trie: Trie[str] = Trie()
    for text in texts:
        trie = trie.set(parse_template(text), text)
    return trie


def first(trie: Trie[str], path: str) -> tuple[str, tuple[Any, ...]] | None:
    return trie.match(path, lambda value, params, _: (value, params), None)


def test_static_beats_typed_beats_str_beats_path() -> None:
    trie = build("/u/{rest:path}", "/u/{name}", "/u/{id:int}", "/u/me")
    assert first(trie, "/u/me") == ("/u/me", ())
    assert first(trie, "/u/42") == ("/u/{id:int}", ("42",))
    assert first(trie, "/u/bob") == ("/u/{name}", ("bob",))
    assert first(trie, "/u/a/b") == ("/u/{rest:path}", ("a/b",))


def test_backtracks_when_the_preferred_branch_dead_ends() -> None:
    trie = build("/a/static/x", "/a/{name}/y")
    assert first(trie, "/a/static/y") == ("/a/{name}/y", ("static",))


def test_accept_can_reject_to_continue_the_search() -> None:
    trie = build("/a/{id:int}", "/a/{name}")
    got = trie.match(
        "/a/1", lambda value, params, _: None if value == "/a/{id:int}" else value, None
    )
    assert got == "/a/{name}"


def test_path_parameter_followed_by_segments_is_greedy() -> None:
    trie = build("/f/{p:path}/meta")
    assert first(trie, "/f/a/meta/b/meta") == ("/f/{p:path}/meta", ("a/meta/b",))


def test_set_returns_a_new_trie_and_leaves_the_old_one_intact() -> None:
    old = build("/a")
    new = old.set(parse_template("/b"), "/b")
    assert first(old, "/b") is None
    assert first(new, "/b") == ("/b", ())
    assert (len(old), len(new)) == (1, 2)


def test_removing_a_template_prunes_it() -> None:
    trie = build("/a/{x}", "/a/{x}/b")
    trie = trie.set(parse_template("/a/{x}/b"), None)
    assert first(trie, "/a/1/b") is None
    assert first(trie, "/a/1") == ("/a/{x}", ("1",))
    assert len(trie) == 1


def test_trailing_slash_is_a_distinct_segment() -> None:
    trie = build("/a/")
    assert first(trie, "/a/") == ("/a/", ())
    assert first(trie, "/a") is None


# --------------------------------------------------------------------------- property test

SEGMENTS = st.sampled_from(
    [
        "a",
        "b",
        "42",
        "7",
        "{x}",
        "{n:int}",
        "{f:float}",
        "{p:path}",
        "v{k:int}",
        "{s}.json",
        "{r:re:[ab]+}",
    ]
)
PATH_SEGMENTS = st.sampled_from(["a", "b", "ab", "42", "7", "1.5", "v3", "x.json", "", "vv"])


def _template_text(segs: list[str]) -> str | None:
    names = iter(f"p{i}" for i in range(100))
    out = []
    seen_path = False
    for seg in segs:
        if "{p:path}" in seg:
            if seen_path:
                return None
            seen_path = True
        out.append(
            seg.replace("{x}", "{" + next(names) + "}")
            .replace("{n:", "{" + next(names) + ":")
            .replace("{f:", "{" + next(names) + ":")
            .replace("{p:", "{" + next(names) + ":")
            .replace("{k:", "{" + next(names) + ":")
            .replace("{s}", "{" + next(names) + "}")
            .replace("{r:", "{" + next(names) + ":")
        )
    return "/" + "/".join(out)


def _precedence(t: Template) -> tuple[tuple[int, str], ...]:
    return tuple((0, "") if isinstance(s, str) else (s.rank, s.key) for s in t.segments)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(SEGMENTS, min_size=1, max_size=4), min_size=1, max_size=12),
    st.lists(st.lists(PATH_SEGMENTS, min_size=1, max_size=5), min_size=1, max_size=20),
)
def test_trie_agrees_with_a_brute_force_scan(
    templates: list[list[str]], paths: list[list[str]]
) -> None:
    by_shape: dict[str, Template] = {}
    for segs in templates:
        text = _template_text(segs)
        if text is not None:
            t = parse_template(text)
            by_shape.setdefault(t.shape, t)
    trie: Trie[Template] = Trie()
    for t in by_shape.values():
        trie = trie.set(t, t)
    for segs in paths:
        path = "/" + "/".join(segs)
        matching = [t for t in by_shape.values() if t.match(path) is not None]
        expected = min(matching, key=_precedence) if matching else None
        got = trie.match(path, lambda value, params, _: value, None)
        assert (got.shape if got else None) == (expected.shape if expected else None), path
        if got is not None:
            values = trie.match(path, lambda value, params, _: params, None)
            assert got.convert(values or ()) == got.match(path)
