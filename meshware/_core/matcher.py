"""A persistent segment trie that maps request paths to template claims.

Design notes
------------
* **Never scan.** A linear regex scan costs 41 µs at 1,000 routes and 418 µs at 10,000 (DESIGN §5);
  the trie walks one node per path segment: a dict lookup for static segments, then the node's
  dynamic children in precedence order (see :mod:`.templates` for the ranks), then a ``path``
  child that may swallow several segments. Backtracking makes the first match in precedence order
  win, which is what werkzeug's state machine does (static transitions before dynamic ones).
* **Terminals are opaque.** The trie stores one value per template *shape* and knows nothing of
  methods, services or conflicts; the caller passes ``accept(value, params)`` which returns a
  result or ``None`` to keep looking (a path that matches but whose method is not allowed must
  fall through to lower-precedence templates, as in both werkzeug and Starlette).
* **Persistent.** :meth:`Trie.set` returns a new trie that shares every untouched node with the
  old one (path copying): the control plane builds the next table while requests keep reading the
  current one, and one etcd event costs work proportional to the templates it touches, not to
  the table's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .templates import PATH_RANK, SegmentMatcher, Template

__all__ = ["Trie"]

V = TypeVar("V")
R = TypeVar("R")
A = TypeVar("A")


class _Node(Generic[V]):
    __slots__ = ("dynamic", "path", "static", "terminal")

    def __init__(self) -> None:
        self.static: dict[str, _Node[V]] = {}
        # (matcher, child) sorted by (rank, key); the path child is kept apart
        self.dynamic: tuple[tuple[SegmentMatcher, _Node[V]], ...] = ()
        self.path: tuple[SegmentMatcher, _Node[V]] | None = None
        self.terminal: V | None = None

    def copy(self) -> _Node[V]:
        new: _Node[V] = _Node()
        new.static = self.static  # copied on write by the caller
        new.dynamic = self.dynamic
        new.path = self.path
        new.terminal = self.terminal
        return new

    def is_empty(self) -> bool:
        return self.terminal is None and not self.static and not self.dynamic and self.path is None

    def is_leaf(self) -> bool:
        return not self.static and not self.dynamic and self.path is None


class Trie(Generic[V]):
    """An immutable map from template shapes to values, searchable by request path."""

    __slots__ = ("_root", "_size")

    def __init__(self, _root: _Node[V] | None = None, _size: int = 0) -> None:
        self._root: _Node[V] = _root if _root is not None else _Node()
        self._size = _size

    def __len__(self) -> int:
        return self._size

    def get(self, template: Template) -> V | None:
        """The value stored for this template's shape, or ``None``."""
        node: _Node[V] | None = self._root
        for seg in template.segments:
            if node is None:
                return None
            node = _child(node, seg)
        return node.terminal if node is not None else None

    def set(self, template: Template, value: V | None) -> Trie[V]:
        """A new trie with ``value`` stored for the template's shape (``None`` removes it)."""
        old = self.get(template)
        root = _set(self._root, template.segments, 0, value)
        size = (
            self._size + (old is None and value is not None) - (old is not None and value is None)
        )
        return Trie(root if root is not None else _Node(), size)

    def match(
        self, path: str, accept: Callable[[V, tuple[Any, ...], A], R | None], arg: A
    ) -> R | None:
        """Walk a decoded path (``/a/b``); the first ``accept`` result in precedence order.

        ``accept(value, params, arg)`` gets the terminal value, the raw (unconverted) parameter
        strings in template order, and ``arg`` (passed through: no closure per call).
        """
        segs = path.split("/")
        hit = self.first(segs)
        if hit is not None:
            found = accept(hit[0], hit[1], arg)
            if found is not None:
                return found
        return self.search(segs, accept, arg)

    def first(self, segs: list[str]) -> tuple[V, tuple[Any, ...]] | None:
        """The terminal that the depth-first search reaches first, and its raw values.

        ``segs`` is ``path.split("/")``. This follows the search's first choice at every level
        in a loop (no recursion, no backtracking): if the caller accepts the terminal, it is the
        search's answer; otherwise the caller runs :meth:`search`, which repeats this work.
        """
        n = len(segs)
        node = self._root
        values: tuple[Any, ...] = ()
        i = 1
        while i < n:
            seg = segs[i]
            child = node.static.get(seg)
            if child is None:
                for matcher, dchild in node.dynamic:
                    m = matcher.fullmatch(seg)
                    if m is not None:
                        child = dchild
                        values += m.groups()
                        break
                else:
                    path_child = node.path
                    if path_child is None or not path_child[1].is_leaf():
                        return None
                    node = path_child[1]
                    values = (*values, "/".join(segs[i:]))
                    break
            node = child
            i += 1
        terminal = node.terminal
        return None if terminal is None else (terminal, values)

    def search(
        self, segs: list[str], accept: Callable[[V, tuple[Any, ...], A], R | None], arg: A
    ) -> R | None:
        """The full backtracking search: the first ``accept`` result in precedence order."""
        return _walk(self._root, segs, 1, len(segs), (), accept, arg)

    def values(self) -> Iterator[V]:
        """Every stored value (in no particular order)."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.terminal is not None:
                yield node.terminal
            stack.extend(node.static.values())
            stack.extend(child for _, child in node.dynamic)
            if node.path is not None:
                stack.append(node.path[1])


def _child(node: _Node[V], seg: str | SegmentMatcher) -> _Node[V] | None:
    if isinstance(seg, str):
        return node.static.get(seg)
    if seg.rank == PATH_RANK:
        return node.path[1] if node.path is not None else None
    for matcher, child in node.dynamic:
        if matcher.key == seg.key:
            return child
    return None


def _set(
    node: _Node[V], segments: tuple[str | SegmentMatcher, ...], i: int, value: V | None
) -> _Node[V] | None:
    new = node.copy()
    if i == len(segments):
        new.terminal = value
    else:
        seg = segments[i]
        existing = _child(node, seg)
        if existing is None and value is None:
            return node  # nothing to remove
        child = _set(existing if existing is not None else _Node(), segments, i + 1, value)
        if isinstance(seg, str):
            new.static = dict(node.static)
            if child is None:
                new.static.pop(seg, None)
            else:
                new.static[seg] = child
        elif seg.rank == PATH_RANK:
            new.path = (seg, child) if child is not None else None
        else:
            kept = [(m, c) for m, c in node.dynamic if m.key != seg.key]
            if child is not None:
                kept.append((seg, child))
            kept.sort(key=lambda mc: (mc[0].rank, mc[0].key))
            new.dynamic = tuple(kept)
    return None if new.is_empty() else new


def _walk(
    node: _Node[V],
    segs: list[str],
    i: int,
    n: int,
    values: tuple[Any, ...],
    accept: Callable[[V, tuple[Any, ...], A], R | None],
    arg: A,
) -> R | None:
    if i == n:
        if node.terminal is not None:
            return accept(node.terminal, values, arg)
        return None
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        found = _walk(child, segs, i + 1, n, values, accept, arg)
        if found is not None:
            return found
    for matcher, dchild in node.dynamic:
        m = matcher.fullmatch(seg)
        if m is not None:
            found = _walk(dchild, segs, i + 1, n, values + m.groups(), accept, arg)
            if found is not None:
                return found
    if node.path is not None:
        pchild = node.path[1]
        if pchild.is_leaf():
            # the common case, `/static/{p:path}`: swallow the rest
            if pchild.terminal is not None:
                return accept(pchild.terminal, (*values, "/".join(segs[i:])), arg)
            return None
        # greedy like Starlette's `.*`: the longest run of segments first
        for j in range(n, i, -1):
            found = _walk(pchild, segs, j, n, (*values, "/".join(segs[i:j])), accept, arg)
            if found is not None:
                return found
    return None
