"""The registry record: what one running process publishes about itself.

Design notes
------------
The record is a documented, stable contract (README "The registry record"): operators read it
with ``etcdctl`` and processes written in other languages may publish or read it. So:

* one key per running process, ``<prefix>/v1/instances/<service>/<instance-id>``, under its lease;
* the value is a JSON object with ``"schema": 1``; readers ignore fields they do not know, and
  reject (with :class:`~meshware.BadRecord`, never a crash) what they cannot use;
* routes are published in the canonical template form of :mod:`meshware._core.templates`.

**Bounds.** Everything read from the registry is untrusted: anyone who can write under the
prefix can write any bytes. Decoding is *total* — whatever the value holds, :meth:`decode`
returns a record or raises :class:`~meshware.BadRecord`, never another exception — and
*bounded*: a record is refused before any costly work when it breaks one of the limits below
(each a documented constant, checked in this order: size before parsing, nesting depth around
parsing, then counts and lengths field by field). So a hostile record costs the readers one
bounded parse and one warning, and changes nothing but its own entry.

=========================  ==========  ==================================================
constant                   value       what it bounds
=========================  ==========  ==================================================
``MAX_RECORD_BYTES``       1 MiB       the stored value (etcd's own default limit is 1.5 MiB)
``MAX_JSON_DEPTH``         16          nesting of arrays/objects anywhere in the value
``MAX_ROUTES``             4,096       ``routes[]`` entries (and any other list of routes)
``MAX_TEMPLATE_LENGTH``    2,048       characters of a template or Host pattern
``MAX_SEGMENTS``           256         ``/``-separated segments of a template
``MAX_METHODS``            32          methods of one route
``MAX_FIELD_LENGTH``       1,024       any other string (names, version, zone, labels)
``MAX_LABELS``             64          entries of ``labels``
``limits.MAX_KEYS`` etc.   16 keys     a route's ``limits`` (counts <= 1,000,000; ``_core/limits.py``)
=========================  ==========  ==================================================

Strings must be valid Unicode (no lone surrogates) and the fields a person reads (names,
templates, labels, URLs) carry no control characters. The ``url`` must be exactly
``http(s)://host[:port]`` with a valid host name, IPv4 address or bracketed IPv6 address and
a port 1-65535 (no trailing newline: the whole string is matched, not a line), and its host
must be allowed by the process's :class:`~meshware._core.networks.AddressPolicy`
(``MESHWARE_ALLOWED_NETWORKS``, installed with :func:`set_address_policy`).

This module is pure: encoding, decoding and validation, no I/O.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import BadRecord, ConfigError
from .limits import RouteLimits, limits_from_json
from .networks import AddressPolicy, default_policy

__all__ = [
    "ANY_METHOD",
    "MAX_FIELD_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_LABELS",
    "MAX_METHODS",
    "MAX_RECORD_BYTES",
    "MAX_ROUTES",
    "MAX_SEGMENTS",
    "MAX_TEMPLATE_LENGTH",
    "SCHEMA_VERSION",
    "InstanceRecord",
    "Published",
    "RouteSpec",
    "Shadow",
    "address_policy",
    "check_url",
    "instance_key",
    "instances_prefix",
    "set_address_policy",
    "split_instance_key",
    "validate_service_name",
]

SCHEMA_VERSION = 1
ANY_METHOD = "*"

# Bounds on what a record may hold (module notes); a record beyond any of them is a BadRecord.
MAX_RECORD_BYTES = 1 << 20
MAX_JSON_DEPTH = 16
MAX_ROUTES = 4096
MAX_TEMPLATE_LENGTH = 2048
MAX_SEGMENTS = 256
MAX_METHODS = 32
MAX_FIELD_LENGTH = 1024
MAX_LABELS = 64

State = Literal["serving", "draining"]
Kind = Literal["http", "websocket", "mount"]
Routing = Literal["specificity", "ordered"]
ShadowReason = Literal["static", "docs", "excluded", "mount"]

_SERVICE_RE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
_INSTANCE_RE = re.compile(r"[A-Za-z0-9._:@-]{1,200}")
_METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
_URL_RE = re.compile(r"https?://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([1-9][0-9]{0,4}))?")
_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_STATES = ("serving", "draining")
_KINDS = ("http", "websocket", "mount")
_ROUTINGS = ("specificity", "ordered")
_SHADOW_REASONS = ("static", "docs", "excluded", "mount")


def validate_service_name(name: object, *, setting: str = "service") -> str:
    """Check a service name: lower-case letters, digits, ``.``, ``_``, ``-``; 1-63 characters."""
    if not isinstance(name, str) or not _SERVICE_RE.fullmatch(name):
        raise ConfigError(
            f"{setting} must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting and "
            f"ending with a letter or digit (got {name!r})",
            setting=setting,
        )
    return name


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route an instance serves, as published in its record.

    ``template`` is canonical (``/users/{id:int}``); ``methods`` are upper-case and sorted, or
    ``("*",)`` for "any method" (a mounted app meshware cannot look into). ``kind`` tells plain
    HTTP routes from WebSocket routes and opaque mounts; ``host`` restricts the route to a Host
    header pattern (Starlette's ``Host``). ``idempotent``, ``timeout`` and ``retries`` are the
    per-route client policy, ``None`` where the client's defaults apply. ``limits`` are the
    rate and concurrency limits the service declares for the route (enforced by the member and
    the edges; :mod:`meshware._core.limits`). ``weights`` are werkzeug's converter weights, one per parameter, published only when one differs from the
    default of its canonical converter (``int``/``float`` 50, ``path`` 200, others 100): they
    order a werkzeug app's overlapping rules (see :mod:`meshware._core.matcher`).
    ``strict_slashes=False`` is werkzeug's: the rule also matches with or without its trailing
    ``/`` (no redirect). ``patterns`` (one per parameter, ``None`` for most) carry the regex of a
    custom converter published as ``path`` (werkzeug's ``part_isolating = False``): the app's
    matcher uses it instead of ``path``'s when it can run it in linear time.
    """

    template: str
    methods: tuple[str, ...]
    name: str | None = None
    public: bool = False
    kind: Kind = "http"
    host: str | None = None
    idempotent: bool | None = None
    timeout: float | None = None
    retries: int | None = None
    limits: RouteLimits | None = None
    weights: tuple[int, ...] | None = None
    strict_slashes: bool = True
    patterns: tuple[str | None, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The route as a JSON-ready dict (only non-default optional fields)."""
        out: dict[str, Any] = {"template": self.template, "methods": list(self.methods)}
        if self.name is not None:
            out["name"] = self.name
        if self.public:
            out["public"] = True
        if self.kind != "http":
            out["kind"] = self.kind
        if self.host is not None:
            out["host"] = self.host
        if self.idempotent is not None:
            out["idempotent"] = self.idempotent
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.retries is not None:
            out["retries"] = self.retries
        if self.limits is not None:
            out["limits"] = self.limits.to_json()
        if self.weights is not None:
            out["weights"] = list(self.weights)
        if not self.strict_slashes:
            out["strict_slashes"] = False
        if self.patterns is not None:
            out["patterns"] = list(self.patterns)
        return out


@dataclass(frozen=True, slots=True)
class Shadow:
    """A route the app serves that is not published for mesh calls (record field ``shadows``).

    It takes part in matching (no other route takes its paths) but never routes and is never
    public. ``before`` is its position in the app's order: it comes before ``routes[before]``
    (``len(routes)``: after every route; shadows with the same ``before`` keep their list order).
    ``reason`` says why it is not published: ``static`` files, API ``docs``, ``excluded`` by a
    mark or a pattern, or ``mount`` (the rest of a mount: its sub-app answers the paths none of
    its routes match, with 404 or 405). ``start`` (``mount`` shadows only) is where the
    mount's own routes begin: their position in the app's order, routes and shadows counted
    together as listed (the mount's sub-app redirects and answers 405 over those only).
    """

    spec: RouteSpec
    before: int
    reason: ShadowReason = "excluded"
    start: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.spec.to_json()
        out.pop("public", None)
        out["before"] = self.before
        out["reason"] = self.reason
        if self.start is not None:
            out["start"] = self.start
        return out


class Published(tuple[RouteSpec, ...]):
    """What an integration introspects: the routes to publish (it *is* a tuple of them, so code
    that expects a sequence of routes keeps working) and, in ``shadows``, the app's other routes.
    """

    shadows: tuple[Shadow, ...]

    def __new__(cls, routes: Iterable[RouteSpec] = (), shadows: Iterable[Shadow] = ()) -> Published:
        self = super().__new__(cls, routes)
        self.shadows = tuple(shadows)
        return self

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        return tuple(self)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Everything one running process publishes about itself.

    ``routing`` says how the app picks between overlapping routes: ``"specificity"`` (werkzeug:
    static beats typed beats str beats path) or ``"ordered"`` (Starlette: first declared wins).
    """

    service: str
    instance_id: str
    url: str
    routes: tuple[RouteSpec, ...]
    state: State = "serving"
    routing: Routing = "specificity"
    zone: str | None = None
    weight: int = 100
    version: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    framework: str | None = None
    pid: int | None = None
    hostname: str | None = None
    started_at: float | None = None
    routeset: str | None = None  # the digest of the route set it was published with (schema 2)
    shadows: tuple[Shadow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "service": self.service,
            "instance": self.instance_id,
            "url": self.url,
            "state": self.state,
            "routing": self.routing,
            "weight": self.weight,
            "routes": [r.to_json() for r in self.routes],
        }
        for name in ("zone", "version", "framework", "pid", "hostname", "started_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.shadows:
            out["shadows"] = [s.to_json() for s in self.shadows]
        return out

    def encode(self) -> bytes:
        """The record as the bytes stored in the registry."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    def with_state(self, state: State) -> InstanceRecord:
        """A copy with another state (``serving`` or ``draining``)."""
        return _replace(self, state=state)

    @classmethod
    def decode(cls, key: str, value: bytes | str) -> InstanceRecord:
        """Parse and validate a stored record; raise :class:`~meshware.BadRecord` if unusable.

        Total: any ``value`` gives a record or a ``BadRecord`` (see the module notes' bounds).
        """
        try:
            return cls._decode(key, value)
        except BadRecord:
            raise
        except Exception as exc:  # a bug of ours on hostile input: still only this record
            raise BadRecord(
                key, f"could not be read ({type(exc).__name__}: {_show(exc)})"
            ) from None

    @classmethod
    def _decode(cls, key: str, value: bytes | str) -> InstanceRecord:
        if not isinstance(value, bytes | str):
            raise BadRecord(key, f"value must be bytes, got {type(value).__name__}")
        if len(value) > MAX_RECORD_BYTES:
            raise BadRecord(
                key, f"{len(value)} bytes, more than MAX_RECORD_BYTES ({MAX_RECORD_BYTES})"
            )
        try:
            data = json.loads(value)
        except RecursionError:
            raise BadRecord(key, f"nested deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH})") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRecord(key, f"not JSON ({_show(exc)})") from None
        _check_tree(key, data)
        return cls.from_json(key, data)

    @classmethod
    def from_json(cls, key: str, data: object, *, max_routes: int = MAX_ROUTES) -> InstanceRecord:
        """Validate a decoded JSON value; raise :class:`~meshware.BadRecord` if unusable.

        ``max_routes``: the route-count bound (a route set has its own, larger one).
        """
        from .templates import parse_template  # local: templates imports nothing from here

        if not isinstance(data, dict):
            raise BadRecord(key, f"expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise BadRecord(
                key, f"unsupported schema {_show(schema)} (this meshware reads {SCHEMA_VERSION})"
            )
        service = _text(key, data, "service")
        if not _SERVICE_RE.fullmatch(service):
            raise BadRecord(key, f"invalid service name {_show(service)}")
        instance_id = _text(key, data, "instance")
        if not _INSTANCE_RE.fullmatch(instance_id):
            raise BadRecord(key, f"invalid instance id {_show(instance_id)}")
        url = _text(key, data, "url")
        problem = check_url(url)
        if problem is not None:
            raise BadRecord(key, problem)
        state = data.get("state", "serving")
        if state not in _STATES:
            raise BadRecord(key, f"state must be one of {_STATES}, got {_show(state)}")
        routing = data.get("routing", "specificity")
        if routing not in _ROUTINGS:
            raise BadRecord(key, f"routing must be one of {_ROUTINGS}, got {_show(routing)}")
        weight = data.get("weight", 100)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 10_000:
            raise BadRecord(key, f"weight must be a whole number 0-10000, got {_show(weight)}")
        labels = data.get("labels", {})
        if (
            not isinstance(labels, dict)
            or len(labels) > MAX_LABELS
            or not all(
                isinstance(k, str) and isinstance(v, str) and _plain(k) and _plain(v)
                for k, v in labels.items()
            )
        ):
            raise BadRecord(
                key,
                f"labels must be an object of at most {MAX_LABELS} strings of at most "
                f"{MAX_FIELD_LENGTH} characters, without control characters",
            )
        raw_routes = _field(key, data, "routes", list)
        if len(raw_routes) > max_routes:
            raise BadRecord(key, f"{len(raw_routes)} routes, more than the bound ({max_routes})")
        routes = []
        for i, raw in enumerate(raw_routes):
            route = _route_from_json(key, i, raw)
            try:
                _check_weights(parse_template(route.template), route.weights, route.patterns)
                if route.host is not None:
                    parse_template(route.host, host=True)
            except (ValueError, re.error) as exc:
                raise BadRecord(key, f"routes[{i}]: {_show(exc)}") from None
            # Every instance of a service publishes the same routes: share one object each.
            routes.append(_SHARED_SPECS.setdefault(route, route))
        raw_shadows = data.get("shadows", [])
        if not isinstance(raw_shadows, list) or len(raw_shadows) > MAX_ROUTES:
            raise BadRecord(key, f"field 'shadows' must be a list of at most {MAX_ROUTES}")
        shadows = []
        for i, raw in enumerate(raw_shadows):
            shadows.append(_shadow_from_json(key, i, raw, len(routes)))
        if len(_SHARED_SPECS) > 200_000:
            _SHARED_SPECS.clear()
        pid = _optional(key, data, "pid", int)
        return cls(
            service=service,
            instance_id=instance_id,
            url=url,
            routes=tuple(routes),
            state=state,
            routing=routing,
            zone=_optional_text(key, data, "zone"),
            weight=weight,
            version=_optional_text(key, data, "version"),
            labels=dict(labels),
            framework=_optional_text(key, data, "framework"),
            pid=pid,
            hostname=_optional_text(key, data, "hostname"),
            started_at=_optional_number(key, data, "started_at"),
            shadows=tuple(shadows),
        )


_SHARED_SPECS: dict[RouteSpec, RouteSpec] = {}


def _replace(record: InstanceRecord, **changes: Any) -> InstanceRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def _show(value: object, limit: int = 80) -> str:
    """A short repr for messages: a hostile record must not make its warning huge."""
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(text: str, limit: int = MAX_FIELD_LENGTH) -> bool:
    """A string a person may read: bounded, no control characters."""
    return len(text) <= limit and _CONTROL_RE.search(text) is None


def _check_tree(key: str, data: object) -> None:
    """Depth and valid Unicode everywhere in a decoded value (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE_RE.search(node):
                raise BadRecord(key, "holds a string that is not valid Unicode (a lone surrogate)")
            continue
        if isinstance(node, dict):
            if depth > MAX_JSON_DEPTH:
                raise BadRecord(key, f"nested deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH})")
            for k, v in node.items():
                stack.append((k, depth))
                if isinstance(v, dict | list | str):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_JSON_DEPTH:
                raise BadRecord(key, f"nested deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH})")
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list | str))


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be an instance's base URL, or ``None`` when it can.

    Exactly ``http(s)://host[:port]``: a host name (labels of letters, digits, ``-``, ``_``),
    an IPv4 address or a bracketed IPv6 address, a port 1-65535, nothing after it (the whole
    string is matched: a trailing newline is refused); and the host must be allowed by the
    address policy (``MESHWARE_ALLOWED_NETWORKS``).
    """
    usage = "url must be http(s)://host[:port] (port 1-65535), with no path"
    if not isinstance(url, str) or len(url) > MAX_FIELD_LENGTH:
        return f"{usage}, got {_show(url)}"
    m = _URL_RE.fullmatch(url)
    if m is None or (m.group(2) is not None and int(m.group(2)) > 65535):
        return f"{usage}, got {_show(url)}"
    host = m.group(1)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{usage}: {_show(host)} is not an IPv6 address"
        host = host[1:-1]
    elif host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{usage}: {_show(host)} is not an IPv4 address"
    else:
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
            return f"{usage}: {_show(host)} is not a valid host name"
    refused = _policy[0].refusal(host)
    if refused is not None:
        return f"url {_show(url)}: {refused}"
    return None


_policy: list[AddressPolicy] = [default_policy()]


def set_address_policy(policy: AddressPolicy | None) -> None:
    """Install the policy every decode checks record hosts with (``None``: the default)."""
    _policy[0] = policy if policy is not None else default_policy()


def address_policy() -> AddressPolicy:
    """The address policy in force in this process."""
    return _policy[0]


def _text(key: str, data: dict[str, Any], name: str) -> str:
    value: str = _field(key, data, name, str)
    if not _plain(value):
        raise BadRecord(
            key,
            f"field {name!r} must be at most {MAX_FIELD_LENGTH} characters without control "
            "characters",
        )
    return value


def _optional_text(key: str, data: dict[str, Any], name: str) -> str | None:
    if data.get(name) is None:
        return None
    return _text(key, data, name)


def _field(key: str, data: dict[str, Any], name: str, typ: type) -> Any:
    if name not in data:
        raise BadRecord(key, f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise BadRecord(key, f"field {name!r} must be {typ.__name__}, got {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise BadRecord(key, f"field {name!r} is out of range")
    return value


def _optional(key: str, data: dict[str, Any], name: str, typ: type) -> Any:
    if data.get(name) is None:
        return None
    return _field(key, data, name, typ)


def _optional_number(key: str, data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRecord(key, f"field {name!r} must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BadRecord(key, f"field {name!r} must be a finite number")
    return number


def _shadow_from_json(key: str, index: int, raw: object, n_routes: int) -> Shadow:
    from .templates import parse_template

    where = f"shadows[{index}]"
    spec = _route_from_json(key, index, raw, where=where)
    assert isinstance(raw, dict)
    before = raw.get("before", n_routes)
    if isinstance(before, bool) or not isinstance(before, int) or not 0 <= before <= n_routes:
        raise BadRecord(key, f"{where}.before must be a whole number 0-{n_routes}")
    reason = raw.get("reason", "excluded")
    if reason not in _SHADOW_REASONS:
        raise BadRecord(
            key, f"{where}.reason must be one of {_SHADOW_REASONS}, got {_show(reason)}"
        )
    try:
        _check_weights(parse_template(spec.template), spec.weights, spec.patterns)
        if spec.host is not None:
            parse_template(spec.host, host=True)
    except (ValueError, re.error) as exc:
        raise BadRecord(key, f"{where}: {_show(exc)}") from None
    start = raw.get("start")
    if start is not None and (
        isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 2 * MAX_ROUTES
    ):
        raise BadRecord(key, f"{where}.start must be a whole number 0-{2 * MAX_ROUTES}")
    if spec.public:
        spec = _replace_spec(spec, public=False)  # a shadow is never public
    return Shadow(_SHARED_SPECS.setdefault(spec, spec), before, reason, start)


def _replace_spec(spec: RouteSpec, **changes: Any) -> RouteSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _check_weights(
    template: Any, weights: tuple[int, ...] | None, patterns: tuple[str | None, ...] | None = None
) -> None:
    if weights is not None and len(weights) != len(template.params):
        raise ValueError(
            f"weights has {len(weights)} entries for {len(template.params)} parameters"
        )
    if patterns is not None and len(patterns) != len(template.params):
        raise ValueError(
            f"patterns has {len(patterns)} entries for {len(template.params)} parameters"
        )


def _route_from_json(key: str, index: int, raw: object, *, where: str = "") -> RouteSpec:
    where = where or f"routes[{index}]"
    if not isinstance(raw, dict):
        raise BadRecord(key, f"{where} must be an object")
    template = raw.get("template")
    if not isinstance(template, str) or not template.startswith("/"):
        raise BadRecord(key, f"{where}.template must be a string starting with '/'")
    if len(template) > MAX_TEMPLATE_LENGTH or _CONTROL_RE.search(template):
        raise BadRecord(
            key,
            f"{where}.template must be at most MAX_TEMPLATE_LENGTH ({MAX_TEMPLATE_LENGTH}) "
            "characters without control characters",
        )
    segments = template.count("/")
    if segments > MAX_SEGMENTS:
        raise BadRecord(
            key,
            f"{where}.template has {segments} segments, more than MAX_SEGMENTS ({MAX_SEGMENTS})",
        )
    methods = raw.get("methods")
    if (
        not isinstance(methods, list)
        or not methods
        or len(methods) > MAX_METHODS
        or not all(
            isinstance(m, str) and (m == ANY_METHOD or _METHOD_RE.fullmatch(m)) for m in methods
        )
    ):
        raise BadRecord(
            key,
            f"{where}.methods must be a non-empty list of at most {MAX_METHODS} upper-case "
            "methods or '*'",
        )
    kind = raw.get("kind", "http")
    if kind not in _KINDS:
        raise BadRecord(key, f"{where}.kind must be one of {_KINDS}, got {_show(kind)}")
    timeout = raw.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= 86_400  # NaN fails this too
    ):
        raise BadRecord(key, f"{where}.timeout must be a positive number of seconds (<= 86400)")
    retries = raw.get("retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100
    ):
        raise BadRecord(key, f"{where}.retries must be a whole number 0-100")
    idempotent = raw.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise BadRecord(key, f"{where}.idempotent must be true or false")
    public = raw.get("public", False)
    if not isinstance(public, bool):
        raise BadRecord(key, f"{where}.public must be true or false")
    limits = None
    if raw.get("limits") is not None:
        try:
            limits = limits_from_json(raw["limits"])
        except ValueError as exc:
            raise BadRecord(key, f"{where}.limits: {exc}") from None
    name = raw.get("name")
    if isinstance(name, str) and not _plain(name):
        raise BadRecord(key, f"{where}.name must be at most {MAX_FIELD_LENGTH} plain characters")
    host = raw.get("host")
    if isinstance(host, str) and not _plain(host, MAX_TEMPLATE_LENGTH):
        raise BadRecord(key, f"{where}.host must be at most {MAX_TEMPLATE_LENGTH} plain characters")
    weights = raw.get("weights")
    if weights is not None and (
        not isinstance(weights, list)
        or len(weights) > 64
        or not all(
            isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 10_000 for w in weights
        )
    ):
        raise BadRecord(key, f"{where}.weights must be a list of whole numbers 0-10000")
    patterns = raw.get("patterns")
    if patterns is not None and (
        not isinstance(patterns, list)
        or len(patterns) > 64
        or not all(
            p is None or (isinstance(p, str) and _plain(p, MAX_TEMPLATE_LENGTH)) for p in patterns
        )
    ):
        raise BadRecord(key, f"{where}.patterns must be a list of regexes or nulls")
    strict_slashes = raw.get("strict_slashes", True)
    if not isinstance(strict_slashes, bool):
        raise BadRecord(key, f"{where}.strict_slashes must be true or false")
    return RouteSpec(
        template=template,
        methods=tuple(sorted(set(methods))),
        name=name if isinstance(name, str) else None,
        public=public,
        kind=kind,
        host=host if isinstance(host, str) else None,
        idempotent=idempotent,
        timeout=float(timeout) if timeout is not None else None,
        retries=retries,
        limits=limits,
        weights=tuple(weights) if weights is not None else None,
        strict_slashes=strict_slashes,
        patterns=tuple(patterns) if patterns is not None else None,
    )


def instances_prefix(prefix: str) -> str:
    """The key prefix under which every instance record lives."""
    return prefix.rstrip("/") + "/v1/instances/"


def instance_key(prefix: str, service: str, instance_id: str) -> str:
    """The key of one instance's record."""
    return f"{instances_prefix(prefix)}{service}/{instance_id}"


def split_instance_key(prefix: str, key: str) -> tuple[str, str] | None:
    """``(service, instance_id)`` from a record key, or ``None`` if the key is not one."""
    base = instances_prefix(prefix)
    if not key.startswith(base):
        return None
    rest = key[len(base) :]
    service, sep, instance_id = rest.partition("/")
    if not sep or not service or not instance_id or "/" in instance_id:
        return None
    return service, instance_id
