"""Route regexes from records: the cost of a pathological one, and of an ordinary one, per engine.

Run: ``python bench/bench_regex.py`` (a few seconds). No servers.

1. The issue's ``/x/{a:re:(a|aa)*c}``: Python's backtracking ``re`` (what templates compiled
   before ``meshware/_core/regex.py``) on 20..26 characters of ``a`` (each one more costs about
   1.6x; 38 characters would take minutes, so it is extrapolated), against what a template runs
   now (RE2) on 38 and on 8,000 characters.
2. The per-match cost of ordinary segment regexes on both engines (the trie runs one per dynamic
   segment it tries): a backtracking-safe one (``[0-9]+``: still run by ``re``) and one that is
   not (``[a-z]+-[0-9]+``: now RE2). Interleaved rounds, medians.

It asserts nothing: it is a measurement, not a test.
"""

from __future__ import annotations

import re
import statistics
import time
import timeit

from meshware._core.regex import _re2_fullmatch, compile_fullmatch
from meshware._core.templates import parse_template


def once(f: object, arg: str) -> float:
    t = time.perf_counter()
    f(arg)  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    pattern = r"(?:(?:a|aa)*c)"
    old = re.compile(pattern).fullmatch
    print("1. /x/{a:re:(a|aa)*c}, no match, one call")
    last = 0.0
    for n in (20, 22, 24, 26):
        last = statistics.median(once(old, "a" * n) for _ in range(3))
        print(f"   re (before)   {n:5d} chars: {last * 1e3:10.1f} ms")
    growth = (last / statistics.median(once(old, "a" * 24) for _ in range(3))) ** 0.5
    print(f"   re (before)      38 chars: ~{last * growth ** (38 - 26):10.0f} s (extrapolated)")
    t = parse_template("/x/{a:re:(a|aa)*c}")
    seg = t.segments[1]
    assert not isinstance(seg, str)
    for n in (38, 8000):
        cost = statistics.median(once(seg.fullmatch, "a" * n) for _ in range(50))
        print(f"   now (RE2)     {n:5d} chars: {cost * 1e6:10.1f} us")
    whole = statistics.median(once(t.match, "/x/" + "a" * 38) for _ in range(50))
    print(f"   Template.match on a 41-char path: {whole * 1e6:.1f} us")

    print("2. per-match cost, median of 7 interleaved rounds of 20,000 calls")
    cases = [("[0-9]+", "12345"), ("[a-z]+-[0-9]+", "abc-12345"), (r"\w+(?:\.\w+)*", "a.b.c")]
    for pat, text in cases:
        on_re = re.compile(pat).fullmatch
        on_re2 = _re2_fullmatch(pat, 0)
        used = compile_fullmatch(pat)
        engine = "re" if used == on_re else "RE2"
        rounds: dict[str, list[float]] = {"re": [], "RE2": []}
        for _ in range(7):
            for name, f in (("re", on_re), ("RE2", on_re2)):
                rounds[name].append(timeit.timeit(lambda f=f, t=text: f(t), number=20_000) / 20_000)
        a, b = statistics.median(rounds["re"]), statistics.median(rounds["RE2"])
        print(
            f"   {pat:16s} re {a * 1e6:5.2f} us   RE2 {b * 1e6:5.2f} us   "
            f"({b / a:.1f}x)   templates use: {engine}"
        )


if __name__ == "__main__":
    main()
