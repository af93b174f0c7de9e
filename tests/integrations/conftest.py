"""Shared by the route-introspection tests: concrete example paths for published templates."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import pytest

from meshware._core.templates import Template, parse_template

with warnings.catch_warnings():
    # Starlette 1.x nags about its TestClient running on httpx; the tests import it after this.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import starlette.testclient  # noqa: F401

SAMPLE_UUID = "c0ffee00-0000-4000-8000-000000000042"
# Values tried, in order, for an ``re:`` parameter: the first one its regex accepts is used.
RE_CANDIDATES = (
    "abc",
    "en",
    "12",
    "2024",
    "007",
    "0042",
    "-7",
    "-042",
    "1.5",
    "-1.5",
    "b.c",
    "a",
    "png",
    "tar.gz",
    SAMPLE_UUID,
)
SAMPLES = {"str": "abc", "int": "42", "float": "1.5", "uuid": SAMPLE_UUID, "path": "a/b.txt"}


def _values(template: Template) -> dict[str, str]:
    values: dict[str, str] = {}
    for p in template.params:
        if p.converter != "re":
            values[p.name] = SAMPLES[p.converter]
            continue
        rx = re.compile(p.regex)
        value = next((c for c in RE_CANDIDATES if rx.fullmatch(c)), None)
        assert value is not None, f"no example value for {p.regex!r}: add one to RE_CANDIDATES"
        values[p.name] = value
    return values


def make_example(text: str, *, host: bool = False) -> str:
    """A concrete path (or host) that the canonical template ``text`` matches."""
    template = parse_template(text, host=host)
    example = template.format(**_values(template))
    if not host:
        assert template.match(example) is not None, (text, example)
    return example


@pytest.fixture
def example() -> Callable[..., str]:
    """``example(template)`` -> a path it matches; ``example(host, host=True)`` -> a host."""
    return make_example
