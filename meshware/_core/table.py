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
* **The app's own dispatch, then precedence between services.** Each service's routes and
  shadows (routes the app serves without publishing them) are compiled into one
  :class:`~.matcher.ServiceMatcher`, which picks exactly what the app's router would (werkzeug's
  rules, or Starlette's first match). A first-segment index narrows a path to the services that
  may match it; when several answer, the best by cross-service precedence wins
  (:func:`~.matcher.precedence_key`: static beats typed beats ``str`` beats ``path``, segment by
  segment), a service that would only redirect after one serving the path as sent, and between
  the same template the claim whose oldest live registration has the lowest etcd
  ``create_revision`` (then the service name): every client computes the same answer from the
  same records. A path whose winner is a shadow resolves to nothing
  (:class:`~meshware.ShadowedRouteError`).
* **Conflicts**: several services claiming one method + template (``kind="same"``), and a
  service's route taking paths another service's route or shadow would serve (``"overlap"``).
* **Bad records never break the table.** A record that does not parse is left out and listed in
  :attr:`RoutingTable.rejected` (key → problem); the I/O layer logs each one once.

Pure: no I/O, no clock, no threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any
from urllib.parse import unquote

from .._errors import BadRecord, NoEndpointAvailable, NoRouteError, ShadowedRouteError
from .matcher import ServiceMatcher, fast_walk, precedence_key
from .records import ANY_METHOD, InstanceRecord, RouteSpec, split_instance_key
from .templates import Template, parse_template

__all__ = [
    "Conflict",
    "Delete",
    "Entry",
    "Instance",
    "Reset",
    "Resolution",
    "Route",
    "RoutingTable",
    "Shadowed",
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
    """One service's claim on one template, or one of its shadows (``shadow=True``).

    ``spec`` holds the route's published metadata (name, public, policy) taken from the newest
    record that declares it; ``methods`` is the union over the service's instances. ``order`` is
    the route's position in the app's own order (routes and shadows together); ``rank`` the
    conflict rank between services (oldest registration, then the service name). A shadow
    (``reason``: static, docs, excluded, mount) is served by the app but never routed to.
    """

    service: str
    template: Template
    methods: frozenset[str]
    spec: RouteSpec
    rank: tuple[int, str]
    order: int
    ordered: bool = False  # the app's router takes the first declared match (Starlette)
    route_id: str = ""  # unique within the service: template and methods
    shadow: bool = False
    reason: str | None = None
    names: tuple[str, ...] = ()
    key: str = ""
    converters: tuple[Callable[[str], Any] | None, ...] | None = None
    convert1: Callable[[str], Any] | None = None  # the first parameter's converter
    precedence: tuple[Any, ...] = ()
    start: int = -1  # a mount shadow: the order of the mount's first route (-1: unknown)
    clean: bool = False  # set by the matcher: no earlier route of the app may take its paths
    direct: bool = False  # set by the matcher: its hot path may answer with this route
    # set by the matcher of an ordered app: its earlier published routes that may take some of
    # this route's paths (see RoutingTable.preceding for every route and shadow that may)
    shadows: tuple[Route, ...] = ()

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
        object.__setattr__(self, "precedence", precedence_key(self.template.text))

    @property
    def host(self) -> str | None:
        return self.spec.host

    @property
    def weights(self) -> tuple[int, ...] | None:
        return self.spec.weights

    @property
    def websocket(self) -> bool:
        return self.spec.kind == "websocket"

    @property
    def patterns(self) -> tuple[str | None, ...] | None:
        return self.spec.patterns

    @property
    def strict_slashes(self) -> bool:
        return self.spec.strict_slashes

    @property
    def any_method(self) -> bool:
        return ANY_METHOD in self.methods

    def allows(self, method: str) -> bool:
        return method in self.methods or ANY_METHOD in self.methods

    def params(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """Parameter values by name, converted, from the raw strings the matcher collected."""
        return {
            name: value if convert is None else convert(value)
            for name, convert, value in zip(
                self.names, self.converters or (None,) * len(self.names), values, strict=False
            )
        }

    def _claim(self) -> tuple[Any, ...]:
        return (self.methods, self.spec, self.rank, self.order, self.ordered, self.reason)


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
class Shadowed:
    """A path the app serves with a route it does not publish for mesh calls (a shadow).

    ``route`` is the shadow (``route.shadow`` is true; ``reason`` says why it is not published).
    Nothing is routed there and the edge never exposes it.
    """

    route: Route
    params: dict[str, Any]

    @property
    def service(self) -> str:
        return self.route.service

    @property
    def reason(self) -> str | None:
        return self.route.reason


@dataclass(frozen=True, slots=True)
class Conflict:
    """Services compete for the paths of one method.

    ``kind="same"``: two or more services claim the same method and template shape; ``winner``
    (oldest registration) gets it. ``kind="overlap"``: ``winner`` takes paths that the routes or
    shadows in ``losers`` (other services) would serve, by cross-service precedence.
    """

    method: str
    shape: str
    winner: Route
    losers: tuple[Route, ...]
    kind: str = "same"


@dataclass(frozen=True, slots=True)
class _Service:
    """Everything the table knows about one service, rebuilt when one of its records changes."""

    name: str
    routes: Mapping[str, Route]  # by route id (template and methods)
    endpoints: Mapping[str, Endpoints]  # by route id
    instances: tuple[Instance, ...]
    shadows: tuple[Route, ...]
    matcher: ServiceMatcher
    firsts: frozenset[str | None]  # first path segments of its templates; None: a parameter
    keys: tuple[str, ...] = ()  # the keys of its records
    # (routing, routes, shadows) when every record publishes the same route set, else None
    signature: tuple[Any, ...] | None = None
    rank: int = 0  # the oldest create_revision among its records


_EMPTY_ENDPOINTS = Endpoints((), ())


class RoutingTable:
    """An immutable routing table. Build one with :meth:`empty` and :meth:`apply`."""

    __slots__ = (
        "_by_shape",
        "_contested",
        "_fast",
        "_index",
        "_overlaps",
        "_records",
        "_services",
        "_wild",
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
        _by_shape: Mapping[str, tuple[tuple[str, str], ...]] | None = None,
        _contested: Mapping[str, Template] | None = None,
        _fast: dict[str, tuple[Any, _Service]] | None = None,
        _index: Mapping[str, tuple[str, ...]] | None = None,
        _wild: tuple[str, ...] = (),
        _overlaps: Mapping[tuple[str, str], tuple[Conflict, ...]] | None = None,
        rejected: Mapping[str, str] | None = None,
        revision: int = 0,
    ) -> None:
        self.prefix = prefix
        self._records: Mapping[str, tuple[Entry, InstanceRecord]] = _records or {}
        self._services: Mapping[str, _Service] = _services or {}
        # shape -> (service, route id) claims, and the shapes claimed by more than one service
        self._by_shape: Mapping[str, tuple[tuple[str, str], ...]] = _by_shape or {}
        self._contested: Mapping[str, Template] = _contested or {}
        # first path segment -> the services that may match a path starting with it (the
        # services whose templates start with a parameter, ``_wild``, are in every entry)
        self._index: Mapping[str, tuple[str, ...]] = _index or {}
        self._wild = _wild
        # first path segment -> (the state it leads to in the one service that may match it,
        # that service): the hot path's shortcut (its walk goes on from the second segment);
        # patched, not rebuilt, when an instance event replaces a service (see _rebuild)
        self._fast: dict[str, tuple[Any, _Service]] = _fast if _fast is not None else {}
        if _fast is None:
            for first, names in self._index.items():
                if len(names) == 1 and first:
                    svc = self._services[names[0]]
                    state = svc.matcher.after_first(first)
                    if state is not None:
                        self._fast[first] = (state, svc)
        self._overlaps: Mapping[tuple[str, str], tuple[Conflict, ...]] = _overlaps or {}
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

    def resolve(
        self, method: str, path: str, *, host: str | None = None, websocket: bool = False
    ) -> Resolution:
        """Resolve a method and path to a route and its instances.

        ``path`` is the request path as sent (percent-encoded is fine; a query string is
        ignored). Raises :class:`~meshware.NoRouteError` when no service publishes a matching
        route, :class:`~meshware.ShadowedRouteError` (a ``NoRouteError``) when the path goes to a
        route its app does not publish for mesh calls. A route with no serving instance still
        resolves; call :meth:`Resolution.require_instances` to get
        :class:`~meshware.NoEndpointAvailable`.

        This is the request hot path: no locks, no I/O; one index lookup and one walk of the
        owning service's state machine in the common case.
        """
        method = method.upper()
        if "?" in path or "%" in path or path[:1] != "/":
            path = _clean_path(path)
        if host is None and not websocket:
            segs = path.split("/")
            hit = self._fast.get(segs[1])  # never "": a path "//..." takes the slow path
            if hit is not None:
                got = fast_walk(hit[0], segs, 2, method)
                if got is not None:
                    route: Route = got[0]
                    values = got[1]
                    if not values:
                        params: dict[str, Any] = {}
                    elif len(values) == 1:  # the common case, without a loop
                        convert = route.convert1
                        params = {
                            route.names[0]: values[0] if convert is None else convert(values[0])
                        }
                    else:
                        params = route.params(values)
                    return _new_resolution(
                        Resolution,
                        (route, params, hit[1].endpoints.get(route.route_id, _EMPTY_ENDPOINTS)),
                    )
        names = self._candidates(path)
        found = self._lookup(method, path, host, names, websocket)
        if isinstance(found, Resolution):
            return found
        if isinstance(found, Shadowed):
            raise ShadowedRouteError(
                method,
                path,
                service=found.route.service,
                template=found.route.template.text,
                reason=found.route.reason or "excluded",
            )
        raise NoRouteError(method, path, allowed=found)

    def lookup(
        self, method: str, path: str, *, host: str | None = None, websocket: bool = False
    ) -> Resolution | Shadowed | tuple[str, ...]:
        """One exact lookup: a :class:`Resolution`, a :class:`Shadowed` (the app serves the path
        with a route it does not publish: never forward it), or the methods that would match
        the path (empty: no route at all)."""
        method = method.upper()
        if "?" in path or "%" in path or path[:1] != "/":
            path = _clean_path(path)
        return self._lookup(method, path, host, self._candidates(path), websocket)

    def match(
        self, method: str, path: str, *, host: str | None = None, websocket: bool = False
    ) -> Resolution | tuple[str, ...]:
        """Like :meth:`resolve`, but returns the allowed methods (maybe empty) instead of raising.

        A :class:`Resolution` is a tuple too: test the answer with ``isinstance(x, Resolution)``.
        A shadowed path gives ``()``.
        """
        found = self.lookup(method, path, host=host, websocket=websocket)
        return () if isinstance(found, Shadowed) else found

    def _candidates(self, path: str) -> tuple[str, ...]:
        if path[:2] == "//":  # werkzeug drops leading slashes: any service may match
            return tuple(self._services)
        cut = path.find("/", 1)
        return self._index.get(path[1:] if cut < 0 else path[1:cut], self._wild)

    def _lookup(
        self, method: str, path: str, host: str | None, names: Iterable[str], ws: bool = False
    ) -> Resolution | Shadowed | tuple[str, ...]:
        best: tuple[Any, ...] | None = None
        key: tuple[Any, ...] | None = None
        services = self._services
        for name in names:
            got = services[name].matcher.match(method, path, host, None, ws)
            if got is not None:
                k = (got[2], got[0].precedence, got[0].rank)
                if key is None or k < key:
                    best, key = got, k
        if best is None:
            allowed: set[str] = set()
            for name in names:
                services[name].matcher.match(method, path, host, allowed, ws)
            return tuple(sorted(allowed))
        route: Route = best[0]
        if route.shadow:
            if route.reason == "mount":
                return ()  # the rest of a mount: its sub-app answers 404
            return Shadowed(route, route.params(best[1]))
        return Resolution(
            route,
            route.params(best[1]),
            services[route.service].endpoints.get(route.route_id, _EMPTY_ENDPOINTS),
        )

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

    def shadows(self) -> list[Route]:
        """Every shadow (a route an app serves without publishing it), by template then service."""
        out = [r for svc in self._services.values() for r in svc.shadows]
        out.sort(key=lambda r: (r.template.text, r.service, r.route_id))
        return out

    def preceding(self, route: Route) -> tuple[Route, ...]:
        """Every route or shadow that takes some of ``route``'s paths from it, best first.

        Other services' entries that win by cross-service precedence come first (in that
        order), then entries of ``route``'s own service that its app tries first (in the app's
        order). Conservative: listed unless the templates rule the overlap out.
        """
        own = self._services.get(route.service)
        if own is None:
            return ()
        mine = route.precedence, route.rank
        others: list[Route] = []
        for name in self._services_near(route):
            if name == route.service:
                continue
            for e in self._services[name].matcher.overlapping(route.template.text):
                if _methods_meet(e.methods, route.methods) and (e.precedence, e.rank) < mine:
                    others.append(e)
        others.sort(key=lambda e: (e.precedence, e.rank, e.service, e.order))
        matcher = own.matcher
        here = matcher.order_key(route)
        same = [
            e
            for e in matcher.overlapping(route.template.text)
            if e is not route
            and _methods_meet(e.methods, route.methods)
            and matcher.order_key(e) < here
        ]
        same.sort(key=matcher.order_key)
        return (*others, *same)

    def _services_near(self, route: Route) -> tuple[str, ...]:
        """The services whose templates may share a first segment with ``route``'s."""
        first = _first_segment(route.template.text)
        if first is None:
            return tuple(self._services)
        return self._index.get(first, self._wild)

    def conflicts(self) -> list[Conflict]:
        """Every method whose paths several services compete for (see :class:`Conflict`)."""
        out: list[Conflict] = []
        for shape in self._contested:
            claims = [self._services[s].routes[t] for s, t in self._by_shape.get(shape, ())]
            methods = {m for r in claims for m in r.methods}
            for method in sorted(methods):
                routes = sorted(
                    (r for r in claims if r.allows(method)), key=lambda r: (r.rank, r.route_id)
                )
                if len({r.service for r in routes}) < 2:
                    continue
                winner = routes[0]
                losers = tuple(r for r in routes if r.service != winner.service)
                out.append(Conflict(method, winner.template.shape, winner, losers))
        for found in self._overlaps.values():
            out.extend(found)
        out.sort(
            key=lambda c: (
                c.shape,
                c.method,
                c.kind,
                c.winner.service,
                c.winner.route_id,
                [(r.service, r.route_id) for r in c.losers],
            )
        )
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
        return len(self._by_shape)

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
        # the members of the touched services, found from their own keys (not the whole mesh)
        key = update.key if isinstance(update, Delete) else update.entry.key
        by_service: dict[str, list[tuple[Entry, InstanceRecord]]] = {}
        for name in touched:
            svc = self._services.get(name)
            keys = {*svc.keys, key} if svc is not None else {key}
            by_service[name] = [
                found
                for k in keys
                if (found := records.get(k)) is not None and found[1].service == name
            ]
        return self._rebuild(
            records, rejected, touched, update.revision or self.revision, by_service
        )

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
        by_service: dict[str, list[tuple[Entry, InstanceRecord]]] | None = None,
    ) -> RoutingTable:
        # Costs what the touched services hold, never the whole mesh: the shared maps are copied
        # only when a route set changes (an instance joining or leaving with the same set as its
        # siblings touches its service's instance list and endpoints only).
        if by_service is None:
            by_service = {s: [] for s in touched}
            for entry, record in records.values():
                if record.service in by_service:
                    by_service[record.service].append((entry, record))
        services = dict(self._services)
        by_shape: Mapping[str, tuple[tuple[str, str], ...]] = self._by_shape
        contested: Mapping[str, Template] = self._contested
        fast = self._fast
        dirty_shapes: set[str] = set()
        changed_sets: set[str] = set()  # services whose routes or shadows changed
        index_dirty = False
        replaced: dict[str, tuple[_Service, _Service]] = {}
        for name, members in by_service.items():
            old = services.get(name)
            new = _build_service(name, members, old) if members else None
            if new is None or old is None or new.matcher is not old.matcher:
                changed_sets.add(name)
            if new is None or old is None or new.firsts != old.firsts:
                index_dirty = True
            elif new is not old:
                replaced[name] = (old, new)
            old_routes = old.routes if old is not None else {}
            new_routes = new.routes if new is not None else {}
            reranked = (  # the same route set with a new rank: the same claims by shape
                new is not None
                and old is not None
                and new.signature is not None
                and new.signature is old.signature
            )
            if old_routes is not new_routes and not reranked:
                if by_shape is self._by_shape:
                    by_shape = dict(by_shape)
                assert isinstance(by_shape, dict)
                for text in old_routes.keys() | new_routes.keys():
                    o, n = old_routes.get(text), new_routes.get(text)
                    if o is not None and n is not None and o._claim() == n._claim():
                        continue
                    shape = (n if n is not None else o).template.shape  # type: ignore[union-attr]
                    dirty_shapes.add(shape)
                    claims = [c for c in by_shape.get(shape, ()) if c != (name, text)]
                    if n is not None:
                        claims.append((name, text))
                    if claims:
                        by_shape[shape] = tuple(claims)
                    else:
                        by_shape.pop(shape, None)
            if new is None:
                services.pop(name, None)
            else:
                services[name] = new
        if dirty_shapes:
            contested = dict(contested)
            for shape in dirty_shapes:
                holders = by_shape.get(shape)
                if holders and len({s for s, _ in holders}) > 1:
                    contested[shape] = services[holders[0][0]].routes[holders[0][1]].template
                else:
                    contested.pop(shape, None)
        index, wild = self._index, self._wild
        overlaps = self._overlaps
        new_fast: dict[str, tuple[Any, _Service]] | None = None
        if index_dirty:
            index, wild = _build_index(services)
        elif replaced:  # same first segments: patch the shortcut for those services only
            new_fast = dict(fast)
            for old, new in replaced.values():
                for first in new.firsts:
                    hit = new_fast.get(first) if first else None
                    if hit is None or hit[1] is not old:
                        continue
                    if new.matcher is old.matcher:
                        new_fast[first] = (hit[0], new)  # type: ignore[index]
                    else:
                        state = new.matcher.after_first(first)  # type: ignore[arg-type]
                        if state is None:
                            del new_fast[first]  # type: ignore[arg-type]
                        else:
                            new_fast[first] = (state, new)  # type: ignore[index]
        if changed_sets:
            overlaps = _update_overlaps(overlaps, services, changed_sets, index, wild)
        return RoutingTable(
            prefix=self.prefix,
            _records=records,
            _services=services,
            _by_shape=by_shape,
            _contested=contested,
            _fast=None if index_dirty else (new_fast if new_fast is not None else fast),
            _index=index,
            _wild=wild,
            _overlaps=overlaps,
            rejected=rejected,
            revision=max(revision, self.revision),
        )


def _first_segment(text: str) -> str | None:
    """A template's first path segment when it is static text, else ``None``."""
    cut = text.find("/", 1)
    first = text[1:] if cut < 0 else text[1:cut]
    return None if "{" in first else first


def _build_index(
    services: Mapping[str, _Service],
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    wild = tuple(sorted(name for name, svc in services.items() if None in svc.firsts))
    by_first: dict[str, list[str]] = {}
    for name in sorted(services):
        for first in services[name].firsts:
            if first is not None:
                by_first.setdefault(first, []).append(name)
    index = {
        first: tuple(names) + tuple(w for w in wild if w not in names)
        for first, names in by_first.items()
    }
    return index, wild


def _update_overlaps(
    overlaps: Mapping[tuple[str, str], tuple[Conflict, ...]],
    services: Mapping[str, _Service],
    changed: set[str],
    index: Mapping[str, tuple[str, ...]],
    wild: tuple[str, ...],
) -> dict[tuple[str, str], tuple[Conflict, ...]]:
    """Overlap conflicts, recomputed for the services whose route sets changed."""
    out = {pair: found for pair, found in overlaps.items() if not (set(pair) & changed)}
    for name in sorted(changed):
        svc = services.get(name)
        if svc is None:
            continue
        found: dict[tuple[str, str], list[Conflict]] = {}
        for mine in (*svc.routes.values(), *svc.shadows):
            first = _first_segment(mine.template.text)
            near = tuple(services) if first is None else index.get(first, wild)
            for other_name in near:
                if other_name == name:
                    continue
                pair = (min(name, other_name), max(name, other_name))
                if pair in out:
                    continue  # computed from the other side in this round
                other = services[other_name]
                for theirs in other.matcher.overlapping(mine.template.text):
                    conflict = _overlap(mine, theirs)
                    if conflict:
                        found.setdefault(pair, []).extend(conflict)
        for pair, conflicts in found.items():
            out[pair] = tuple(conflicts)
        for other_name in services:
            pair = (min(name, other_name), max(name, other_name))
            if other_name != name and pair not in out:
                out[pair] = ()
    return {pair: found for pair, found in out.items() if found}


def _overlap(a: Route, b: Route) -> list[Conflict]:
    """The conflicts between two entries of different services whose templates overlap."""
    if a.shadow and b.shadow:
        return []
    if not a.shadow and not b.shadow and a.template.shape == b.template.shape:
        return []  # the same template: a "same" conflict
    if not _methods_meet(a.methods, b.methods):
        return []
    winner, loser = (a, b) if (a.precedence, a.rank) < (b.precedence, b.rank) else (b, a)
    if ANY_METHOD in a.methods and ANY_METHOD in b.methods:
        methods: Iterable[str] = (ANY_METHOD,)
    elif ANY_METHOD in a.methods:
        methods = b.methods
    elif ANY_METHOD in b.methods:
        methods = a.methods
    else:
        methods = a.methods & b.methods
    return [
        Conflict(m, winner.template.shape, winner, (loser,), kind="overlap")
        for m in sorted(methods)
    ]


def _methods_meet(a: frozenset[str], b: frozenset[str]) -> bool:
    return ANY_METHOD in a or ANY_METHOD in b or not a.isdisjoint(b)


def _build_service(
    name: str, members: list[tuple[Entry, InstanceRecord]], old: _Service | None
) -> _Service:
    """Rebuild one service's routes and endpoints from its records (its matcher only when its
    route set changed)."""
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
    keys = tuple(entry.key for entry, _ in members)
    rank = members[0][0].create_revision  # members are sorted: the oldest registration
    signature: tuple[Any, ...] | None = _signature(members[0][1])
    for _, record in members[1:]:
        if not _same_set(_signature(record), signature):  # type: ignore[arg-type]
            signature = None
            break
    if (
        signature is not None
        and old is not None
        and old.signature is not None
        and _same_set(signature, old.signature)
    ):
        # Every record publishes the route set the service had: only its instances changed.
        # Every route is declared by every instance: one Endpoints for all of them.
        all_ = tuple(instances.values())
        same = Endpoints(all_, tuple(i for i in all_ if i.serving))
        routes_: Mapping[str, Route] = old.routes
        shadows_ = old.shadows
        matcher_ = old.matcher
        if rank != old.rank:  # the oldest registration left: same routes, a new rank
            routes_, shadows_, matcher_ = _reranked(old, (rank, name))
        return _Service(
            name,
            routes_,
            dict.fromkeys(routes_, same),
            all_,
            shadows_,
            matcher_,
            old.firsts,
            keys,
            old.signature,
            rank,
        )
    # Membership is per (template, method): the instances serving GET /x are exactly those whose
    # record declares /x with GET. Metadata and order come from the newest record declaring the
    # pair; rank is the oldest create_revision among them. Methods of one template that share
    # metadata and instances are then grouped into one Route. The order is the position in the
    # app's order, routes and shadows merged (a shadow comes before ``routes[before]``).
    # A slot is (template, host, method); within one record the first declaration of a slot
    # is the one the app dispatches to (werkzeug's and Starlette's first match).
    slots: dict[tuple[str, Any, str], _Slot] = {}
    shadow_slots: dict[tuple[str, Any, str], _Slot] = {}
    ordered = False
    for entry, record in members:  # oldest first, so the newest wins for spec/order
        ordered = record.routing == "ordered"
        positions = _merged_positions(record)
        seen: set[tuple[str, Any, str]] = set()
        for position, spec in enumerate(record.routes):
            for method in spec.methods:
                key = (spec.template, _matching(spec), method)
                if key in seen:
                    continue
                seen.add(key)
                slot = slots.get(key)
                if slot is None:
                    slot = slots[key] = _Slot(entry.create_revision)
                slot.spec = spec
                slot.order = positions[0][position]
                slot.urls[record.url] = None
        seen.clear()
        for k, shadow in enumerate(record.shadows):
            for method in shadow.spec.methods:
                key = (shadow.spec.template, _matching(shadow.spec), method)
                if key in seen:
                    continue
                seen.add(key)
                slot = shadow_slots.get(key)
                if slot is None:
                    slot = shadow_slots[key] = _Slot(entry.create_revision)
                slot.spec = shadow.spec
                slot.order = positions[1][k]
                slot.reason = shadow.reason
                slot.start = -1 if shadow.start is None else shadow.start
    groups: dict[tuple[str, RouteSpec, tuple[str, ...]], list[tuple[str, _Slot]]] = {}
    for (text, _, method), slot in slots.items():
        assert slot.spec is not None
        claim = (text, dataclasses.replace(slot.spec, methods=()), tuple(slot.urls))
        groups.setdefault(claim, []).append((method, slot))
    routes: dict[str, Route] = {}
    endpoints: dict[str, Endpoints] = {}
    shared_endpoints: dict[tuple[str, ...], Endpoints] = {}  # routes of one service mostly
    shared_methods: dict[frozenset[str], frozenset[str]] = {}  # share these: one object each
    for (text, _, urls), claims in groups.items():
        methods = frozenset(m for m, _ in claims)
        methods = shared_methods.setdefault(methods, methods)
        first_spec = claims[0][1].spec
        assert first_spec is not None
        route_id = f"{text} {','.join(sorted(methods))}" + _qualifier(first_spec)
        routes[route_id] = Route(
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
    shadow_groups: dict[tuple[str, RouteSpec], list[tuple[str, _Slot]]] = {}
    for (text, _, method), slot in shadow_slots.items():
        assert slot.spec is not None
        shadow_groups.setdefault((text, dataclasses.replace(slot.spec, methods=())), []).append(
            (method, slot)
        )
    shadows: list[Route] = []
    for (text, _), claims in shadow_groups.items():
        methods = frozenset(m for m, _ in claims)
        first_spec = claims[0][1].spec
        assert first_spec is not None
        shadows.append(
            Route(
                service=name,
                template=parse_template(text),
                methods=methods,
                spec=first_spec,
                rank=(min(slot.rank for _, slot in claims), name),
                order=min(slot.order for _, slot in claims),
                ordered=ordered,
                route_id=f"{text} {','.join(sorted(methods))} shadow" + _qualifier(first_spec),
                shadow=True,
                reason=claims[0][1].reason,
                start=claims[0][1].start,
            )
        )
    shadows.sort(key=lambda r: (r.order, r.route_id))
    if (
        old is not None
        and old.matcher.flavor == ("ordered" if ordered else "specificity")
        and len(old.routes) == len(routes)
        and all(
            (o := old.routes.get(k)) is not None and o._claim() == r._claim()
            for k, r in routes.items()
        )
        and [(*s._claim(), s.route_id) for s in old.shadows]
        == [(*s._claim(), s.route_id) for s in shadows]
    ):
        # the same route set: keep the compiled matcher (and its Route objects)
        return _Service(
            name,
            old.routes,
            endpoints,
            tuple(instances.values()),
            old.shadows,
            old.matcher,
            old.firsts,
            keys,
            signature,
            rank,
        )
    matcher = ServiceMatcher("ordered" if ordered else "specificity", (*routes.values(), *shadows))
    firsts = frozenset(_first_segment(r.template.text) for r in (*routes.values(), *shadows))
    return _Service(
        name,
        routes,
        endpoints,
        tuple(instances.values()),
        tuple(shadows),
        matcher,
        firsts,
        keys,
        signature,
        rank,
    )


def _matching(spec: RouteSpec) -> tuple[Any, ...]:
    """What, beside the template, decides which requests a route takes in its app."""
    return (spec.host, spec.patterns, spec.weights, spec.strict_slashes, spec.kind)


def _qualifier(spec: RouteSpec) -> str:
    """What tells apart routes of one template and methods (see :func:`_matching`)."""
    out = f" @{spec.host}" if spec.host is not None else ""
    if spec.patterns is not None:
        out += " ~" + "|".join(p or "" for p in spec.patterns)
    if spec.weights is not None:
        out += " w" + ",".join(map(str, spec.weights))
    if not spec.strict_slashes:
        out += " loose"
    if spec.kind == "websocket":
        out += " ws"
    return out


def _signature(record: InstanceRecord) -> tuple[Any, ...]:
    """What decides a service's compiled routes in one record: its route set."""
    return (record.routing, record.routes, record.shadows)


def _same_set(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # route sets are shared objects (the assembler's tuple, or specs interned by the codec), so
    # this is mostly identity checks done in C
    return a[0] == b[0] and (a[1] is b[1] or a[1] == b[1]) and (a[2] is b[2] or a[2] == b[2])


def _reranked(
    old: _Service, rank: tuple[int, str]
) -> tuple[dict[str, Route], tuple[Route, ...], ServiceMatcher]:
    """The service's routes and shadows with a new rank, and its matcher rebound to them
    (no recompilation: the same transitions, the same verdicts)."""
    mapping: dict[int, Any] = {}
    new_route = object.__new__
    for r in (*old.routes.values(), *old.shadows):
        # a copy slot by slot (no __init__: everything derived stays as it was)
        new = new_route(Route)
        for slot, value in zip(_ROUTE_SLOTS, _route_values(r), strict=True):
            slot.__set__(new, value)
        _RANK_SLOT.__set__(new, rank)
        mapping[id(r)] = new
    for new in mapping.values():
        if new.shadows:
            object.__setattr__(new, "shadows", tuple(mapping.get(id(e), e) for e in new.shadows))
    routes = {k: mapping[id(r)] for k, r in old.routes.items()}
    shadows = tuple(mapping[id(r)] for r in old.shadows)
    return routes, shadows, old.matcher.rebind(mapping)


_ROUTE_SLOTS = tuple(getattr(Route, f.name) for f in dataclasses.fields(Route))
_route_values = attrgetter(*(f.name for f in dataclasses.fields(Route)))
_RANK_SLOT: Any = getattr(Route, "rank")  # noqa: B009 (the slot descriptor)


def _merged_positions(record: InstanceRecord) -> tuple[list[int], list[int]]:
    """The positions of a record's routes and of its shadows in the app's order."""
    route_pos: list[int] = []
    shadow_pos = [0] * len(record.shadows)
    pending = sorted(range(len(record.shadows)), key=lambda k: (record.shadows[k].before, k))
    j = 0
    n = 0
    for i in range(len(record.routes) + 1):
        while j < len(pending) and record.shadows[pending[j]].before <= i:
            shadow_pos[pending[j]] = n
            n += 1
            j += 1
        if i < len(record.routes):
            route_pos.append(n)
            n += 1
    return route_pos, shadow_pos


class _Slot:
    """What the records of one service say about one (template, method) pair."""

    __slots__ = ("order", "rank", "reason", "spec", "start", "urls")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.order = 0
        self.spec: RouteSpec | None = None
        self.urls: dict[str, None] = {}
        self.reason: Any = None
        self.start = -1


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
