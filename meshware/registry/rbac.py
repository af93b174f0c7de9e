"""Per-service write permissions with etcd's own RBAC: one service cannot overwrite another.

Design notes
------------
Without authentication anyone who can reach etcd can write any record: take another service's
routes, or point its name at another address. etcd's role-based access control closes that: a
user may only write the key ranges its roles grant. meshware's keys are laid out so that every
key a service writes is under a range of its own:

* ``<prefix>/v1/instances/<service>/`` its instance records (under their leases);
* ``<prefix>/v1/routesets/<service>/`` its route sets (schema 2).

:func:`grant_service` creates (or completes) the role ``meshware:<service>`` with read-write on
exactly those ranges and read on the whole prefix (every member also reads the mesh: conflict
checks, its own key's watch), and a user of the same name holding it. :func:`setup_auth`
creates the ``root`` user etcd requires, a ``meshware:reader`` role and user that read the whole
prefix (callers, the edge, the CLI) and turns authentication on. Leases need no key
permission in etcd; revoking one needs write permission on its keys, which the owner has.

Both are idempotent: "already exists" answers are accepted and the permissions granted again.
Keys under other ``<prefix>/v1/<kind>/`` ranges (operator overrides, edges) are granted to
no service: write them as root or with roles of your own.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from .._core.records import instances_prefix, validate_service_name
from .._errors import EtcdError
from ..etcd import EtcdClient, prefix_range_end
from ..etcd import _protocol as p

__all__ = ["READER_ROLE", "Grant", "grant_service", "service_ranges", "setup_auth"]

READER_ROLE = "meshware:reader"


@dataclass(frozen=True)
class Grant:
    """What :func:`grant_service` set up."""

    role: str
    user: str
    password: str | None  # None when the user existed already (its password unchanged)
    write: tuple[str, ...]  # key prefixes the role may write
    read: str  # the key prefix the role may read


def service_ranges(prefix: str, service: str) -> tuple[str, ...]:
    """The key prefixes ``service`` writes (and only it may, with :func:`grant_service`)."""
    validate_service_name(service)
    base = prefix.rstrip("/") + "/v1/"
    return (f"{instances_prefix(prefix)}{service}/", f"{base}routesets/{service}/")


def grant_service(
    client: EtcdClient,
    prefix: str,
    service: str,
    *,
    user: str | None = None,
    password: str | None = None,
) -> Grant:
    """Create the role and user of ``service`` (see the module notes); ``client`` is root."""
    role = f"meshware:{service}"
    user = user or service
    write = service_ranges(prefix, service)
    read = prefix.rstrip("/") + "/"
    _call(client, "role/add", {"name": role}, exists_ok=True)
    for key in write:
        _grant(client, role, key, "READWRITE")
    _grant(client, role, read, "READ")
    created = _add_user(client, user, password)
    _call(client, "user/grant", {"user": user, "role": role})
    return Grant(role, user, created, write, read)


def setup_auth(
    client: EtcdClient,
    prefix: str,
    *,
    root_password: str,
    reader_password: str | None = None,
) -> str | None:
    """Create root, the reader role and user, and turn authentication on.

    Returns the reader's password when it was created here (generated unless given).
    """
    _add_user(client, "root", root_password)
    _call(client, "user/grant", {"user": "root", "role": "root"})
    _call(client, "role/add", {"name": READER_ROLE}, exists_ok=True)
    _grant(client, READER_ROLE, prefix.rstrip("/") + "/", "READ")
    created = _add_user(client, "meshware-reader", reader_password)
    _call(client, "user/grant", {"user": "meshware-reader", "role": READER_ROLE})
    _call(client, "enable", {})
    return created


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _grant(client: EtcdClient, role: str, key: str, perm: str) -> None:
    body = {
        "name": role,
        "perm": {"key": _b64(key), "range_end": _b64(prefix_range_end(key)), "permType": perm},
    }
    _call(client, "role/grant", body)


def _add_user(client: EtcdClient, user: str, password: str | None) -> str | None:
    password = password or secrets.token_urlsafe(18)
    if _call(client, "user/add", {"name": user, "password": password}, exists_ok=True):
        return password
    return None


def _call(client: EtcdClient, path: str, body: p.Json, *, exists_ok: bool = False) -> bool:
    """One auth API call; False when it answered "already exists" and ``exists_ok``."""
    try:
        client._call(p.Request(f"/v3/auth/{path}", body, lambda answer: None))
    except EtcdError as exc:
        if exists_ok and "already exists" in str(exc):
            return False
        raise
    return True
