"""The registry record: what one running process publishes about itself.

Design notes
------------
The record is a documented, stable contract (README "The registry record"): operators read it
with ``etcdctl`` and processes written in other languages may publish or read it. So:

* one key per running process, ``<prefix>/v1/instances/<service>/<instance-id>``, under its lease;
* the value is a JSON object with ``"schema": 1``; readers ignore fields they do not know, and
  reject (with :class:`~meshware.BadRecord`, never a crash) what they cannot use;
* routes are published in the canonical template form of :mod:`meshware._core.templates`.

This module is pure: encoding, decoding and validation, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import BadRecord, ConfigError

__all__ = [
    "ANY_METHOD",
    "SCHEMA_VERSION",
    "InstanceRecord",
    "RouteSpec",
    "instance_key",
    "instances_prefix",
    "split_instance_key",
    "validate_service_name",
]

SCHEMA_VERSION = 1
ANY_METHOD = "*"

State = Literal["serving", "draining"]
Kind = Literal["http", "websocket", "mount"]
Routing = Literal["specificity", "ordered"]

_SERVICE_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")
_METHOD_RE = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_URL_RE = re.compile(r"^https?://(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?$")
_STATES = ("serving", "draining")
_KINDS = ("http", "websocket", "mount")
_ROUTINGS = ("specificity", "ordered")


def validate_service_name(name: object, *, setting: str = "service") -> str:
    """Check a service name: lower-case letters, digits, ``.``, ``_``, ``-``; 1-63 characters."""
    if not isinstance(name, str) or not _SERVICE_RE.match(name):
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
    per-route client policy, ``None`` where the client's defaults apply.
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
        return out


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
        return out

    def encode(self) -> bytes:
        """The record as the bytes stored in the registry."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    def with_state(self, state: State) -> InstanceRecord:
        """A copy with another state (``serving`` or ``draining``)."""
        return _replace(self, state=state)

    @classmethod
    def decode(cls, key: str, value: bytes | str) -> InstanceRecord:
        """Parse and validate a stored record; raise :class:`~meshware.BadRecord` if unusable."""
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRecord(key, f"not JSON ({exc})") from None
        return cls.from_json(key, data)

    @classmethod
    def from_json(cls, key: str, data: object) -> InstanceRecord:
        """Validate a decoded JSON value; raise :class:`~meshware.BadRecord` if unusable."""
        from .templates import parse_template  # local: templates imports nothing from here

        if not isinstance(data, dict):
            raise BadRecord(key, f"expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise BadRecord(
                key, f"unsupported schema {schema!r} (this meshware reads {SCHEMA_VERSION})"
            )
        service = _field(key, data, "service", str)
        if not _SERVICE_RE.match(service):
            raise BadRecord(key, f"invalid service name {service!r}")
        instance_id = _field(key, data, "instance", str)
        if not _INSTANCE_RE.match(instance_id):
            raise BadRecord(key, f"invalid instance id {instance_id!r}")
        url = _field(key, data, "url", str)
        m = _URL_RE.match(url)
        if m is None or (m.group(1) is not None and not 0 < int(m.group(1)) < 65536):
            raise BadRecord(
                key, f"url must be http(s)://host[:port] (port 1-65535), with no path, got {url!r}"
            )
        state = data.get("state", "serving")
        if state not in _STATES:
            raise BadRecord(key, f"state must be one of {_STATES}, got {state!r}")
        routing = data.get("routing", "specificity")
        if routing not in _ROUTINGS:
            raise BadRecord(key, f"routing must be one of {_ROUTINGS}, got {routing!r}")
        weight = data.get("weight", 100)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 10_000:
            raise BadRecord(key, f"weight must be a whole number 0-10000, got {weight!r}")
        labels = data.get("labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise BadRecord(key, "labels must be an object of strings")
        raw_routes = _field(key, data, "routes", list)
        routes = []
        for i, raw in enumerate(raw_routes):
            route = _route_from_json(key, i, raw)
            try:
                parse_template(route.template)
                if route.host is not None:
                    parse_template(route.host, host=True)
            except ValueError as exc:
                raise BadRecord(key, f"routes[{i}]: {exc}") from None
            # Every instance of a service publishes the same routes: share one object each.
            routes.append(_SHARED_SPECS.setdefault(route, route))
        if len(_SHARED_SPECS) > 200_000:
            _SHARED_SPECS.clear()
        return cls(
            service=service,
            instance_id=instance_id,
            url=url,
            routes=tuple(routes),
            state=state,
            routing=routing,
            zone=_optional(key, data, "zone", str),
            weight=weight,
            version=_optional(key, data, "version", str),
            labels=dict(labels),
            framework=_optional(key, data, "framework", str),
            pid=_optional(key, data, "pid", int),
            hostname=_optional(key, data, "hostname", str),
            started_at=_optional_number(key, data, "started_at"),
        )


_SHARED_SPECS: dict[RouteSpec, RouteSpec] = {}


def _replace(record: InstanceRecord, **changes: Any) -> InstanceRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def _field(key: str, data: dict[str, Any], name: str, typ: type) -> Any:
    if name not in data:
        raise BadRecord(key, f"missing field {name!r}")
    value = data[name]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise BadRecord(key, f"field {name!r} must be {typ.__name__}, got {type(value).__name__}")
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
    return float(value)


def _route_from_json(key: str, index: int, raw: object) -> RouteSpec:
    where = f"routes[{index}]"
    if not isinstance(raw, dict):
        raise BadRecord(key, f"{where} must be an object")
    template = raw.get("template")
    if not isinstance(template, str) or not template.startswith("/"):
        raise BadRecord(key, f"{where}.template must be a string starting with '/'")
    methods = raw.get("methods")
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) and (m == ANY_METHOD or _METHOD_RE.match(m)) for m in methods)
    ):
        raise BadRecord(
            key, f"{where}.methods must be a non-empty list of upper-case methods or '*'"
        )
    kind = raw.get("kind", "http")
    if kind not in _KINDS:
        raise BadRecord(key, f"{where}.kind must be one of {_KINDS}, got {kind!r}")
    timeout = raw.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise BadRecord(key, f"{where}.timeout must be a positive number")
    retries = raw.get("retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise BadRecord(key, f"{where}.retries must be a whole number >= 0")
    idempotent = raw.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise BadRecord(key, f"{where}.idempotent must be true or false")
    public = raw.get("public", False)
    if not isinstance(public, bool):
        raise BadRecord(key, f"{where}.public must be true or false")
    name = raw.get("name")
    host = raw.get("host")
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
