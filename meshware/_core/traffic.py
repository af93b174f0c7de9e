"""Operator controls kept beside the instance records: weight overrides and the live edges.

Design notes
------------
Keys (next to ``<prefix>/v1/instances/``, DESIGN's contract for new kinds of keys)::

    <prefix>/v1/overrides/weights/<service>                     {"weight": N}  every instance
    <prefix>/v1/overrides/weights/<service>/version/<version>   {"weight": N}  one version
    <prefix>/v1/overrides/weights/<service>/instance/<id>       {"weight": N}  one instance
    <prefix>/v1/edges/<edge-id>                                 {...}  under the edge's lease

An override replaces the weight an instance publishes, without redeploying it (``meshware
weight``): the most specific one wins (instance, then version, then service). An instance is
matched by any of its record ids (each worker of a server has one). The edges key their own
presence under a lease, so every edge knows how many share a mesh-wide rate.

:meth:`TrafficState.split` takes every registry update: the controls it keeps, the rest (the
instance records and any key it does not know) goes on to the routing table unchanged. Parsing
is bounded and total: a value that is not a small JSON object with a whole ``weight`` 0-10000 is
left out and listed in :attr:`TrafficState.rejected`; nothing raises.

Pure and immutable: each update gives a new state, swapped by reference like the table.
:attr:`TrafficState.weight_of` is ``None`` while there is no override (the balancer's fast
path), else one function object per state (the client caches its endpoint groups by it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .table import Delete, Instance, Reset, Update, Upsert

__all__ = [
    "MAX_CONTROL_BYTES",
    "MAX_EDGES",
    "TrafficState",
    "edge_key",
    "edges_prefix",
    "weight_override_key",
    "weights_prefix",
]

MAX_CONTROL_BYTES = 4096  # a control value is a small JSON object
MAX_EDGES = 1024  # edges counted beyond this are ignored (the share only gets smaller)


def weights_prefix(prefix: str) -> str:
    return prefix.rstrip("/") + "/v1/overrides/weights/"


def edges_prefix(prefix: str) -> str:
    return prefix.rstrip("/") + "/v1/edges/"


def weight_override_key(
    prefix: str, service: str, *, instance: str | None = None, version: str | None = None
) -> str:
    """The key of a weight override (at most one of ``instance`` / ``version``)."""
    base = weights_prefix(prefix) + service
    if instance is not None:
        return f"{base}/instance/{instance}"
    if version is not None:
        return f"{base}/version/{version}"
    return base


def edge_key(prefix: str, edge_id: str) -> str:
    return edges_prefix(prefix) + edge_id


Scope = tuple[str, str, str]  # (service, "service" | "version" | "instance", name)


def _parse_weight(value: bytes) -> int | str:
    if len(value) > MAX_CONTROL_BYTES:
        return f"more than {MAX_CONTROL_BYTES} bytes"
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "not JSON"
    weight = data.get("weight") if isinstance(data, dict) else None
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10_000:
        return 'expected {"weight": N} with N a whole number 0-10000'
    return weight


def _scope(rest: str) -> Scope | None:
    parts = rest.split("/")
    if len(parts) == 1 and parts[0]:
        return (parts[0], "service", "")
    if len(parts) == 3 and parts[0] and parts[1] in ("version", "instance") and parts[2]:
        return (parts[0], parts[1], parts[2])
    return None


class TrafficState:
    """Weight overrides and live edges as of one registry revision (immutable)."""

    __slots__ = ("_by_scope", "_edges", "_prefix", "rejected", "weight_of")

    def __init__(
        self,
        prefix: str,
        by_scope: Mapping[Scope, int] | None = None,
        edges: frozenset[str] = frozenset(),
        rejected: Mapping[str, str] | None = None,
    ) -> None:
        self._prefix = prefix.rstrip("/")
        self._by_scope: dict[Scope, int] = dict(by_scope or {})
        self._edges = edges
        self.rejected: dict[str, str] = dict(rejected or {})
        self.weight_of: Callable[[Instance], int] | None = (
            self._make_weight_of() if self._by_scope else None
        )

    @classmethod
    def empty(cls, prefix: str = "/meshware") -> TrafficState:
        return cls(prefix)

    # ------------------------------------------------------------------ reading

    @property
    def edges(self) -> int:
        """How many edges are live (at least 1: the one asking counts itself)."""
        return max(1, min(len(self._edges), MAX_EDGES))

    @property
    def edge_ids(self) -> frozenset[str]:
        return self._edges

    @property
    def overrides(self) -> dict[Scope, int]:
        """``{(service, kind, name): weight}`` (kind ``service``, ``version`` or ``instance``)."""
        return dict(self._by_scope)

    def _make_weight_of(self) -> Callable[[Instance], int]:
        by_scope = self._by_scope

        def weight_of(instance: Instance) -> int:
            service = instance.service
            for record in instance.records:
                w = by_scope.get((service, "instance", record))
                if w is not None:
                    return w
            if instance.version is not None:
                w = by_scope.get((service, "version", instance.version))
                if w is not None:
                    return w
            w = by_scope.get((service, "service", ""))
            return instance.weight if w is None else w

        return weight_of

    # ------------------------------------------------------------------ updating

    def owns(self, key: str) -> bool:
        """Is ``key`` a control this state keeps (not for the routing table)?"""
        p = self._prefix
        return key.startswith((p + "/v1/overrides/", p + "/v1/edges/"))

    def split(self, update: Update) -> tuple[TrafficState, Update | None]:
        """This update applied to the controls, and what is left for the table (or None)."""
        if isinstance(update, Reset):
            mine = [e for e in update.entries if self.owns(e.key)]
            if not mine and not self._by_scope and not self._edges and not self.rejected:
                return self, update
            state = TrafficState(self._prefix)
            for entry in mine:
                state = state._put(entry.key, entry.value)
            rest = tuple(e for e in update.entries if not self.owns(e.key))
            return state, Reset(rest, update.revision)
        key = update.key if isinstance(update, Delete) else update.entry.key
        if not self.owns(key):
            return self, update
        if isinstance(update, Upsert):
            return self._put(key, update.entry.value), None
        return self._delete(key), None

    def _put(self, key: str, value: bytes) -> TrafficState:
        rejected = dict(self.rejected)
        rejected.pop(key, None)
        wp = weights_prefix(self._prefix)
        if key.startswith(wp):
            scope = _scope(key[len(wp) :])
            weight = _parse_weight(value) if scope is not None else "bad key"
            if scope is None or isinstance(weight, str):
                rejected[key] = f"weight override at {key[:200]!r}: " + (
                    "key is not <service>[/version/V | /instance/ID]"
                    if scope is None
                    else str(weight)
                )
                return TrafficState(self._prefix, self._by_scope, self._edges, rejected)
            by_scope = dict(self._by_scope)
            by_scope[scope] = weight
            return TrafficState(self._prefix, by_scope, self._edges, rejected)
        ep = edges_prefix(self._prefix)
        if key.startswith(ep) and "/" not in key[len(ep) :] and len(key) - len(ep) <= 200:
            return TrafficState(self._prefix, self._by_scope, self._edges | {key}, rejected)
        return TrafficState(
            self._prefix, self._by_scope, self._edges, rejected
        )  # unknown: kept out

    def _delete(self, key: str) -> TrafficState:
        rejected = dict(self.rejected)
        rejected.pop(key, None)
        wp = weights_prefix(self._prefix)
        by_scope = self._by_scope
        if key.startswith(wp):
            scope = _scope(key[len(wp) :])
            if scope is not None and scope in by_scope:
                by_scope = dict(by_scope)
                del by_scope[scope]
        return TrafficState(self._prefix, by_scope, self._edges - {key}, rejected)

    def __repr__(self) -> str:
        return f"<TrafficState overrides={len(self._by_scope)} edges={len(self._edges)}>"


def describe(state: TrafficState) -> list[dict[str, Any]]:
    """The overrides as rows for people (``meshware weight``)."""
    return [
        {"service": s, "scope": kind, "name": name, "weight": w}
        for (s, kind, name), w in sorted(state.overrides.items())
    ]
