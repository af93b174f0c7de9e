"""Settings: from arguments, then a framework's config mapping, then ``MESHWARE_*`` variables.

Every setting is validated when it is read; a wrong one raises :class:`~meshware.ConfigError`
naming the setting and what was expected, so a service fails at startup, not at its first call.

==============================  =========================  =====================================
setting (argument)              environment / app.config   default
==============================  =========================  =====================================
``etcd_endpoints``              MESHWARE_ETCD_ENDPOINTS    ``http://127.0.0.1:2379``
``prefix``                      MESHWARE_PREFIX            ``/meshware``
``service``                     MESHWARE_SERVICE           (required for a member)
``advertise_url``               MESHWARE_ADVERTISE_URL     discovered from the listening socket
``lease_ttl``                   MESHWARE_LEASE_TTL         ``5`` (seconds, 2-300)
``etcd_ca_file``                MESHWARE_ETCD_CA_FILE
``etcd_cert_file``              MESHWARE_ETCD_CERT_FILE
``etcd_key_file``               MESHWARE_ETCD_KEY_FILE
``etcd_username``               MESHWARE_ETCD_USERNAME
``etcd_password``               MESHWARE_ETCD_PASSWORD
``etcd_timeout``                MESHWARE_ETCD_TIMEOUT      ``2`` (seconds)
``zone`` / ``version``          MESHWARE_ZONE / _VERSION
``weight``                      MESHWARE_WEIGHT            ``100``
``drain_delay``                 MESHWARE_DRAIN_DELAY       ``0.25`` (seconds between marking the
                                                           instance draining and withdrawing it,
                                                           before the server stops)
``strict``                      MESHWARE_STRICT            ``false``
(every reader)                  MESHWARE_ALLOWED_NETWORKS  anything but link-local / metadata
``record_schema``               MESHWARE_RECORD_SCHEMA     ``2`` (routes in a shared route set;
                                                           ``1``: inline, for a migration)
==============================  =========================  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._core.records import validate_service_name
from ._errors import ConfigError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_PREFIX",
    "EtcdSettings",
    "MemberSettings",
    "install_address_policy",
]

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/meshware"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Sources:
    """Looks a setting up in arguments, then the app's config, then the environment."""

    def __init__(
        self, args: Mapping[str, Any], app_config: Mapping[str, Any] | None, env: Mapping[str, str]
    ) -> None:
        self.args = args
        self.app_config = app_config or {}
        self.env = env

    def get(self, name: str) -> tuple[Any, str] | None:
        value = self.args.get(name)
        if value is not None:
            return value, f"{name}="
        var = "MESHWARE_" + name.upper()
        if self.app_config.get(var) is not None:
            return self.app_config[var], f"app.config[{var!r}]"
        if var in self.env and self.env[var] != "":
            return self.env[var], var
        return None

    def string(self, name: str, default: str | None = None) -> str | None:
        got = self.get(name)
        if got is None:
            return default
        value, where = got
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}", setting=where)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float,
        high: float,
        unit: str = "a number of seconds",
    ) -> float:
        got = self.get(name)
        if got is None:
            return default
        value, where = got
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {unit}, got {value!r}", setting=where) from None
        if not low <= number <= high:
            raise ConfigError(
                f"{where} must be between {low:g} and {high:g}, got {value!r}", setting=where
            )
        return number

    def flag(self, name: str, default: bool) -> bool:
        got = self.get(name)
        if got is None:
            return default
        value, where = got
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}", setting=where)


def _check_url(value: str, where: str, *, path_allowed: bool = False) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where} must be an http:// or https:// URL with a host, got {value!r}", setting=where
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port: {value!r}", setting=where) from None
    if not path_allowed and parts.path not in ("", "/"):
        raise ConfigError(f"{where} must not have a path, got {value!r}", setting=where)
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """How to reach etcd, and under which prefix the mesh lives."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    prefix: str = DEFAULT_PREFIX
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 2.0

    @classmethod
    def load(
        cls,
        args: Mapping[str, Any] | None = None,
        *,
        app_config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> EtcdSettings:
        """Read and validate the etcd settings (arguments win over app config over env)."""
        src = _Sources(args or {}, app_config, os.environ if env is None else env)
        return cls._from(src)

    @classmethod
    def _from(cls, src: _Sources) -> EtcdSettings:
        # every reader of the registry loads these settings: install its address policy
        install_address_policy({"MESHWARE_ALLOWED_NETWORKS": src.string("allowed_networks") or ""})
        raw = src.get("etcd_endpoints")
        if raw is None:
            endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
        else:
            value, where = raw
            items = value.split(",") if isinstance(value, str) else list(value)
            endpoints = tuple(_check_url(str(e).strip(), where) for e in items if str(e).strip())
            if not endpoints:
                raise ConfigError(
                    f"{where} must list at least one etcd URL, e.g. http://127.0.0.1:2379",
                    setting=where,
                )
        prefix = src.string("prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX
        if not prefix.startswith("/") or prefix.rstrip("/") == "" or " " in prefix:
            raise ConfigError(
                f"MESHWARE_PREFIX must be a key prefix like /meshware, got {prefix!r}",
                setting="prefix",
            )
        files = {}
        for name in ("etcd_ca_file", "etcd_cert_file", "etcd_key_file"):
            path = src.string(name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(
                    f"MESHWARE_{name.upper()} names {path!r}, which is not a readable file",
                    setting=name,
                )
            files[name] = path
        if (files["etcd_cert_file"] is None) != (files["etcd_key_file"] is None):
            raise ConfigError(
                "a client certificate needs both MESHWARE_ETCD_CERT_FILE and MESHWARE_ETCD_KEY_FILE",
                setting="etcd_cert_file",
            )
        username = src.string("etcd_username")
        password = src.string("etcd_password")
        if (username is None) != (password is None):
            raise ConfigError(
                "etcd authentication needs both MESHWARE_ETCD_USERNAME and MESHWARE_ETCD_PASSWORD",
                setting="etcd_username",
            )
        return cls(
            endpoints=endpoints,
            prefix=prefix.rstrip("/"),
            ca_file=files["etcd_ca_file"],
            cert_file=files["etcd_cert_file"],
            key_file=files["etcd_key_file"],
            username=username,
            password=password,
            timeout=src.number("etcd_timeout", 2.0, low=0.05, high=120),
        )


@dataclass(frozen=True, slots=True)
class MemberSettings:
    """What a service instance publishes about itself, and how it keeps its registration."""

    service: str
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    advertise_url: str | None = None
    lease_ttl: int = 5
    zone: str | None = None
    version: str | None = None
    weight: int = 100
    drain_delay: float = 0.25
    strict: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    record_schema: int = 2

    @classmethod
    def load(
        cls,
        args: Mapping[str, Any] | None = None,
        *,
        app_config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> MemberSettings:
        """Read and validate a member's settings (arguments win over app config over env)."""
        src = _Sources(args or {}, app_config, os.environ if env is None else env)
        service = src.string("service")
        if service is None:
            raise ConfigError(
                "no service name: pass service='...' or set MESHWARE_SERVICE", setting="service"
            )
        validate_service_name(service)
        advertise = src.string("advertise_url")
        if advertise is not None:
            advertise = _check_url(advertise, "MESHWARE_ADVERTISE_URL")
        ttl = src.number("lease_ttl", 5, low=2, high=300)
        if ttl != int(ttl):
            raise ConfigError(
                f"MESHWARE_LEASE_TTL must be a whole number of seconds, got {ttl!r}",
                setting="lease_ttl",
            )
        weight = src.number("weight", 100, low=0, high=10_000, unit="a whole number 0-10000")
        labels = args.get("labels") if args else None
        if labels is not None and not (
            isinstance(labels, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        ):
            raise ConfigError("labels= must be a mapping of strings to strings", setting="labels")
        return cls(
            service=service,
            etcd=EtcdSettings._from(src),
            advertise_url=advertise,
            lease_ttl=int(ttl),
            zone=src.string("zone"),
            version=src.string("version"),
            weight=int(weight),
            drain_delay=src.number("drain_delay", 0.25, low=0, high=600),
            strict=src.flag("strict", False),
            labels=dict(labels or {}),
            record_schema=_record_schema(src),
        )


def install_address_policy(env: Mapping[str, str] | None = None) -> None:
    """Install ``MESHWARE_ALLOWED_NETWORKS`` as the address policy record decoding checks.

    Unset or empty: the default policy (anything but link-local, metadata, multicast and
    "this host" addresses). A value that does not parse raises :class:`ConfigError`.
    """
    from ._core.networks import AddressPolicy
    from ._core.records import set_address_policy

    text = (os.environ if env is None else env).get("MESHWARE_ALLOWED_NETWORKS", "").strip()
    if not text:
        set_address_policy(None)
        return
    try:
        policy = AddressPolicy.parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc), setting="MESHWARE_ALLOWED_NETWORKS") from None
    set_address_policy(policy)


def _record_schema(src: _Sources) -> int:
    got = src.get("record_schema")
    if got is None:
        return 2
    value, where = got
    if str(value).strip() not in ("1", "2"):
        raise ConfigError(
            f"{where} must be 1 (routes inline in each record) or 2 (a shared route set), "
            f"got {value!r}",
            setting=where,
        )
    return int(str(value).strip())
