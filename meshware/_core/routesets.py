"""Route sets: an instance's routes stored once per service and content, not once per instance.

Design notes
------------
Every process that calls other services watches the whole prefix, so every put of a record is
sent to every watcher. A schema-1 record carries its instance's whole route table (about 90 KB
of JSON for 1,000 routes), and each instance puts it at least twice (``serving``, then
``draining``). Schema 2 splits the record in two:

* the **instance record** (``<prefix>/v1/instances/<service>/<id>``, under the instance's
  lease) keeps everything per instance (url, state, weight, zone, version, labels, ...) and
  names its route set: ``"routeset": {"digest": <sha256 hex>, "chunks": N, "size": BYTES}``.
  It is a few hundred bytes, so joining, draining, leaving or changing weight costs every
  watcher well under 1 KB;
* the **route set** (the fields of :data:`SET_FIELDS`: ``routes``, ``routing``, ``shadows``) is
  stored once under ``<prefix>/v1/routesets/<service>/<digest>/<index>``, split into chunks of
  at most :data:`CHUNK_BYTES` (etcd refuses a request over 1.5 MiB by default), written once by
  the first instance that publishes it with a transaction that never overwrites. The digest is
  the SHA-256 of the set's bytes (the chunks joined), so instances of one service with the same
  routes share one copy, and a deploy that changes the routes costs the new set once per watcher.

The service is part of the key so that etcd's RBAC can limit a service to its own key ranges
(``<prefix>/v1/instances/<service>/`` and ``<prefix>/v1/routesets/<service>/``), and a record
can only name a set of its own service: readers look the digest up under the record's service.

The :class:`Assembler` sits between the registry and the routing table. It is fed every update
under the prefix, keeps the route-set chunks, and hands the table instance entries whose record
is already decoded (:attr:`~meshware._core.table.Entry.decoded`): schema-1 records pass through
untouched, a schema-2 record is joined with its route set. A record whose set is missing,
partial, too big, does not match its digest or does not parse is not routable and carries the
reason (the view logs it once); it costs that record only, and it becomes routable as soon as
its set is complete and valid. A set is verified and decoded once per service and digest; every
instance that uses it shares the same decoded routes (the same tuple object). Once verified, a
set stays in use while records name it, even if its keys disappear (a stalled etcd expiring
every lease at once, a set being published again) or are overwritten: the digest pins the
content, so this is static stability at no risk (a reader that starts afresh verifies again).

Garbage collection: the chunks of a set live under a lease of their own (see
:mod:`meshware._routesets_writer`) that every instance using the set keeps alive; when the last
one is gone, etcd deletes the set when that lease expires. Readers need not care.

Pure: no I/O, no clock, no threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .._errors import BadRecord, ConfigError
from .records import InstanceRecord, _check_tree, instances_prefix
from .table import Delete, Entry, Reset, Update, Upsert

__all__ = [
    "CHUNK_BYTES",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_SET_BYTES",
    "MAX_SET_ROUTES",
    "RECORD_SCHEMA",
    "SET_FIELDS",
    "Assembler",
    "RouteSet",
    "assemble",
    "chunk_key",
    "encode_record",
    "encode_routeset",
    "routeset_prefix",
    "routesets_prefix",
    "split_chunk_key",
]

RECORD_SCHEMA = 2
"""The schema of an instance record that names a route set instead of carrying its routes."""

SET_FIELDS = ("routing", "routes", "shadows")
"""Record fields that describe the app's routes: they live in the route set under schema 2."""

CHUNK_BYTES = 512 * 1024
"""Chunk size meshware writes: one chunk per etcd request, far below etcd's 1.5 MiB limit."""

MAX_CHUNK_BYTES = 1536 * 1024
"""The largest chunk a reader accepts (etcd's default ``--max-request-bytes``)."""

MAX_CHUNKS = 64
"""The most chunks a route set may have."""

MAX_SET_BYTES = 32 * 1024 * 1024
"""The largest route set a reader accepts."""

MAX_RECORD_BYTES = 64 * 1024
"""The largest schema-2 instance record a reader accepts (they are a few hundred bytes)."""

MAX_SET_ROUTES = 32_768
"""The most routes a route set may hold (a schema-1 record: ``records.MAX_ROUTES``)."""

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_INDEX_RE = re.compile(r"^[0-9]{1,4}$")
_SERVICE_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceRecord))


# --------------------------------------------------------------------------- keys


def routesets_prefix(prefix: str) -> str:
    """The key prefix under which every route set lives."""
    return prefix.rstrip("/") + "/v1/routesets/"


def routeset_prefix(prefix: str, service: str, digest: str) -> str:
    """The key prefix of one route set's chunks."""
    return f"{routesets_prefix(prefix)}{service}/{digest}/"


def chunk_key(prefix: str, service: str, digest: str, index: int) -> str:
    """The key of one chunk of a route set (``.../<service>/<digest>/0000``)."""
    return f"{routeset_prefix(prefix, service, digest)}{index:04d}"


def split_chunk_key(prefix: str, key: str) -> tuple[str, str, int] | None:
    """``(service, digest, index)`` from a chunk key, or ``None`` if the key is not one."""
    base = routesets_prefix(prefix)
    if not key.startswith(base):
        return None
    parts = key[len(base) :].split("/")
    if len(parts) != 3:
        return None
    service, digest, index = parts
    if not _SERVICE_RE.match(service) or not _DIGEST_RE.match(digest):
        return None
    if not _INDEX_RE.match(index) or int(index) >= MAX_CHUNKS:
        return None
    return service, digest, int(index)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class RouteSet:
    """A route set as stored: its service, digest and chunks (joined: the set's bytes)."""

    service: str
    digest: str
    chunks: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    def ref(self) -> dict[str, Any]:
        """What a schema-2 record says about its set."""
        return {"digest": self.digest, "chunks": len(self.chunks), "size": self.size}

    def keys(self, prefix: str) -> list[str]:
        """The chunk keys, in order."""
        return [chunk_key(prefix, self.service, self.digest, i) for i in range(len(self.chunks))]


def encode_routeset(record: InstanceRecord, *, chunk_bytes: int = CHUNK_BYTES) -> RouteSet:
    """The route set of ``record`` (canonical JSON: sorted keys, no spaces, ASCII), chunked."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be 1-{MAX_CHUNK_BYTES}, got {chunk_bytes}")
    full = record.to_json()
    content = {"schema": RECORD_SCHEMA, "service": record.service}
    content.update((k, full[k]) for k in SET_FIELDS if k in full)
    if len(record.routes) > MAX_SET_ROUTES:
        raise ConfigError(
            f"{record.service!r} publishes {len(record.routes)} routes; a route set holds at "
            f"most {MAX_SET_ROUTES} (exclude some with Mesh(exclude=[...]) or @meshware.exclude)"
        )
    raw = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    if len(raw) > MAX_SET_BYTES:
        raise ConfigError(
            f"the route set of {record.service!r} is {len(raw)} bytes; at most {MAX_SET_BYTES}"
        )
    chunks = tuple(raw[i : i + chunk_bytes] for i in range(0, len(raw), chunk_bytes))
    if len(chunks) > MAX_CHUNKS:
        raise ConfigError(f"the route set needs {len(chunks)} chunks; at most {MAX_CHUNKS}")
    return RouteSet(record.service, hashlib.sha256(raw).hexdigest(), chunks)


def encode_record(record: InstanceRecord, routeset: RouteSet) -> bytes:
    """The schema-2 record of ``record``: its own fields and a reference to ``routeset``."""
    data = {k: v for k, v in record.to_json().items() if k not in SET_FIELDS}
    data["schema"] = RECORD_SCHEMA
    data["routeset"] = routeset.ref()
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class _Ref:
    digest: str
    chunks: int
    size: int


@dataclass(slots=True)
class _Member:
    """A schema-2 record as the assembler holds it until (and while) its set is usable."""

    entry: Entry
    data: dict[str, Any]  # the record's own fields
    ref: _Ref
    base: InstanceRecord  # the record decoded without its set
    outcome: object = None  # what was last handed to the table (identity compared)


class _Set:
    """The chunks of one route set present in the registry, and what they decode to.

    Until the set is verified, ``raw`` holds each chunk's bytes. Once verified (size, digest,
    decoding), only each chunk's SHA-256 is kept (``good``) with the decoded fields, which stay
    in use while records name the set: the digest pins the content, so chunks deleted or
    overwritten later change nothing for this reader.
    """

    __slots__ = ("failed", "good", "hashes", "raw", "size", "values")

    def __init__(self) -> None:
        self.raw: dict[int, bytes | str] = {}  # index -> bytes (str: why the chunk is unusable)
        self.hashes: dict[int, bytes] = {}  # index -> sha256 of the chunk
        self.good: tuple[bytes, ...] | None = None  # chunk hashes of the verified content
        self.values: dict[str, Any] | None = None  # decoded set fields, once verified
        self.size = 0  # bytes of the verified content
        self.failed: dict[tuple[int, int], str] = {}  # (chunks, size) -> why it does not verify

    def emptied(self) -> _Set:
        """The same verified set with no chunk known to be present (before a re-list)."""
        fresh = _Set()
        fresh.good, fresh.values, fresh.size = self.good, self.values, self.size
        return fresh


class Assembler:
    """Joins schema-2 instance records with their route sets; see the module notes.

    ``feed(update)`` takes what the registry sends (a :class:`Reset`, an :class:`Upsert` or a
    :class:`Delete` of any key under the prefix) and returns the updates to apply to the
    :class:`~meshware._core.table.RoutingTable` in their place. Not thread-safe: one feeder.
    """

    def __init__(self, prefix: str = "/meshware") -> None:
        self.prefix = prefix.rstrip("/")
        self._instances = instances_prefix(self.prefix)
        self._sets_base = routesets_prefix(self.prefix)
        self._sets: dict[tuple[str, str], _Set] = {}
        self._members: dict[str, _Member] = {}
        self._users: dict[tuple[str, str], set[str]] = {}

    # ------------------------------------------------------------------ public

    def feed(self, update: Update) -> list[Update]:
        """The table updates that stand for ``update``."""
        if isinstance(update, Reset):
            return [self._reset(update)]
        if isinstance(update, Delete):
            return self._delete(update)
        return self._upsert(update)

    @property
    def routesets(self) -> int:
        """How many route sets (complete or not) are present."""
        return len(self._sets)

    # ------------------------------------------------------------------ updates

    def _reset(self, update: Reset) -> Reset:
        # verified sets are kept (their content is pinned by the digest), their chunks forgotten
        self._sets = {where: rs.emptied() for where, rs in self._sets.items() if rs.good}
        self._members.clear()
        self._users.clear()
        for entry in update.entries:
            if entry.key.startswith(self._sets_base):
                self._store_chunk(entry)
        out: list[Entry] = []
        for entry in update.entries:
            if entry.key.startswith(self._sets_base):
                continue
            out.append(self._record(entry))
        for where in [w for w, rs in self._sets.items() if not rs.raw and w not in self._users]:
            del self._sets[where]
        return Reset(tuple(out), update.revision)

    def _upsert(self, update: Upsert) -> list[Update]:
        entry = update.entry
        if entry.key.startswith(self._sets_base):
            where = self._store_chunk(entry)
            return self._refresh(where, update.revision) if where is not None else []
        return [Upsert(self._record(entry), update.revision)]

    def _delete(self, update: Delete) -> list[Update]:
        if update.key.startswith(self._sets_base):
            found = split_chunk_key(self.prefix, update.key)
            if found is None:
                return []
            service, digest, index = found
            where = (service, digest)
            rs = self._sets.get(where)
            if rs is None:
                return []
            rs.raw.pop(index, None)
            rs.hashes.pop(index, None)
            rs.failed.clear()
            if not rs.raw and where not in self._users:
                del self._sets[where]
            return self._refresh(where, update.revision)
        self._forget(update.key)
        return [update]

    # ------------------------------------------------------------------ chunks

    def _store_chunk(self, entry: Entry) -> tuple[str, str] | None:
        found = split_chunk_key(self.prefix, entry.key)
        if found is None:
            return None  # not a key meshware writes: ignored, like any unknown key
        service, digest, index = found
        where = (service, digest)
        rs = self._sets.get(where)
        if rs is None:
            rs = self._sets[where] = _Set()
        rs.failed.clear()
        value = entry.value
        rs.hashes.pop(index, None)
        if len(value) > MAX_CHUNK_BYTES:
            rs.raw[index] = f"chunk {index} is {len(value)} bytes (at most {MAX_CHUNK_BYTES})"
            return where
        chunk_hash = hashlib.sha256(value).digest()
        rs.hashes[index] = chunk_hash
        if rs.good is None:
            rs.raw[index] = bytes(value)
        elif index < len(rs.good) and rs.good[index] == chunk_hash:
            rs.raw[index] = b""  # the verified content again: its bytes are not needed
        else:
            rs.raw[index] = f"chunk {index} was changed: it does not match the set's digest"
        return where

    # ------------------------------------------------------------------ records

    def _record(self, entry: Entry) -> Entry:
        """The entry to hand the table for an instance key (or any other key)."""
        self._forget(entry.key)
        if entry.decoded is not None:
            return entry  # assembled already (a view's snapshot reaching the table)
        if not entry.key.startswith(self._instances) or len(entry.value) > MAX_RECORD_BYTES:
            return entry  # schema 1 (the table decodes it) or not a record at all
        try:
            data = json.loads(entry.value)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return entry  # the table says why
        if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA:
            return entry
        try:
            _check_tree(entry.key, data)  # the records' bounds: depth, valid Unicode
        except BadRecord as exc:
            return dataclasses.replace(entry, decoded=str(exc))
        member = self._member(entry, data)
        if isinstance(member, str):
            return dataclasses.replace(entry, decoded=member)
        self._members[entry.key] = member
        where = (member.base.service, member.ref.digest)
        self._users.setdefault(where, set()).add(entry.key)
        member.outcome = self._outcome(member)
        return dataclasses.replace(entry, decoded=member.outcome)

    def _member(self, entry: Entry, data: dict[str, Any]) -> _Member | str:
        key = entry.key
        ref = data.get("routeset")
        problem = _check_ref(ref)
        if problem:
            return f"bad mesh record at {key!r}: {problem}"
        assert isinstance(ref, dict)
        own = {k: v for k, v in data.items() if k not in SET_FIELDS and k != "routeset"}
        try:
            base = InstanceRecord.from_json(key, {**own, "schema": 1, "routes": []})
        except BadRecord as exc:
            return str(exc)
        except (RecursionError, ValueError, TypeError) as exc:  # never break the table
            return f"bad mesh record at {key!r}: {exc}"
        return _Member(entry, own, _Ref(ref["digest"], ref["chunks"], ref["size"]), base)

    def _forget(self, key: str) -> None:
        member = self._members.pop(key, None)
        if member is None:
            return
        where = (member.base.service, member.ref.digest)
        users = self._users.get(where)
        if users is not None:
            users.discard(key)
            if not users:
                del self._users[where]
                rs = self._sets.get(where)
                if rs is not None and not rs.raw:
                    del self._sets[where]

    def _refresh(self, where: tuple[str, str], revision: int) -> list[Update]:
        """Re-join the records that use the set at ``where``; the updates for those that changed."""
        out: list[Update] = []
        for key in sorted(self._users.get(where, ())):
            member = self._members[key]
            outcome = self._outcome(member)
            if outcome is member.outcome or outcome == member.outcome:
                continue
            member.outcome = outcome
            out.append(Upsert(dataclasses.replace(member.entry, decoded=outcome), revision))
        return out

    def _outcome(self, member: _Member) -> InstanceRecord | str:
        """The record joined with its set, or why it cannot be (the same object when unchanged)."""
        service, ref = member.base.service, member.ref
        key = member.entry.key
        short = ref.digest[:12]
        rs = self._sets.get((service, ref.digest))
        if rs is None:
            return (
                f"mesh record at {key!r} waits for its route set {short}… "
                f"({routeset_prefix(self.prefix, service, ref.digest)}): not in the registry"
            )
        values = self._values(rs, member)
        if isinstance(values, str):
            return f"mesh record at {key!r}, route set {short}… of {service!r}: {values}"
        record = member.outcome
        if isinstance(record, InstanceRecord) and _same_set(record, values):
            return record
        return dataclasses.replace(member.base, routeset=ref.digest, **values)

    def _values(self, rs: _Set, member: _Member) -> dict[str, Any] | str:
        """The set's decoded fields for ``member``'s reference, or why there are none."""
        ref = member.ref
        if rs.good is not None:
            # Verified once: the digest pins the content, so the decoded set stays valid even
            # while its keys are gone (expired under a stalled etcd, being published again) or
            # were overwritten with other bytes (static stability; new readers verify afresh).
            assert rs.values is not None
            if ref.chunks != len(rs.good):
                return f"the record says {ref.chunks} chunks, the set has {len(rs.good)}"
            if rs.size != ref.size:
                return f"the set is {rs.size} bytes, the record says {ref.size}"
            return rs.values
        for i in range(ref.chunks):
            chunk = rs.raw.get(i)
            if chunk is None:
                return f"chunk {i} of {ref.chunks} is missing (waiting for it)"
            if isinstance(chunk, str):
                return chunk
        failed = rs.failed.get((ref.chunks, ref.size))
        if failed is not None:
            return failed
        raw = b"".join(rs.raw[i] for i in range(ref.chunks))  # type: ignore[misc]
        values = self._verify(raw, member)
        if isinstance(values, str):
            rs.failed[(ref.chunks, ref.size)] = values
            return values
        rs.good = tuple(rs.hashes[i] for i in range(ref.chunks))
        rs.values = values
        rs.size = len(raw)
        for i in range(ref.chunks):
            rs.raw[i] = b""  # verified: keep the chunk hashes, not the bytes
        rs.failed.clear()
        return values

    def _verify(self, raw: bytes, member: _Member) -> dict[str, Any] | str:
        ref = member.ref
        if len(raw) != ref.size:
            return f"the set is {len(raw)} bytes, the record says {ref.size}"
        if hashlib.sha256(raw).hexdigest() != ref.digest:
            return "its content does not match its digest"
        return self._decode_set(raw, member)

    def _decode_set(self, raw: bytes, member: _Member) -> dict[str, Any] | str:
        try:
            content = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return f"not JSON ({str(exc)[:200]})"
        if not isinstance(content, dict):
            return "not a JSON object"
        try:
            _check_tree(member.entry.key, content)
        except BadRecord as exc:
            return str(exc).replace(f"bad mesh record at {member.entry.key!r}: ", "")
        service = member.base.service
        if content.get("service") != service:
            return (
                f"the set names service {str(content.get('service'))[:80]!r}, "
                f"but it is stored under {service!r}"
            )
        fields = {k: content[k] for k in SET_FIELDS if k in content}
        if "routes" not in fields:
            return "no 'routes' in the set"
        try:
            full = InstanceRecord.from_json(
                member.entry.key, {**member.data, "schema": 1, **fields}, max_routes=MAX_SET_ROUTES
            )
        except BadRecord as exc:
            return str(exc).replace(f"bad mesh record at {member.entry.key!r}: ", "")
        except (RecursionError, ValueError, TypeError) as exc:
            return f"does not decode: {exc}"
        # the attributes the set decides: whatever differs from the record decoded without it
        # (routes, routing, and any route-level field a later version adds, such as shadows)
        return {
            name: getattr(full, name)
            for name in _RECORD_FIELDS
            if getattr(full, name) != getattr(member.base, name)
        }


def _check_ref(ref: object) -> str:
    if not isinstance(ref, dict):
        return "schema 2 needs 'routeset': {'digest', 'chunks', 'size'}"
    digest, chunks, size = ref.get("digest"), ref.get("chunks"), ref.get("size")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        return "routeset.digest must be 64 lower-case hex digits (SHA-256 of the set's bytes)"
    if not isinstance(chunks, int) or isinstance(chunks, bool) or not 1 <= chunks <= MAX_CHUNKS:
        return f"routeset.chunks must be a whole number 1-{MAX_CHUNKS}"
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SET_BYTES:
        return f"routeset.size must be a whole number of bytes 1-{MAX_SET_BYTES}"
    if size > chunks * MAX_CHUNK_BYTES:
        return f"routeset.size {size} does not fit in {chunks} chunks"
    return ""


def _same_set(record: InstanceRecord, values: dict[str, Any]) -> bool:
    return all(getattr(record, name) is value for name, value in values.items())


def assemble(prefix: str, snapshot: Reset) -> Reset:
    """``snapshot`` with its schema-2 records joined to their route sets (one-shot readers).

    :meth:`RoutingTable.apply <meshware._core.table.RoutingTable.apply>` does this with every
    :class:`Reset`, so a table built from a raw snapshot reads both schemas; a view, which also
    follows the watch, keeps an :class:`Assembler` of its own.
    """
    return Assembler(prefix).feed(snapshot)[0]  # type: ignore[return-value]
