"""One service's router, compiled: decides between the service's routes exactly as the app does.

Design notes
------------
* **The app's own dispatch.** A service publishes ``routing: "specificity"`` (werkzeug/Flask) or
  ``"ordered"`` (Starlette/FastAPI). :class:`ServiceMatcher` compiles the service's routes *and
  shadows* (routes the app serves but does not publish) into a state machine shaped like
  werkzeug's ``StateMachineMatcher``: one state per prefix, a dict of static transitions, then
  dynamic transitions (one segment each, or a *final* one that consumes the rest of the path
  with one regex: the part of a template from its first ``path`` parameter on, so a template may
  hold several ``path`` parameters).
* **Specificity** (werkzeug 3, ``werkzeug/routing/matcher.py`` and ``rules.py``): converters'
  regexes as werkzeug has them (``int`` is ``\\d+``, ``path`` is ``[^/].*?``: never empty, never
  starting with ``/``); dynamic transitions sorted by werkzeug's ``Weighting`` (more static text
  first, then more parameters, then converter weights: numbers 50, default 100, ``path`` 200, or
  the record's ``weights``), ties kept in the app's rule order; depth first, static before
  dynamic; a rule whose method does not match lets the search go on; a path that ends where
  only ``path + "/"`` has a rule is redirected there (``strict_slashes``); a failed path with
  ``//`` is matched again with slashes merged (werkzeug redirects to it); leading slashes are
  dropped (werkzeug's ``MapAdapter.match``). The walk is the same as werkzeug's, so the result is.
* **Ordered** (Starlette ``Router.app``): the first declared route whose regex matches and whose
  methods allow the request (``Match.FULL``); else the first that matches the path only
  (``Match.PARTIAL``: 405); else ``redirect_slashes``: every trailing ``/`` stripped, or one
  added, and the app redirects when any route matches that. The state machine (with Starlette's
  regexes) finds every route matching the path; the earliest declared wins. A route that no
  earlier route can overlap is *clean*: when the walk's first find is clean it is the answer, with
  no further search (the common case).
* **Mount shadows** (``reason == "mount"``) stand for the rest of a Starlette mount: its sub-app
  answers what its routes do not (404/405, or its own slash redirect), so no later route of the
  app (nor another service's route of lower precedence) takes those paths.
* **Iterative, bounded.** Building and matching never recurse per segment (explicit stacks), so a
  template of any length the record bounds admit costs no ``RecursionError``.
* **Independent of instances.** A matcher depends only on the routing kind and the route set
  (templates, methods, hosts, order, weights): instances joining or leaving never rebuild it.

Pure: no I/O, no clock, no threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

from .records import ANY_METHOD
from .regex import MatchLike, compile_fullmatch
from .templates import CONVERTERS, Param, Template, parse_template, segment_pieces

__all__ = [
    "Entry",
    "Part",
    "ServiceMatcher",
    "fast_walk",
    "host_ok",
    "precedence_key",
    "template_parts",
]

WERKZEUG = "specificity"
STARLETTE = "ordered"

# werkzeug's converter weights (werkzeug.routing.converters): numbers 50, default 100, path 200
_DEFAULT_WEIGHTS = {"int": 50, "float": 50, "path": 200}
_WERKZEUG_REGEX = {"int": r"\d+", "path": r"[^/].*?"}


class Entry(Protocol):
    """What the matcher needs of a route or shadow (the table's ``Route``)."""

    methods: frozenset[str]
    order: int
    template: Template
    shadow: bool
    reason: str | None
    start: int
    clean: bool
    direct: bool
    websocket: bool
    strict_slashes: bool

    @property
    def host(self) -> str | None: ...


# --------------------------------------------------------------------------- parts


class Part:
    """One transition of the state machine: a static segment, a dynamic one, or a final one."""

    __slots__ = ("final", "fullmatch", "key", "ngroups", "regex", "suffixed", "weight")

    def __init__(
        self,
        regex: str,
        final: bool,
        suffixed: bool,
        weight: tuple[Any, ...],
        n: int,
        checks: tuple[tuple[int, Callable[[str, str], bool]], ...] = (),
    ):
        self.regex = regex
        self.final = final
        self.suffixed = suffixed
        self.weight = weight
        self.ngroups = n
        self.key = (regex, final, suffixed, weight, tuple(c for _, c in checks))
        plain = compile_fullmatch(regex)  # linear time: re when safe, else RE2
        if suffixed:
            plain = _suffixed(plain)
        self.fullmatch: Callable[[str], MatchLike | None] = (
            _checked(plain, checks) if checks else plain
        )

    def __repr__(self) -> str:
        return f"Part({self.regex!r}, final={self.final})"


class _Groups:
    __slots__ = ("_groups",)

    def __init__(self, groups: tuple[Any, ...]) -> None:
        self._groups = groups

    def groups(self) -> tuple[Any, ...]:
        return self._groups


def _checked(
    plain: Callable[[str], MatchLike | None],
    checks: tuple[tuple[int, Callable[[str, str], bool]], ...],
) -> Callable[[str], MatchLike | None]:
    """``plain``, and the look-arounds peeled off custom regexes checked on their values."""

    def fullmatch(text: str) -> MatchLike | None:
        m = plain(text)
        if m is None:
            return None
        groups = m.groups()
        for index, ok in checks:
            value = groups[index] or ""
            # a look-ahead sees past the value: when the value opens the text, give it all
            if not ok(text if index == 0 and text.startswith(value) else value, value):
                return None
        return m

    return fullmatch


_LOOK = re.compile(r"\(\?(<?)([!=])")


def _group_end(regex: str, start: int) -> int:
    """The index after the group opening at ``regex[start] == "("`` (escapes, classes)."""
    depth = 0
    i = start
    in_class = False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced group")


def _ahead(rx: re.Pattern[str], negate: bool) -> Callable[[str, str], bool]:
    def check(text: str, value: str) -> bool:
        return (rx.match(text) is None) == negate

    return check


def _behind(rx: re.Pattern[str], negate: bool) -> Callable[[str, str], bool]:
    def check(text: str, value: str) -> bool:
        return (rx.search(value) is None) == negate

    return check


@lru_cache(maxsize=4096)
def custom_path_regex(pattern: str) -> tuple[str, tuple[Callable[[str, str], bool], ...]] | None:
    """A custom ``path`` converter's regex as a core run in linear time, and value checks.

    Leading look-aheads (``(?!v1/|v2/)...``) and trailing look-behinds (``...(?<!auth)``) are
    peeled off and checked on the value with ``re`` (they must be backtracking-safe); the core
    must compile with :func:`~.regex.compile_fullmatch`. ``None``: it cannot be run safely
    (the route then matches what ``path`` matches).
    """
    from .regex import backtracking_safe
    from .templates import _noncapturing

    checks: list[Callable[[str, str], bool]] = []
    core = pattern
    try:
        while (m := _LOOK.match(core)) is not None and not m.group(1):
            end = _group_end(core, 0)
            body, negate = core[3 : end - 1], m.group(2) == "!"
            if not backtracking_safe(body):
                return None
            ahead = re.compile(body)
            checks.append(_ahead(ahead, negate))
            core = core[end:]
        while core.endswith(")"):
            starts = [
                i for i, c in enumerate(core) if c == "(" and _group_end(core, i) == len(core)
            ]
            m = _LOOK.match(core, starts[0]) if starts else None
            if m is None or not m.group(1):
                break
            start = starts[0]
            body, negate = core[start + 4 : -1], m.group(2) == "!"
            if not backtracking_safe(body):
                return None
            behind = re.compile("(?:" + body + r")\Z")
            checks.append(_behind(behind, negate))
            core = core[:start]
        core = _noncapturing(core)
        compile_fullmatch("(" + core + ")")
    except (ValueError, re.error):
        return None
    return core, tuple(checks)


def _suffixed(plain: Callable[[str], MatchLike | None]) -> Callable[[str], MatchLike | None]:
    """werkzeug's ``X(?<!/)(/?)$`` for a final part ``X`` ending in ``/``, without look-behind.

    ``X`` (non-greedy) ends before an optional last ``/``, and never with a ``/`` itself: the
    last group is the ``/`` it left (werkzeug then redirects or goes on to the ``""`` part).
    """

    def fullmatch(rest: str) -> MatchLike | None:
        if rest.endswith("/"):
            if rest.endswith("//"):
                return None
            m = plain(rest[:-1])
            return None if m is None else _Groups((*m.groups(), "/"))
        m = plain(rest)
        return None if m is None else _Groups((*m.groups(), ""))

    return fullmatch


def _param_regex(p: Param, flavor: str) -> str:
    if flavor == WERKZEUG and p.converter in _WERKZEUG_REGEX:
        return _WERKZEUG_REGEX[p.converter]
    if p.converter == "re":
        from .templates import _noncapturing

        return _noncapturing(p.regex)
    return (
        CONVERTERS[p.converter].regex.replace("(\\.", "(?:\\.") if p.converter != "path" else ".*"
    )


def _weighting(statics: list[int], args: list[int]) -> tuple[Any, ...]:
    """werkzeug's ``Weighting`` of a part, as a tuple that sorts the same way."""
    static_weights = tuple((i, -n) for i, n in enumerate(statics))
    return (-len(static_weights), static_weights, -len(args), tuple(args))


@lru_cache(maxsize=65536)
def template_parts(
    text: str,
    flavor: str,
    weights: tuple[int, ...] | None = None,
    patterns: tuple[str | None, ...] | None = None,
) -> tuple[str | Part, ...]:
    """A valid template's transitions: ``str`` for a static segment, :class:`Part` otherwise.

    From the first ``path`` parameter on, the rest of the template is one final part (werkzeug's
    ``part_isolating = False``). werkzeug's final part for a template ending in ``/`` is
    *suffixed*: it matches with or without that slash and is followed by a static ``""``.
    """
    segments = segment_pieces(text)
    out: list[str | Part] = []
    index = 0  # parameter index in the template, for weights
    k = 0
    while k < len(segments):
        pieces = segments[k]
        if any(isinstance(p, Param) and p.converter == "path" for p in pieces):
            break
        if all(isinstance(p, str) for p in pieces):
            out.append("".join(pieces))  # type: ignore[arg-type]
            k += 1
            continue
        regex, seg_statics, seg_args, index, _ = _pieces_regex(pieces, flavor, weights, index, None)
        out.append(Part(regex, False, False, _weighting(seg_statics, seg_args), len(seg_args)))
        k += 1
    if k < len(segments):
        regexes: list[str] = []
        statics: list[int] = []
        args: list[int] = []
        checks: list[tuple[int, Callable[[str, str], bool]]] = []
        for pieces in segments[k:]:
            regex, st, ar, index, found = _pieces_regex(pieces, flavor, weights, index, patterns)
            checks += [(len(args) + i, c) for i, c in found]
            regexes.append(regex)
            statics += st
            args += ar
        regex = "/".join(regexes)
        suffixed = flavor == WERKZEUG and regex.endswith("/")
        if suffixed:
            regex = regex[:-1]  # the trailing "/" is optional: see _suffixed
        out.append(Part(regex, True, suffixed, _weighting(statics, args), len(args), tuple(checks)))
        if suffixed:
            out.append("")
    return tuple(out)


def _pieces_regex(
    pieces: Sequence[str | Param],
    flavor: str,
    weights: tuple[int, ...] | None,
    index: int,
    patterns: tuple[str | None, ...] | None,
) -> tuple[str, list[int], list[int], int, list[tuple[int, Callable[[str, str], bool]]]]:
    regex: list[str] = []
    statics: list[int] = []
    args: list[int] = []
    checks: list[tuple[int, Callable[[str, str], bool]]] = []
    for piece in pieces:
        if isinstance(piece, str):
            regex.append(re.escape(piece))
            statics.append(len(piece))
            continue
        custom = None
        if patterns is not None and index < len(patterns) and piece.converter == "path":
            pattern = patterns[index]
            custom = custom_path_regex(pattern) if pattern is not None else None
        if custom is not None:
            regex.append("(" + custom[0] + ")")
            checks += [(len(args), c) for c in custom[1]]
        else:
            regex.append("(" + _param_regex(piece, flavor) + ")")
        if weights is not None and index < len(weights):
            args.append(weights[index])
        else:
            args.append(_DEFAULT_WEIGHTS.get(piece.converter, 100))
        index += 1
    return "".join(regex), statics, args, index, checks


@lru_cache(maxsize=65536)
def precedence_key(text: str) -> tuple[Any, ...]:
    """The cross-service precedence of a template: smaller wins.

    Segment by segment: static beats mixed beats ``int`` beats ``float`` beats ``uuid`` beats
    ``re:`` beats ``str`` beats the rest of the path from a ``path`` parameter on; between two
    such rests, werkzeug's weighting (more static text, then more parameters). The template's
    shape breaks the remaining ties, so the order is total.
    """
    t = parse_template(text)
    out: list[Any] = []
    parts = template_parts(text, STARLETTE)
    for seg, part in zip(t.segments, parts, strict=False):
        if isinstance(part, str):
            out.append((0, ""))
        elif part.final:
            out.append((7, part.weight))
            break
        else:
            assert not isinstance(seg, str)
            out.append((seg.rank, seg.key))
    return (tuple(out), t.shape)


# --------------------------------------------------------------------------- the machine


class _State:
    __slots__ = ("direct", "dynamic", "rules", "static")

    def __init__(self) -> None:
        self.static: dict[str, _State] = {}
        self.dynamic: list[tuple[Part, _State]] = []
        self.rules: list[Any] = []
        # method -> the first rule here allowing it, when the hot path may answer with it
        # (None: it may not); "*" for methods only "any method" rules allow
        self.direct: dict[str, Any] = {}


def host_ok(pattern: str | None, host: str | None) -> bool:
    """Whether a route bound to Host ``pattern`` matches the request's ``host``."""
    if pattern is None:
        return True
    if host is None:
        return False
    host = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
    return parse_template(pattern, host=True).regex.fullmatch(host) is not None


Found = tuple[Any, tuple[str, ...], bool]  # (entry, raw values, redirected)


class ServiceMatcher:
    """One service's compiled router. ``entries`` are its routes and shadows in the app's order.

    :meth:`match` returns ``(entry, raw_values, redirected)`` for the entry the app dispatches
    the request to (``redirected``: the app answers with a redirect to a path that reaches
    ``entry``), or ``None``, adding to ``allowed`` the methods of routes matching the path only.
    """

    __slots__ = ("entries", "flavor", "has_hosts", "root")

    def __init__(self, flavor: str, entries: Iterable[Any]) -> None:
        self.flavor = flavor
        self.entries: tuple[Any, ...] = tuple(sorted(entries, key=lambda e: e.order))
        self.root = _State()
        self.has_hosts = any(e.host is not None for e in self.entries)
        for entry in self.entries:
            self._add(entry)
        stack = [self.root]
        while stack:
            state = stack.pop()
            state.dynamic.sort(key=lambda pd: pd[0].weight)  # stable: ties keep the rule order
            stack.extend(state.static.values())
            stack.extend(s for _, s in state.dynamic)
        if flavor == STARLETTE:
            self._mark_clean()
        for entry in self.entries:
            direct = (
                (flavor == WERKZEUG or entry.clean)
                and not entry.shadow
                and entry.host is None
                and not entry.websocket
            )
            object.__setattr__(entry, "direct", direct)
        stack = [self.root]
        while stack:
            state = stack.pop()
            stack.extend(state.static.values())
            stack.extend(s for _, s in state.dynamic)
            methods = {m for r in state.rules for m in r.methods}
            for method in methods:
                first = next(
                    r for r in state.rules if method in r.methods or ANY_METHOD in r.methods
                )
                state.direct[method] = first if first.direct else None

    def _add(self, entry: Any) -> None:
        state = self.root
        for part in self.parts_of(
            entry.template.text, getattr(entry, "weights", None), getattr(entry, "patterns", None)
        ):
            if isinstance(part, str):
                nxt = state.static.get(part)
                if nxt is None:
                    nxt = state.static[part] = _State()
            else:
                for test, candidate in state.dynamic:
                    if test.key == part.key:
                        nxt = candidate
                        break
                else:
                    nxt = _State()
                    state.dynamic.append((part, nxt))
            state = nxt
        state.rules.append(entry)

    def rebind(self, mapping: dict[int, Any]) -> ServiceMatcher:
        """The same machine with some entries replaced (``id(old) -> new``: the same routes
        with another rank); this matcher is unchanged. Costs one copy of the states, no
        compilation."""
        new = object.__new__(ServiceMatcher)
        new.flavor = self.flavor
        new.has_hosts = self.has_hosts
        new.entries = tuple(mapping.get(id(e), e) for e in self.entries)
        new.root = _State()
        stack = [(self.root, new.root)]
        while stack:
            src, dst = stack.pop()
            dst.rules = [mapping.get(id(e), e) for e in src.rules]
            dst.direct = {
                m: None if e is None else mapping.get(id(e), e) for m, e in src.direct.items()
            }
            for text, child in src.static.items():
                copy = dst.static[text] = _State()
                stack.append((child, copy))
            for part, child in src.dynamic:
                copy = _State()
                dst.dynamic.append((part, copy))
                stack.append((child, copy))
        return new

    def parts_of(
        self,
        text: str,
        weights: tuple[int, ...] | None = None,
        patterns: tuple[str | None, ...] | None = None,
    ) -> tuple[str | Part, ...]:
        if self.flavor != WERKZEUG:
            return template_parts(text, self.flavor)
        return template_parts(text, self.flavor, weights, patterns)

    # ------------------------------------------------------------------ matching

    def fast(self, method: str, segs: list[str]) -> tuple[Any, tuple[str, ...]] | None:
        """The hot path: the app's answer when the search's first find is certainly it.

        ``segs`` is ``path.split("/")`` of a path that does not start with ``//``. Returns
        ``None`` when a full :meth:`match` is needed (no find, a shadow, a Host-bound route, or
        an ordered route that an earlier one may take paths from).
        """
        return fast_walk(self.root, segs, 1, method)

    def after_first(self, first: str) -> _State | None:
        """The state a path whose first segment is the static ``first`` reaches (for
        :func:`fast_walk` from segment 2: the search's first choice is that static transition)."""
        return self.root.static.get(first)

    def match(
        self,
        method: str,
        path: str,
        host: str | None,
        allowed: set[str] | None,
        websocket: bool = False,
    ) -> Found | None:
        """The entry the app dispatches ``method path`` to (``path`` decoded, no query).

        ``websocket``: a WebSocket handshake, which only WebSocket routes (and mounts) take; an
        HTTP request never reaches a WebSocket route, in either framework.
        """
        if self.flavor == WERKZEUG:
            return self._werkzeug(method, path, host, allowed, websocket)
        if websocket:
            return self._starlette_full(method, path, host, allowed, True)
        return self._starlette(method, path, host, allowed)

    # -- werkzeug

    def _werkzeug(
        self, method: str, path: str, host: str | None, allowed: set[str] | None, ws: bool
    ) -> Found | None:
        if path[:2] == "//":
            path = "/" + path.lstrip("/")  # MapAdapter.match drops leading slashes
        segs = path.split("/")
        first = None if ws else _first(self.root, segs)  # the search's first find, no backtracking
        if first is not None:
            for rule in first[0]:
                ms = rule.methods
                if (
                    (method in ms or ANY_METHOD in ms)
                    and not rule.websocket
                    and (rule.host is None or host_ok(rule.host, host))
                ):
                    return rule, first[1], False
        found = _wz_walk(self.root, segs, method, host, allowed, ws)
        if found is None and "//" in path:
            merged = re.sub("/{2,}", "/", path)
            found = _wz_walk(self.root, merged.split("/"), method, host, allowed, ws)
            if found is not None:
                return found[0], found[1], True
        return found

    # -- starlette

    def _starlette(
        self, method: str, path: str, host: str | None, allowed: set[str] | None
    ) -> Found | None:
        if path[-1:] != "\n":
            first = _first(self.root, path.split("/"))
            if first is not None:
                for entry in first[0]:
                    ms = entry.methods
                    if (
                        (method in ms or ANY_METHOD in ms)
                        and not entry.websocket
                        and (entry.host is None or host_ok(entry.host, host))
                    ):
                        if entry.clean:
                            return entry, first[1], False
                        break
        return self._starlette_full(method, path, host, allowed)

    def _candidates(self, path: str) -> list[tuple[Any, tuple[str, ...]]]:
        """Every entry whose regex matches ``path``, in declaration order."""
        if path[-1:] == "\n":  # Starlette's `$` matches before a final newline: scan the regexes
            out = []
            for entry in self.entries:
                regex = entry.template.regex
                m = regex.fullmatch(path) or regex.fullmatch(path[:-1])
                if m is not None:
                    out.append((entry, tuple(m.groups())))
            return out
        found = _all(self.root, path.split("/"))
        found.sort(key=lambda ev: ev[0].order)
        return found

    def _starlette_full(
        self,
        method: str,
        path: str,
        host: str | None,
        allowed: set[str] | None,
        ws: bool = False,
    ) -> Found | None:
        partial: list[tuple[int, Iterable[str]]] = []
        for entry, values in self._candidates(path):
            if entry.host is not None and not host_ok(entry.host, host):
                continue
            if entry.websocket != ws and not (entry.shadow and entry.reason == "mount"):
                continue  # a Route takes HTTP only, a WebSocketRoute WebSockets only
            ms = entry.methods
            if method not in ms and ANY_METHOD not in ms:
                partial.append((entry.order, ms))  # Match.PARTIAL: a 405 unless a FULL follows
                continue
            if not (entry.shadow and entry.reason == "mount"):
                return entry, values, False
            # a mount: its sub-app answers, with 405 (its own routes that match the path only),
            # its own slash redirect, or 404 (the barrier)
            inside = {m for order, mm in partial if order >= entry.start for m in mm}
            partial = [(entry.order, inside)] if inside else []
            if not partial and not ws and path != entry.template.static_prefix:
                got = self._slash_redirect(method, path, host, entry.order, entry.start)
                if isinstance(got, set):
                    partial = [(entry.order, got)]
                elif got is not None:
                    return got
            if not partial:
                return entry, values, False
            break
        else:
            if not partial and not ws and path != "/":  # redirect_slashes: HTTP only
                got = self._slash_redirect(method, path, host, None)
                if not isinstance(got, set):
                    return got
                partial = [(0, got)]
        if allowed is not None:
            for _, mm in partial:
                allowed.update(mm)
        return None

    def _slash_redirect(
        self, method: str, path: str, host: str | None, before: int | None, since: int = -1
    ) -> Found | set[str] | None:
        """Starlette's ``redirect_slashes``: the entry the redirected request reaches, or the
        methods it allows there (a redirect to a 405), or ``None`` (no redirect)."""
        target = path.rstrip("/") if path.endswith("/") else path + "/"
        methods: set[str] = set()
        for entry, values in self._candidates(target):
            if before is not None and entry.order >= before:
                break
            if entry.order < since:
                continue  # not the mount's own route
            if entry.websocket or (entry.host is not None and not host_ok(entry.host, host)):
                continue  # a WebSocketRoute never matches an HTTP request
            if method in entry.methods or ANY_METHOD in entry.methods:
                return entry, values, True
            methods.update(entry.methods)
        return methods or None

    def _mark_clean(self) -> None:
        """An entry is clean when no earlier entry with a common method may match its paths.

        The earlier *published* routes that may are also kept on the entry (``shadows``, the
        name the node-local renderer reads; :meth:`RoutingTable.preceding` has them all).
        """
        for entry in self.entries:
            earlier = [
                other
                for other in self.overlapping(entry.template.text)
                if other.order < entry.order and _methods_meet(other.methods, entry.methods)
            ]
            object.__setattr__(entry, "clean", not earlier)
            object.__setattr__(entry, "shadows", tuple(o for o in earlier if not o.shadow))

    # ------------------------------------------------------------------ overlap

    def overlapping(self, text: str) -> list[Any]:
        """Entries whose templates may match a path that ``text`` matches (conservative)."""
        parts = self.parts_of(text)
        out: list[Any] = []
        seen: set[int] = set()
        stack: list[tuple[_State, int]] = [(self.root, 0)]
        n = len(parts)
        while stack:
            state, i = stack.pop()
            key = id(state) * 4096 + i
            if key in seen:
                continue
            seen.add(key)
            if i == n:
                out.extend(state.rules)
                continue
            part = parts[i]
            if isinstance(part, Part) and part.final:
                out.extend(_subtree(state))  # anything below may share a path with the rest
                continue
            if isinstance(part, str):
                child = state.static.get(part)
                if child is not None:
                    stack.append((child, i + 1))
                for test, child in state.dynamic:
                    if test.final:
                        out.extend(_subtree(child))
                    elif test.fullmatch(part) is not None:
                        stack.append((child, i + 1))
            else:
                for text_, child in state.static.items():
                    if part.fullmatch(text_) is not None:
                        stack.append((child, i + 1))
                for test, child in state.dynamic:
                    if test.final:
                        out.extend(_subtree(child))
                    else:
                        stack.append((child, i + 1))
        unique: dict[int, Any] = {}
        for entry in out:
            unique.setdefault(id(entry), entry)
        return sorted(unique.values(), key=lambda e: e.order)

    def order_key(self, entry: Any) -> tuple[Any, ...]:
        """Where the app's own search meets ``entry``: smaller is tried first."""
        if self.flavor == STARLETTE:
            return (entry.order,)
        key: list[Any] = []
        state = self.root
        for part in self.parts_of(
            entry.template.text, getattr(entry, "weights", None), getattr(entry, "patterns", None)
        ):
            if isinstance(part, str):
                key.append(-1)
                state = state.static[part]
            else:
                for k, (test, child) in enumerate(state.dynamic):
                    if test.key == part.key:
                        key.append(k)
                        state = child
                        break
        key.append(1_000_000 + state.rules.index(entry))
        return tuple(key)


def _methods_meet(a: frozenset[str], b: frozenset[str]) -> bool:
    return ANY_METHOD in a or ANY_METHOD in b or not a.isdisjoint(b)


def _subtree(state: _State) -> list[Any]:
    out: list[Any] = []
    stack = [state]
    while stack:
        s = stack.pop()
        out.extend(s.rules)
        stack.extend(s.static.values())
        stack.extend(c for _, c in s.dynamic)
    return out


def _step(part: Part, segs: list[str], i: int, n: int) -> tuple[int, tuple[str, ...]] | None:
    """Match one dynamic transition at ``segs[i]``: the next index and the values, or ``None``."""
    if part.final:
        m = part.fullmatch("/".join(segs[i:]))
        if m is None:
            return None
        groups = m.groups()
        if part.suffixed:
            # werkzeug: a trailing "/" swallowed by the suffix goes on as a last empty segment
            return (n - 1 if groups[-1] == "/" else n), groups[:-1]
        return n, groups
    m = part.fullmatch(segs[i])
    if m is None:
        return None
    return i + 1, m.groups()


def fast_walk(
    state: _State, segs: list[str], i: int, method: str
) -> tuple[Any, tuple[str, ...]] | None:
    """:meth:`ServiceMatcher.fast` from ``state`` at ``segs[i]`` (the request hot path)."""
    n = len(segs)
    values: tuple[str, ...] = ()
    while i < n:
        child = state.static.get(segs[i])
        if child is not None:
            state = child
            i += 1
            continue
        for part, dchild in state.dynamic:
            if part.final:
                if part.suffixed:
                    return None
                m = part.fullmatch("/".join(segs[i:]))
                if m is None:
                    continue
                values += m.groups()
                state = dchild
                i = n
                break
            m = part.fullmatch(segs[i])
            if m is not None:
                values += m.groups()
                state = dchild
                i += 1
                break
        else:
            return None
    direct = state.direct
    rule = direct.get(method, direct) if direct else None
    if rule is direct:
        rule = direct.get(ANY_METHOD)
    return None if rule is None else (rule, values)


def _first(root: _State, segs: list[str]) -> tuple[list[Any], tuple[str, ...]] | None:
    """The first terminal a depth-first search reaches, without backtracking (or ``None``)."""
    n = len(segs)
    state = root
    values: tuple[str, ...] = ()
    i = 1
    while i < n:
        child = state.static.get(segs[i])
        if child is not None:
            state = child
            i += 1
            continue
        for part, dchild in state.dynamic:
            if part.final:
                if part.suffixed:
                    return None
                m = part.fullmatch("/".join(segs[i:]))
                if m is None:
                    continue
                values += m.groups()
                state = dchild
                i = n
                break
            m = part.fullmatch(segs[i])
            if m is not None:
                values += m.groups()
                state = dchild
                i += 1
                break
        else:
            return None
    return (state.rules, values) if state.rules else None


def _all(root: _State, segs: list[str]) -> list[tuple[Any, tuple[str, ...]]]:
    """Every (entry, values) whose template matches ``segs`` (Starlette's regexes)."""
    n = len(segs)
    out: list[tuple[Any, tuple[str, ...]]] = []
    stack: list[tuple[_State, int, tuple[str, ...]]] = [(root, 1, ())]
    while stack:
        state, i, values = stack.pop()
        if i == n:
            out.extend((e, values) for e in state.rules)
            continue
        seg = segs[i]
        child = state.static.get(seg)
        if child is not None:
            stack.append((child, i + 1, values))
        for part, dchild in state.dynamic:
            step = _step(part, segs, i, n)
            if step is not None:
                stack.append((dchild, step[0], values + step[1]))
    return out


def _wz_walk(
    root: _State,
    segs: list[str],
    method: str,
    host: str | None,
    allowed: set[str] | None,
    ws: bool = False,
) -> Found | None:
    """werkzeug's ``StateMachineMatcher.match`` ``_match``, as a loop over an explicit stack."""
    len(segs)
    # frames: (state, segs, i, values, k); k == -1: the static transition is still to try,
    # else the index of the next dynamic transition to try
    stack: list[tuple[_State, list[str], int, tuple[str, ...], int]] = [(root, segs, 1, (), -1)]
    while stack:
        state, ss, i, values, k = stack.pop()
        m = len(ss)
        if i == m:
            for rule in state.rules:
                ms = rule.methods
                if rule.websocket != ws or (rule.host is not None and not host_ok(rule.host, host)):
                    continue  # werkzeug: a WebSocket rule only matches a WebSocket request
                if method in ms or ANY_METHOD in ms:
                    return rule, values, False
                if allowed is not None:
                    allowed.update(ms)
            slash = state.static.get("")
            if slash is not None:
                for rule in slash.rules:
                    ms = rule.methods
                    if (
                        (method in ms or ANY_METHOD in ms)
                        and rule.websocket == ws
                        and host_ok(rule.host, host)
                    ):
                        # strict_slashes: the app redirects to path/; else it serves path
                        return rule, values, rule.strict_slashes
            continue
        if k == -1:
            stack.append((state, ss, i, values, 0))
            child = state.static.get(ss[i])
            if child is not None:
                stack.append((child, ss, i + 1, values, -1))
            continue
        dynamic = state.dynamic
        while k < len(dynamic):
            part, dchild = dynamic[k]
            k += 1
            if part.final:
                mm = part.fullmatch("/".join(ss[i:]))
                if mm is None:
                    continue
                groups = mm.groups()
                if part.suffixed:
                    rest = [""] if groups[-1] == "/" else []
                    groups = groups[:-1]
                else:
                    rest = []
                stack.append((state, ss, i, values, k))
                stack.append((dchild, ["", *rest], 1, values + groups, -1))
                break
            mm = part.fullmatch(ss[i])
            if mm is not None:
                stack.append((state, ss, i, values, k))
                stack.append((dchild, ss, i + 1, values + mm.groups(), -1))
                break
        else:
            if i == m - 1 and ss[i] == "":
                # only a trailing slash is left: rules without strict_slashes match here
                for rule in state.rules:
                    if (
                        rule.strict_slashes
                        or rule.websocket != ws
                        or (rule.host is not None and not host_ok(rule.host, host))
                    ):
                        continue
                    ms = rule.methods
                    if method in ms or ANY_METHOD in ms:
                        return rule, values, False
                    if allowed is not None:
                        allowed.update(ms)
    return None
