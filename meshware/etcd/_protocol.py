"""etcd's v3 JSON API as pure data: requests to build, answers to parse. No I/O here.

Design notes
------------
etcd serves its gRPC API as JSON through a gRPC gateway (``POST /v3/kv/range`` and so on).
Every call is described by a :class:`Request`: the URL path, the JSON body and the function
that turns the decoded answer into a result. The sync and async clients only send requests and
hand the answers back to :func:`parse_answer` / :func:`parse_watch_line`, so both behave the
same by construction and the decoding is unit-tested without a network.

The gateway's quirks, all handled here:

* keys and values are base64 (keys are decoded to ``str`` with ``surrogateescape``, so keys
  that are not UTF-8 still round-trip);
* 64-bit numbers arrive as JSON strings (they are sent as strings too);
* fields with default values are omitted: a ``PUT`` watch event has no ``type``, an empty range
  has no ``kvs`` and no ``count``, ``watch_id`` 0 and ``lease`` 0 are absent (and a failed txn
  has no ``succeeded``, should txn ever be added): every field is read with its default;
* errors come as ``{"error": "...", "code": N, "message": "..."}`` with an HTTP status, and
  inside a stream (watch, lease keep-alive) as one line ``{"error": {"grpc_code": N,
  "http_code": N, "message": "..."}}``;
* "user name is empty" and "authentication failed" come with gRPC code 3 (INVALID_ARGUMENT),
  not 16, so auth errors are recognised by message as well as by code;
* a keep-alive for an unknown lease is not an error but an answer without ``TTL`` (and a
  time-to-live answers ``TTL: -1``); keep-alive is the one call that does not check the token;
* ``/v3/watch`` and ``/v3/lease/keepalive`` are bidirectional gRPC streams: over HTTP/1.1 the
  request body is all a client can send, so each watch is one ``create_request`` on its own
  connection (ended by closing it) and each keep-alive one request and one answer line;
* a watch refused for lack of permission (also: an expired token) is a ``created`` answer that
  is ``canceled`` at once with a ``cancel_reason``; a compacted start revision is a ``canceled``
  answer with ``compact_revision``; in both cases the gateway keeps the stream open.

Errors map onto meshware's tree (see :mod:`meshware._errors`): authentication and permission
problems raise :class:`EtcdAuthError`, an unknown lease :class:`LeaseLost`, a compacted
revision :class:`EtcdCompacted`, gRPC ``UNAVAILABLE`` :class:`RegistryUnavailable`, anything
else :class:`EtcdError` with etcd's gRPC ``code`` and the HTTP ``status``. An answer that is
not the JSON etcd sends raises :class:`EtcdError` naming the call; no ``KeyError`` or
``TypeError`` escapes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from meshware._errors import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    LeaseLost,
    RegistryError,
    RegistryUnavailable,
)

__all__ = [
    "CreateResult",
    "DeleteResult",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "PutResult",
    "RangeResult",
    "Request",
    "Status",
    "WatchEvent",
    "WatchResponse",
    "authenticate_request",
    "create_request",
    "delete_request",
    "error_from_answer",
    "lease_grant_request",
    "lease_keepalive_request",
    "lease_revoke_request",
    "lease_time_to_live_request",
    "needs_reauth",
    "next_watch_revision",
    "parse_answer",
    "parse_watch_line",
    "prefix_range_end",
    "put_request",
    "range_request",
    "status_request",
    "watch_request",
]

T = TypeVar("T")
Json = dict[str, Any]

# gRPC status codes etcd uses.
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_OUT_OF_RANGE = 11
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16

_AUTH_MESSAGES = (
    "invalid auth token",
    "user name is empty",
    "authentication failed",
    "permission denied",
    "revision of auth store is old",
    "user name not found",
    "authentication is not enabled",
)
# Errors a fresh token cures (the go client re-authenticates on the same ones).
_REAUTH_MESSAGES = ("invalid auth token", "user name is empty", "revision of auth store is old")


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it. ``lease`` is 0 when the key has no lease."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys of a range read, sorted by key, and the store ``revision`` they were read at.

    ``count`` is the number of keys in the range; ``more`` tells a ``limit`` cut it short.
    """

    kvs: list[KeyValue]
    revision: int
    count: int
    more: bool
    cluster_id: int = field(default=0, compare=False)  # from the header (0 when not said)
    member_id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class PutResult:
    """The store revision the put created, and the key's previous value if asked for."""

    revision: int
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """What a create-if-absent transaction did: ``created``, or the ``existing`` key-value."""

    created: bool
    revision: int
    existing: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The store revision after the delete and how many keys it removed."""

    revision: int
    deleted: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A new lease: its ``id`` and the ``ttl`` etcd granted, in seconds."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease's remaining ``ttl``, the ``granted_ttl`` and the keys attached to it."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[str]


@dataclass(frozen=True, slots=True)
class Status:
    """What ``/v3/maintenance/status`` says about the member that answered."""

    version: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    raft_index: int
    db_size: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: a ``PUT`` (create or update) or a ``DELETE`` of ``kv.key``.

    For a ``DELETE``, ``kv`` holds the key and the deleting ``mod_revision`` only; ``prev_kv``
    is the value before the change when the watch asked for it.
    """

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One answer on a watch stream.

    The first has ``created=True``; later ones carry ``events``, or none at all when they are
    progress notifications. ``revision`` is the store revision the stream has caught up to:
    resume from ``revision + 1``.
    """

    revision: int
    events: list[WatchEvent] = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    watch_id: int = 0
    cancel_reason: str = ""
    cluster_id: int = field(default=0, compare=False)  # from the header (0 when not said)
    member_id: int = field(default=0, compare=False)


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One call: ``POST path`` with the JSON ``body``; ``parse`` reads the decoded answer."""

    path: str
    body: Json
    parse: Callable[[Json], T]


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that, with ``key=prefix``, selects every key starting with ``prefix``.

    The prefix with its last byte incremented; trailing ``0xff`` bytes are dropped first. When
    nothing is left (an empty prefix, or only ``0xff`` bytes) it is ``b"\\0"``, which etcd reads
    as "to the end of the keyspace".
    """
    raw = prefix.encode("utf-8", "surrogateescape") if isinstance(prefix, str) else prefix
    stripped = raw.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _key_and_end(key: str, *, prefix: bool) -> Json:
    if not prefix:
        return {"key": _b64(key)}
    # An empty prefix means every key: etcd spells that key="\0", range_end="\0".
    return {"key": _b64(key or b"\0"), "range_end": _b64(prefix_range_end(key))}


def range_request(
    key: str, *, prefix: bool = False, keys_only: bool = False
) -> Request[RangeResult]:
    """Read ``key``, or every key starting with it when ``prefix`` is true."""
    body = _key_and_end(key, prefix=prefix)
    if keys_only:
        body["keys_only"] = True
    return Request("/v3/kv/range", body, _parse_range)


def put_request(
    key: str, value: bytes | str, *, lease: int = 0, prev_kv: bool = False
) -> Request[PutResult]:
    """Write ``value`` at ``key``, attached to ``lease`` when it is not 0."""
    body: Json = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    if prev_kv:
        body["prev_kv"] = True
    return Request("/v3/kv/put", body, _parse_put)


def create_request(key: str, value: bytes | str, *, lease: int = 0) -> Request[CreateResult]:
    """Write ``value`` at ``key`` only if the key does not exist (a transaction on its
    ``create_revision``); otherwise read the key as it is (a transaction never overwrites)."""
    put: Json = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    body: Json = {
        "compare": [
            {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        ],
        "success": [{"request_put": put}],
        "failure": [{"request_range": {"key": _b64(key)}}],
    }
    return Request("/v3/kv/txn", body, _parse_create)


def delete_request(key: str, *, prefix: bool = False) -> Request[DeleteResult]:
    """Delete ``key``, or every key starting with it when ``prefix`` is true."""
    return Request("/v3/kv/deleterange", _key_and_end(key, prefix=prefix), _parse_delete)


def lease_grant_request(ttl: int) -> Request[LeaseGrant]:
    """Grant a lease of ``ttl`` seconds (etcd picks the id)."""
    return Request("/v3/lease/grant", {"TTL": str(ttl)}, _parse_lease_grant)


def lease_keepalive_request(lease_id: int) -> Request[int]:
    """Refresh a lease once; the result is its TTL. An unknown lease raises ``LeaseLost``."""
    return Request("/v3/lease/keepalive", {"ID": str(lease_id)}, _parse_keepalive)


def lease_revoke_request(lease_id: int) -> Request[None]:
    """Revoke a lease, deleting its keys."""
    return Request("/v3/lease/revoke", {"ID": str(lease_id)}, _parse_nothing)


def lease_time_to_live_request(lease_id: int, *, keys: bool = True) -> Request[LeaseInfo]:
    """Ask how long a lease has left (and which keys it holds)."""
    body: Json = {"ID": str(lease_id), "keys": keys}
    return Request("/v3/lease/timetolive", body, _parse_time_to_live)


def status_request() -> Request[Status]:
    """Ask the member that answers for its status."""
    return Request("/v3/maintenance/status", {}, _parse_status)


def authenticate_request(username: str, password: str) -> Request[str]:
    """Log in; the result is the token to send as the ``Authorization`` header."""
    body = {"name": username, "password": password}
    return Request("/v3/auth/authenticate", body, _parse_token)


def watch_request(
    key: str,
    *,
    prefix: bool = True,
    start_revision: int | None = None,
    prev_kv: bool = False,
    progress_notify: bool = True,
) -> Request[WatchResponse]:
    """Open a watch on ``key`` (a prefix by default) from ``start_revision`` (default: now).

    The answer is a stream: feed each line to :func:`parse_watch_line`.
    """
    create: Json = _key_and_end(key, prefix=prefix)
    if start_revision:
        create["start_revision"] = str(start_revision)
    if prev_kv:
        create["prev_kv"] = True
    if progress_notify:
        create["progress_notify"] = True
    return Request("/v3/watch", {"create_request": create}, _parse_watch_result)


# -- reading answers -----------------------------------------------------------------------


class _Malformed(Exception):
    """A field does not hold what etcd sends."""


def _field(obj: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    value = obj.get(name, default)
    if not isinstance(value, kind):
        raise _Malformed(f"{name!r} should be {kind.__name__}, not {value!r:.80}")
    return value


def _int(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Malformed(f"{name!r} should be an integer, not {value!r:.80}")
    try:
        return int(value)
    except ValueError:
        raise _Malformed(f"{name!r} should be an integer, not {value!r:.80}") from None


def _obj(obj: Mapping[str, Any], name: str) -> Json:
    return _field(obj, name, dict, {})


def _list(obj: Mapping[str, Any], name: str) -> list[Any]:
    return _field(obj, name, list, [])


def _bytes(obj: Mapping[str, Any], name: str) -> bytes:
    text = _field(obj, name, str, "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed(f"{name!r} should be base64, not {text!r:.80}") from None


def _key(obj: Mapping[str, Any], name: str) -> str:
    return _bytes(obj, name).decode("utf-8", "surrogateescape")


def _revision(answer: Json) -> int:
    return _int(_obj(answer, "header"), "revision")


def _kv(obj: Any) -> KeyValue:
    if not isinstance(obj, dict):
        raise _Malformed(f"a key-value should be an object, not {obj!r:.80}")
    return KeyValue(
        key=_key(obj, "key"),
        value=_bytes(obj, "value"),
        create_revision=_int(obj, "create_revision"),
        mod_revision=_int(obj, "mod_revision"),
        version=_int(obj, "version"),
        lease=_int(obj, "lease"),
    )


def _optional_kv(obj: Json, name: str) -> KeyValue | None:
    return _kv(obj[name]) if obj.get(name) is not None else None


def _parse_range(answer: Json) -> RangeResult:
    header = _obj(answer, "header")
    return RangeResult(
        kvs=[_kv(kv) for kv in _list(answer, "kvs")],
        revision=_revision(answer),
        count=_int(answer, "count"),
        more=_field(answer, "more", bool, False),
        cluster_id=_int(header, "cluster_id"),
        member_id=_int(header, "member_id"),
    )


def _parse_put(answer: Json) -> PutResult:
    return PutResult(revision=_revision(answer), prev_kv=_optional_kv(answer, "prev_kv"))


def _parse_create(answer: Json) -> CreateResult:
    created = _field(answer, "succeeded", bool, False)  # omitted when false
    existing = None
    if not created:
        for response in _list(answer, "responses"):
            if not isinstance(response, dict):
                raise _Malformed(f"a txn response should be an object, not {response!r:.80}")
            kvs = _list(_obj(response, "response_range"), "kvs")
            if kvs:
                existing = _kv(kvs[0])
    return CreateResult(created=created, revision=_revision(answer), existing=existing)


def _parse_delete(answer: Json) -> DeleteResult:
    return DeleteResult(revision=_revision(answer), deleted=_int(answer, "deleted"))


def _parse_lease_grant(answer: Json) -> LeaseGrant:
    if answer.get("error"):  # LeaseGrantResponse has an error *field* too
        raise EtcdError(f"etcd refused the lease: {answer['error']}")
    return LeaseGrant(id=_int(answer, "ID"), ttl=_int(answer, "TTL"))


def _parse_keepalive(answer: Json) -> int:
    # A stream answer: {"result": {...}}. An unknown lease comes back without a TTL.
    result = _obj(answer, "result")
    ttl = _int(result, "TTL")
    if ttl <= 0:
        lease = _int(result, "ID")
        raise LeaseLost(f"lease {lease:x} expired or was revoked (keep-alive answered TTL {ttl})")
    return ttl


def _parse_time_to_live(answer: Json) -> LeaseInfo:
    ttl = _int(answer, "TTL")
    lease = _int(answer, "ID")
    if ttl < 0:
        raise LeaseLost(f"lease {lease:x} expired or was revoked (time-to-live answered {ttl})")
    keys = [_key({"k": k}, "k") for k in _list(answer, "keys")]
    return LeaseInfo(id=lease, ttl=ttl, granted_ttl=_int(answer, "grantedTTL"), keys=keys)


def _parse_status(answer: Json) -> Status:
    header = _obj(answer, "header")
    return Status(
        version=_field(answer, "version", str, ""),
        member_id=_int(header, "member_id"),
        leader=_int(answer, "leader"),
        revision=_int(header, "revision"),
        raft_term=_int(answer, "raftTerm"),
        raft_index=_int(answer, "raftIndex"),
        db_size=_int(answer, "dbSize"),
    )


def _parse_token(answer: Json) -> str:
    token = _field(answer, "token", str, "")
    if not token:
        raise _Malformed("no 'token' in the answer")
    return token


def _parse_nothing(answer: Json) -> None:
    return None


def _parse_event(obj: Any) -> WatchEvent:
    if not isinstance(obj, dict):
        raise _Malformed(f"a watch event should be an object, not {obj!r:.80}")
    kind = obj.get("type", "PUT")
    if kind not in ("PUT", "DELETE"):
        raise _Malformed(f"unknown watch event type {kind!r:.40}")
    return WatchEvent(type=kind, kv=_kv(obj.get("kv")), prev_kv=_optional_kv(obj, "prev_kv"))


def _parse_watch_result(answer: Json) -> WatchResponse:
    result = _obj(answer, "result")
    if not result:
        raise _Malformed("no 'result' in a watch answer")
    return WatchResponse(
        revision=_revision(result),
        events=[_parse_event(e) for e in _list(result, "events")],
        created=_field(result, "created", bool, False),
        canceled=_field(result, "canceled", bool, False),
        compact_revision=_int(result, "compact_revision"),
        watch_id=_int(result, "watch_id"),
        cancel_reason=_field(result, "cancel_reason", str, ""),
        cluster_id=_int(_obj(result, "header"), "cluster_id"),
        member_id=_int(_obj(result, "header"), "member_id"),
    )


def next_watch_revision(current: int, response: WatchResponse) -> int:
    """The revision to resume a watch from once ``response`` arrived (``current`` before it).

    ``current`` is the watch's start revision, 0 for "from now". After events: the revision
    after the last one. The ``created`` answer of a watch from now: the revision after the one
    it was created at (a watch from an older revision still has those events to come). A
    progress notification: the revision after the one it reports.
    """
    if response.events:
        return response.events[-1].kv.mod_revision + 1
    if response.created and current:
        return current
    return max(current, response.revision + 1)


# -- errors --------------------------------------------------------------------------------


def error_from_answer(
    message: str, *, code: int | None, status: int | None, path: str
) -> RegistryError:
    """The meshware exception for an error etcd answered to a call of ``path``."""
    text = f"etcd answered {path} with an error: {message}"
    lowered = message.lower()
    if code == _UNAVAILABLE:
        return RegistryUnavailable(f"{text} (gRPC code {code}, etcd is unavailable)")
    if "requested lease not found" in lowered:
        return LeaseLost(f"{text}: the lease expired or was revoked")
    if "required revision has been compacted" in lowered:
        # A read at a compacted revision; etcd does not say which revision is the oldest.
        compacted = EtcdCompacted(text, compact_revision=0)
        compacted.code, compacted.status = code, status
        return compacted
    if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or any(m in lowered for m in _AUTH_MESSAGES):
        error: EtcdError = EtcdAuthError(text, code=code, status=status)
    else:
        error = EtcdError(text, code=code, status=status)
    return error


def needs_reauth(error: BaseException) -> bool:
    """Whether a fresh token may cure ``error`` (expired or unknown token)."""
    if not isinstance(error, EtcdAuthError):
        return False
    return error.code == _UNAUTHENTICATED or any(m in str(error) for m in _REAUTH_MESSAGES)


def _raise_for_error(answer: Json, status: int | None, path: str) -> None:
    error = answer.get("error")
    if isinstance(error, dict):  # inside a stream
        raise error_from_answer(
            str(error.get("message", "")),
            code=_optional_code(error.get("grpc_code")),
            status=_optional_code(error.get("http_code")) or status,
            path=path,
        )
    if error and ("code" in answer or "message" in answer):
        raise error_from_answer(
            str(answer.get("message") or error),
            code=_optional_code(answer.get("code")),
            status=status,
            path=path,
        )
    if status is not None and status >= 400:
        raise EtcdError(
            f"etcd answered {path} with HTTP {status} and no error message", status=status
        )


def _optional_code(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _decode(content: bytes | str, path: str, status: int | None) -> Json:
    try:
        answer = json.loads(content)
    except ValueError:
        snippet = content[:200] if content else "an empty body"
        where = f" (HTTP {status})" if status is not None else ""
        raise EtcdError(
            f"etcd answered {path} with something that is not JSON{where}: {snippet!r}",
            status=status,
        ) from None
    if not isinstance(answer, dict):
        raise EtcdError(
            f"etcd answered {path} with JSON that is not an object: {answer!r:.200}",
            status=status,
        )
    return answer


def parse_answer(request: Request[T], status: int, content: bytes) -> T:
    """The result of ``request`` from etcd's answer (HTTP ``status`` and body).

    Raises the matching :class:`~meshware.RegistryError` when etcd answered with an error or
    with something that is not what it sends.
    """
    answer = _decode(content, request.path, status)
    _raise_for_error(answer, status, request.path)
    try:
        return request.parse(answer)
    except _Malformed as exc:
        raise EtcdError(
            f"unexpected answer from etcd to {request.path}: {exc}", status=status
        ) from None


def parse_watch_line(line: bytes | str) -> WatchResponse:
    """One line of a watch stream, as a :class:`WatchResponse`.

    Raises :class:`EtcdCompacted` when the watch's start revision was compacted,
    :class:`EtcdAuthError` when it was refused for lack of permission (etcd says so for an
    expired token too), :class:`RegistryUnavailable` when the gateway reports that etcd went
    away, and :class:`EtcdError` for any other cancellation or a malformed line.
    """
    path = "/v3/watch"
    answer = _decode(line, path, None)
    _raise_for_error(answer, None, path)
    try:
        response = _parse_watch_result(answer)
    except _Malformed as exc:
        raise EtcdError(f"unexpected answer from etcd on a watch stream: {exc}") from None
    if response.compact_revision:
        raise EtcdCompacted(
            f"the watch's start revision was compacted; the oldest revision left is "
            f"{response.compact_revision}: re-list the keys and watch again from there",
            compact_revision=response.compact_revision,
        )
    if response.canceled:
        reason = response.cancel_reason or "no reason given"
        raise error_from_answer(f"watch canceled: {reason}", code=None, status=None, path=path)
    return response
