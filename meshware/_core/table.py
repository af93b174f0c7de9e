"""The routing table: an immutable snapshot of who serves which route.

Design notes
------------
* **Immutable, swapped by reference.** A :class:`RoutingTable` never changes. The control plane
  (a registry watch) calls :meth:`RoutingTable.apply` with each update and swaps one reference;
  requests read whichever table they got, without locks, from threads and tasks alike.
* **Incremental.** An update touches one instance record, so one service. ``apply`` rebuilds
  that service's view (its routes, their endpoints, their conflict rank) and re-sorts only the
  trie terminals whose claims changed; everything else is shared with the previous table. One
  event on a 10,000-route table costs a few dict copies, not a rebuild (see ``bench/``).
* **Membership by route.** The instances serving a route are exactly those whose record
  declares it: during a rolling deploy where v2 adds a route, only v2 instances get it. Records
  that share a URL (workers of one server) are one :class:`Instance`.
* **Precedence, conflicts, app order.** The trie gives static > typed > ``str`` > ``path`` per
  segment. When two services claim the same method and template shape, the claim whose oldest
  live registration has the lowest etcd ``create_revision`` wins (then the service name): every
  client computes the same answer from the same records. Within one service whose router is
  *ordered* (Starlette: the first declared route that matches wins), a later route is checked
  against the earlier routes of the same service that could overlap it ("shadows"), so meshware
  picks the route the app itself would.
* **Bad records never break the table.** A record that does not parse is left out and listed in
  :attr:`RoutingTable.rejected` (key → problem); the I/O layer logs each one once.

Pure: no I/O, no clock, no threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from urllib.parse import unquote

from .._errors import BadRecord, NoEndpointAvailable, NoRouteError
from .matcher import Trie
from .records import ANY_METHOD, InstanceRecord, RouteSpec, split_instance_key
from .templates import SegmentMatcher, Template, parse_template

__all__ = [
    "Conflict",
    "Delete",
    "Entry",
    "Instance",
    "Reset",
    "Resolution",
    "Route",
    "RoutingTable",
    "Update",
    "Upsert",
]


# --------------------------------------------------------------------------- updates (input)


@dataclass(frozen=True, slots=True)
class Entry:
    """One raw key/value from the registry, with etcd's revisions.

    ``lease`` is the key's lease (0: none, or not known). ``decoded`` is set by the route-set
    assembler (:mod:`meshware._core.routesets`) when it has already read the record: the record
    itself, or why it cannot be used; the table then uses it instead of decoding ``value``.
    """

    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0
    decoded: InstanceRecord | str | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    """The full contents of the prefix at ``revision`` (a snapshot, or a re-list)."""

    entries: tuple[Entry, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class Upsert:
    """A record was created or changed."""

    entry: Entry
    revision: int


@dataclass(frozen=True, slots=True)
class Delete:
    """A record was deleted (or its lease expired)."""

    key: str
    revision: int


Update = Reset | Upsert | Delete


# --------------------------------------------------------------------------- the table (output)


@dataclass(frozen=True, slots=True)
class Instance:
    """One reachable instance (a base URL) of a service.

    ``records`` are the instance ids publishing this URL (several workers of one server); the
    instance is ``serving`` while any of them is.
    """

    service: str
    url: str
    state: str
    records: tuple[str, ...]
    zone: str | None = None
    weight: int = 100
    version: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        return self.state == "serving"


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One service's claim on one template.

    ``spec`` holds the route's published metadata (name, public, policy) taken from the newest
    record that declares it; ``methods`` is the union over the service's instances.
    ``shadows`` are earlier routes of the same *ordered* service that may match the same paths.
    """

    service: str
    template: Template
    methods: frozenset[str]
    spec: RouteSpec
    rank: tuple[int, str]
    order: int
    ordered: bool = False  # the app's router takes the first declared match (Starlette)
    route_id: str = ""  # unique within the service: template and methods
    shadows: tuple[Route, ...] = ()
    names: tuple[str, ...] = ()
    key: str = ""
    converters: tuple[Callable[[str], Any] | None, ...] | None = None
    convert1: Callable[[str], Any] | None = None  # the first parameter's converter

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", self.template.param_names)
        funcs = tuple(p.converter_func for p in self.template.params)
        object.__setattr__(self, "converters", funcs if any(funcs) else None)
        object.__setattr__(self, "convert1", funcs[0] if funcs else None)
        if not self.route_id:
            object.__setattr__(
                self, "route_id", f"{self.template.text} {','.join(sorted(self.methods))}"
            )
        object.__setattr__(self, "key", f"{self.service} {self.route_id}")

    @property
    def any_method(self) -> bool:
        return ANY_METHOD in self.methods

    def allows(self, method: str) -> bool:
        return method in self.methods or ANY_METHOD in self.methods

    def _claim(self) -> tuple[Any, ...]:
        return (
            self.methods,
            self.spec,
            self.rank,
            self.order,
            self.ordered,
            tuple((s.route_id, s.spec) for s in self.shadows),
        )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The instances of one service that declare one route."""

    all: tuple[Instance, ...]
    serving: tuple[Instance, ...]


class Resolution(tuple[Route, dict[str, Any], Endpoints]):
    """The answer to "who serves ``METHOD path``?": ``route``, ``params``, ``endpoints``.

    One is built per request, so it is a tuple subclass (built in C) with named properties.
    """

    __slots__ = ()

    route = property(itemgetter(0), doc="The :class:`Route` that matched.")
    params = property(itemgetter(1), doc="The path parameters, converted (``{'id': 42}``).")
    endpoints = property(itemgetter(2), doc="The :class:`Endpoints` declaring the route.")

    def __new__(cls, route: Route, params: dict[str, Any], endpoints: Endpoints) -> Resolution:
        return tuple.__new__(cls, (route, params, endpoints))

    def __repr__(self) -> str:
        return (
            f"Resolution(service={self[0].service!r}, template={self[0].template.text!r}, "
            f"params={self[1]!r})"
        )

    @property
    def service(self) -> str:
        """The name of the service that serves the route."""
        return self[0].service

    @property
    def instances(self) -> tuple[Instance, ...]:
        """The live instances that may take the request (draining ones left out)."""
        return self[2].serving

    def require_instances(self) -> tuple[Instance, ...]:
        """The serving instances, or :class:`~meshware.NoEndpointAvailable` if there are none."""
        endpoints: Endpoints = self[2]
        if endpoints.serving:
            return endpoints.serving
        reason = "all instances are draining" if endpoints.all else "no instance declares it"
        route: Route = self[0]
        raise NoEndpointAvailable(route.service, route.template.text, reason=reason)


_new_resolution = tuple.__new__


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two or more services claim the same method and template shape; ``winner`` gets it."""

    method: str
    shape: str
    winner: Route
    losers: tuple[Route, ...]


class _Terminal:
    """What a trie leaf holds: the claims on one template shape, per method, best first."""

    __slots__ = ("by_method", "first", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        ordered = sorted(routes, key=lambda r: (r.rank, r.service, r.order, r.route_id))
        self.routes: tuple[Route, ...] = tuple(ordered)
        wildcard = tuple(r for r in ordered if r.any_method)
        methods = {m for r in ordered for m in r.methods if m != ANY_METHOD}
        by_method: dict[str, tuple[Route, ...]] = {}
        for m in methods:
            by_method[m] = tuple(r for r in ordered if m in r.methods or r.any_method)
        if wildcard:
            by_method[ANY_METHOD] = wildcard
        self.by_method = by_method
        # the hot path's answer, per method: the best claim not bound to a Host header
        first: dict[str, Route] = {}
        for m, claims in by_method.items():
            for r in claims:
                if r.spec.host is None:
                    first[m] = r
                    break
        self.first = first


@dataclass(frozen=True, slots=True)
class _Service:
    """Everything the table knows about one service, rebuilt when one of its records changes."""

    name: str
    routes: Mapping[str, Route]  # by route id (template and methods)
    endpoints: Mapping[str, Endpoints]  # by route id
    instances: tuple[Instance, ...]


_EMPTY_ENDPOINTS = Endpoints((), ())


class RoutingTable:
    """An immutable routing table. Build one with :meth:`empty` and :meth:`apply`."""

    __slots__ = (
        "_by_shape",
        "_contested",
        "_endpoints",
        "_records",
        "_services",
        "_trie",
        "prefix",
        "rejected",
        "revision",
    )

    def __init__(
        self,
        *,
        prefix: str = "/meshware",
        _records: Mapping[str, tuple[Entry, InstanceRecord]] | None = None,
        _services: Mapping[str, _Service] | None = None,
        _trie: Trie[_Terminal] | None = None,
        _by_shape: Mapping[str, tuple[tuple[str, str], ...]] | None = None,
        _contested: Mapping[str, Template] | None = None,
        _endpoints: Mapping[str, Endpoints] | None = None,
        rejected: Mapping[str, str] | None = None,
        revision: int = 0,
    ) -> None:
        self.prefix = prefix
        self._records: Mapping[str, tuple[Entry, InstanceRecord]] = _records or {}
        self._services: Mapping[str, _Service] = _services or {}
        self._trie: Trie[_Terminal] = _trie if _trie is not None else Trie()
        self._by_shape: Mapping[str, tuple[tuple[str, str], ...]] = _by_shape or {}
        # shapes claimed by more than one service, kept up to date by _rebuild: listing the
        # conflicts never walks the whole trie
        self._contested: Mapping[str, Template] = _contested or {}
        self._endpoints: Mapping[str, Endpoints] = _endpoints or {}
        self.rejected: Mapping[str, str] = rejected or {}
        self.revision = revision

    @classmethod
    def empty(cls, prefix: str = "/meshware") -> RoutingTable:
        """A table with no services, for records under ``prefix``."""
        return cls(prefix=prefix)

    @classmethod
    def from_records(
        cls, records: Iterable[InstanceRecord], *, prefix: str = "/meshware"
    ) -> RoutingTable:
        """A table built directly from records (tests, the fake mesh, benchmarks)."""
        from .records import instance_key

        entries = tuple(
            Entry(instance_key(prefix, r.service, r.instance_id), r.encode(), i + 1, i + 1)
            for i, r in enumerate(records)
        )
        return cls.empty(prefix).apply(Reset(entries, len(entries)))

    # ------------------------------------------------------------------ reading

    def resolve(self, method: str, path: str, *, host: str | None = None) -> Resolution:
        """Resolve a method and path to a route and its instances.

        ``path`` is the request path as sent (percent-encoded is fine; a query string is
        ignored). Raises :class:`~meshware.NoRouteError` when no service publishes a matching
        route. A route with no serving instance still resolves; call
        :meth:`Resolution.require_instances` to get :class:`~meshware.NoEndpointAvailable`.

        This is the request hot path: no locks, no I/O, one loop down the trie in the common
        case.
        """
        method = method.upper()
        if "?" in path or "%" in path or path[:1] != "/":
            path = _clean_path(path)
        segs = path.split("/")
        route: Route | None = None
        values: tuple[Any, ...] = ()
        if host is None:
            hit = self._trie.first(segs)
            if hit is not None:
                first = hit[0].first
                route = first.get(method) or first.get(ANY_METHOD)
                values = hit[1]
        if route is None:
            route, values = self._slow_match(method, path, segs, host)
        if route.shadows:
            return self._shadowed(route, values, method, path)
        if not values:
            params: dict[str, Any] = {}
        elif len(values) == 1:  # the common case, without a loop
            convert = route.convert1
            params = {route.names[0]: values[0] if convert is None else convert(values[0])}
        elif route.converters is None:
            params = dict(zip(route.names, values))  # noqa: B905 - same length by construction
        else:
            params = {}
            for name, convert, value in zip(route.names, route.converters, values):  # noqa: B905
                params[name] = value if convert is None else convert(value)
        return _new_resolution(
            Resolution, (route, params, self._endpoints.get(route.key, _EMPTY_ENDPOINTS))
        )

    def match(
        self, method: str, path: str, *, host: str | None = None
    ) -> Resolution | tuple[str, ...]:
        """Like :meth:`resolve`, but returns the allowed methods (maybe empty) instead of raising.

        A :class:`Resolution` is a tuple too: test the answer with ``isinstance(x, Resolution)``.
        """
        try:
            return self.resolve(method, path, host=host)
        except NoRouteError as exc:
            return exc.allowed

    def _slow_match(self, method: str, path: str, segs: list[str], host: str | None) -> _Found:
        """The full search, host matching, the trailing-slash fallback, or NoRouteError."""
        acceptor: _Acceptor = _accept_any_host if host is None else _host_acceptor(host)
        found = self._trie.search(segs, acceptor, method)
        if found is not None:
            return found
        allowed: set[str] = set()
        self._trie.search(segs, _allowed_acceptor(host, allowed), method)
        if not allowed and path != "/":
            # The app redirects a missing or extra trailing slash: route it to the owner. Starlette
            # tries both forms on any route; werkzeug only adds the slash of a rule ending in '/'.
            adding = not path.endswith("/")
            toggled = path + "/" if adding else path[:-1]
            found = self._trie.search(toggled.split("/"), acceptor, method)
            if found is not None and (
                found[0].ordered or (adding and found[0].template.text.endswith("/"))
            ):
                return found
        raise NoRouteError(method, path, allowed=sorted(allowed))

    def _shadowed(
        self, route: Route, values: tuple[Any, ...], method: str, path: str
    ) -> Resolution:
        """An ordered router's answer: an earlier route of the same app may match first."""
        params = None
        for earlier in route.shadows:
            if earlier.allows(method):
                params = earlier.template.match(path)
                if params is not None:
                    route = earlier
                    break
        if params is None:
            params = route.template.convert(values)
        return Resolution(route, params, self._endpoints.get(route.key, _EMPTY_ENDPOINTS))

    @property
    def services(self) -> tuple[str, ...]:
        """The names of the services with at least one valid record, sorted."""
        return tuple(sorted(self._services))

    def instances(self, service: str | None = None) -> tuple[Instance, ...]:
        """The instances of one service, or of all services, serving or draining."""
        if service is not None:
            svc = self._services.get(service)
            return svc.instances if svc is not None else ()
        return tuple(i for name in self.services for i in self._services[name].instances)

    def routes(self) -> list[tuple[Route, Endpoints]]:
        """Every route claim with its endpoints, sorted by template then service."""
        out = [
            (route, svc.endpoints.get(text, _EMPTY_ENDPOINTS))
            for svc in self._services.values()
            for text, route in svc.routes.items()
        ]
        out.sort(key=lambda re_: (re_[0].template.text, re_[0].service, re_[0].route_id))
        return out

    def conflicts(self) -> list[Conflict]:
        """Every method + template shape claimed by more than one service."""
        out: list[Conflict] = []
        for template in self._contested.values():
            term = self._trie.get(template)
            if term is None:  # pragma: no cover - _contested follows the trie
                continue
            for method, routes in sorted(term.by_method.items()):
                services = {r.service for r in routes}
                if len(services) < 2:
                    continue
                winner = routes[0]
                losers = tuple(r for r in routes if r.service != winner.service)
                out.append(Conflict(method, winner.template.shape, winner, losers))
        out.sort(key=lambda c: (c.shape, c.method))
        return out

    def records(self) -> list[tuple[Entry, InstanceRecord]]:
        """Every valid record in the table, by key (entries without their raw value)."""
        return [self._records[k] for k in sorted(self._records)]

    def record(self, key: str) -> InstanceRecord | None:
        """The valid record stored at ``key``, if any."""
        found = self._records.get(key)
        return None if found is None else found[1]

    def __len__(self) -> int:
        """The number of distinct template shapes in the table."""
        return len(self._trie)

    # ------------------------------------------------------------------ writing (new tables)

    def apply(self, update: Update) -> RoutingTable:
        """A new table with one update applied; this table is unchanged."""
        if isinstance(update, Reset):
            return self._reset(update)
        if update.revision and update.revision < self.revision:
            return self  # stale (replayed after a watch resume)
        records = dict(self._records)
        rejected = dict(self.rejected)
        rejected.pop(update.key if isinstance(update, Delete) else update.entry.key, None)
        touched: set[str] = set()
        if isinstance(update, Delete):
            old = records.pop(update.key, None)
            if old is not None:
                touched.add(old[1].service)
        else:
            entry = update.entry
            old = records.pop(entry.key, None)
            if old is not None:
                touched.add(old[1].service)
            parsed = self._parse(entry)
            if isinstance(parsed, str):
                rejected[entry.key] = parsed
            else:
                records[entry.key] = (_without_value(entry), parsed)
                touched.add(parsed.service)
        return self._rebuild(records, rejected, touched, update.revision or self.revision)

    def _reset(self, update: Reset) -> RoutingTable:
        from .routesets import assemble  # a raw snapshot: join schema-2 records with their sets

        update = assemble(self.prefix, update)
        records: dict[str, tuple[Entry, InstanceRecord]] = {}
        rejected: dict[str, str] = {}
        for entry in update.entries:
            parsed = self._parse(entry)
            if isinstance(parsed, str):
                rejected[entry.key] = parsed
            else:
                records[entry.key] = (_without_value(entry), parsed)
        touched = {r.service for _, r in records.values()} | set(self._services)
        fresh = RoutingTable(prefix=self.prefix, revision=self.revision)
        return fresh._rebuild(records, rejected, touched, update.revision)

    def _parse(self, entry: Entry) -> InstanceRecord | str:
        where = split_instance_key(self.prefix, entry.key)
        if where is None:
            return (
                f"bad mesh record at {entry.key!r}: key is not <prefix>/v1/instances/<service>/<id>"
            )
        try:
            record = entry.decoded or InstanceRecord.decode(entry.key, entry.value)
        except BadRecord as exc:
            return str(exc)
        if isinstance(record, str):  # the assembler's verdict (route set missing or bad)
            return record
        if (record.service, record.instance_id) != where:
            return (
                f"bad mesh record at {entry.key!r}: it names service {record.service!r} and "
                f"instance {record.instance_id!r}, but the key says {where[0]!r}/{where[1]!r}"
            )
        return record

    def _rebuild(
        self,
        records: dict[str, tuple[Entry, InstanceRecord]],
        rejected: dict[str, str],
        touched: set[str],
        revision: int,
    ) -> RoutingTable:
        by_service: dict[str, list[tuple[Entry, InstanceRecord]]] = {s: [] for s in touched}
        for entry, record in records.values():
            if record.service in by_service:
                by_service[record.service].append((entry, record))
        services = dict(self._services)
        by_shape = dict(self._by_shape)
        contested = dict(self._contested)
        endpoints = dict(self._endpoints)
        dirty_shapes: dict[str, Template] = {}
        for name, members in by_service.items():
            old = services.get(name)
            new = _build_service(name, members) if members else None
            old_routes = old.routes if old is not None else {}
            new_routes = new.routes if new is not None else {}
            for text in old_routes.keys() | new_routes.keys():
                o, n = old_routes.get(text), new_routes.get(text)
                if o is not None and n is not None and o._claim() == n._claim():
                    continue
                template = (n if n is not None else o).template  # type: ignore[union-attr]
                shape = template.shape
                dirty_shapes[shape] = template
                claims = [c for c in by_shape.get(shape, ()) if c != (name, text)]
                if n is not None:
                    claims.append((name, text))
                if claims:
                    by_shape[shape] = tuple(claims)
                else:
                    by_shape.pop(shape, None)
            if old is not None:
                for text in old.endpoints:
                    endpoints.pop(f"{name} {text}", None)
            if new is None:
                services.pop(name, None)
            else:
                services[name] = new
                for text, eps in new.endpoints.items():
                    endpoints[f"{name} {text}"] = eps
        trie = self._trie
        for shape, template in dirty_shapes.items():
            holders = by_shape.get(shape)
            if holders:
                trie = trie.set(template, _Terminal(services[s].routes[t] for s, t in holders))
            else:
                trie = trie.set(template, None)
            if holders and len({s for s, _ in holders}) > 1:
                contested[shape] = template
            else:
                contested.pop(shape, None)
        return RoutingTable(
            prefix=self.prefix,
            _records=records,
            _services=services,
            _trie=trie,
            _by_shape=by_shape,
            _contested=contested,
            _endpoints=endpoints,
            rejected=rejected,
            revision=max(revision, self.revision),
        )


def _build_service(name: str, members: list[tuple[Entry, InstanceRecord]]) -> _Service:
    """Rebuild one service's routes and endpoints from its records."""
    members.sort(key=lambda er: (er[0].create_revision, er[0].key))
    # Instances, deduplicated by URL (workers of one server share it).
    by_url: dict[str, list[tuple[Entry, InstanceRecord]]] = {}
    for entry, record in members:
        by_url.setdefault(record.url, []).append((entry, record))
    instances: dict[str, Instance] = {}
    for url, group in by_url.items():
        newest = group[-1][1]
        instances[url] = Instance(
            service=name,
            url=url,
            state="serving" if any(r.state == "serving" for _, r in group) else "draining",
            records=tuple(r.instance_id for _, r in group),
            zone=newest.zone,
            weight=newest.weight,
            version=newest.version,
            labels=newest.labels,
        )
    # Membership is per (template, method): the instances serving GET /x are exactly those whose
    # record declares /x with GET. Metadata and order come from the newest record declaring the
    # pair; rank is the oldest create_revision among them. Methods of one template that share
    # metadata and instances are then grouped into one Route.
    slots: dict[tuple[str, str], _Slot] = {}
    ordered = False
    for entry, record in members:  # oldest first, so the newest wins for spec/order
        ordered = record.routing == "ordered"
        for position, spec in enumerate(record.routes):
            for method in spec.methods:
                slot = slots.get((spec.template, method))
                if slot is None:
                    slot = slots[(spec.template, method)] = _Slot(entry.create_revision)
                slot.spec = spec
                slot.order = position
                slot.urls[record.url] = None
    groups: dict[tuple[str, RouteSpec, tuple[str, ...]], list[tuple[str, _Slot]]] = {}
    for (text, method), slot in slots.items():
        assert slot.spec is not None
        key = (text, dataclasses.replace(slot.spec, methods=()), tuple(slot.urls))
        groups.setdefault(key, []).append((method, slot))
    plain: dict[str, Route] = {}
    endpoints: dict[str, Endpoints] = {}
    shared_endpoints: dict[tuple[str, ...], Endpoints] = {}  # routes of one service mostly
    shared_methods: dict[frozenset[str], frozenset[str]] = {}  # share these: one object each
    for (text, _, urls), claims in groups.items():
        methods = frozenset(m for m, _ in claims)
        methods = shared_methods.setdefault(methods, methods)
        route_id = f"{text} {','.join(sorted(methods))}"
        first_spec = claims[0][1].spec
        assert first_spec is not None
        plain[route_id] = Route(
            service=name,
            template=parse_template(text),
            methods=methods,
            spec=first_spec,
            rank=(min(slot.rank for _, slot in claims), name),
            order=min(slot.order for _, slot in claims),
            ordered=ordered,
            route_id=route_id,
        )
        eps = shared_endpoints.get(urls)
        if eps is None:
            all_ = tuple(instances[u] for u in urls)
            eps = shared_endpoints[urls] = Endpoints(all_, tuple(i for i in all_ if i.serving))
        endpoints[route_id] = eps
    routes = _with_shadows(plain) if ordered else plain
    return _Service(name, routes, endpoints, tuple(instances.values()))


class _Slot:
    """What the records of one service say about one (template, method) pair."""

    __slots__ = ("order", "rank", "spec", "urls")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.order = 0
        self.spec: RouteSpec | None = None
        self.urls: dict[str, None] = {}


def _with_shadows(routes: dict[str, Route]) -> dict[str, Route]:
    """For an ordered router: give each route the earlier routes that may match its paths."""
    by_order = sorted(routes.values(), key=lambda r: (r.order, r.route_id))
    out: dict[str, Route] = {}
    for k, route in enumerate(by_order):
        earlier = tuple(
            out[e.route_id]
            for e in by_order[:k]
            if e.template.shape != route.template.shape and _may_overlap(e.template, route.template)
        )
        if earlier:
            route = dataclasses.replace(route, shadows=earlier)
        out[route.route_id] = route
    return out


def _may_overlap(a: Template, b: Template) -> bool:
    """Could some path match both templates? Conservative: ``True`` when unsure."""
    sa, sb = a.segments, b.segments
    a_path = any(isinstance(s, SegmentMatcher) and s.key == "{:path}" for s in sa)
    b_path = any(isinstance(s, SegmentMatcher) and s.key == "{:path}" for s in sb)
    if not a_path and not b_path and len(sa) != len(sb):
        return False
    for x, y in zip(sa, sb, strict=False):
        if isinstance(x, SegmentMatcher) and x.key == "{:path}":
            return True
        if isinstance(y, SegmentMatcher) and y.key == "{:path}":
            return True
        if isinstance(x, str) and isinstance(y, str):
            if x != y:
                return False
        elif isinstance(x, str) and isinstance(y, SegmentMatcher):
            if y.match(x) is None:
                return False
        elif isinstance(x, SegmentMatcher) and isinstance(y, str) and x.match(y) is None:
            return False
    return True


_Found = tuple[Route, tuple[Any, ...]]


def _accept_any_host(term: _Terminal, values: tuple[Any, ...], method: str) -> _Found | None:
    """The hot path: the best claim for ``method`` that is not bound to a Host."""
    route = term.first.get(method) or term.first.get(ANY_METHOD)
    return None if route is None else (route, values)


_Acceptor = Callable[[_Terminal, tuple[Any, ...], str], _Found | None]


def _host_acceptor(host: str) -> _Acceptor:
    def accept(term: _Terminal, values: tuple[Any, ...], method: str) -> _Found | None:
        routes = term.by_method.get(method) or term.by_method.get(ANY_METHOD)
        for route in routes or ():
            if route.spec.host is None or _host_ok(route.spec.host, host):
                return route, values
        return None

    return accept


def _allowed_acceptor(host: str | None, allowed: set[str]) -> _Acceptor:
    """Collects the methods allowed on matching paths; never accepts (walks every match)."""

    def accept(term: _Terminal, values: tuple[Any, ...], method: str) -> _Found | None:
        for route in term.routes:
            if route.spec.host is None or (host is not None and _host_ok(route.spec.host, host)):
                allowed.update(route.methods)
        return None

    return accept


def _without_value(entry: Entry) -> Entry:
    """The entry without its raw bytes: once parsed, the record holds what they said."""
    return Entry(entry.key, b"", entry.create_revision, entry.mod_revision)


def _clean_path(path: str) -> str:
    cut = path.find("?")
    if cut >= 0:
        path = path[:cut]
    if "%" in path:
        path = unquote(path)
    if not path.startswith("/"):
        path = "/" + path
    return path


def _host_ok(pattern: str, host: str | None) -> bool:
    if host is None:
        return False
    host = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
    return parse_template(pattern, host=True).regex.fullmatch(host) is not None
