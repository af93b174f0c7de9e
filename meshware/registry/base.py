"""The registry port: what meshware needs from a backend (etcd, or the in-memory fake).

Design notes
------------
The core and the client never import a backend; the integrations and the table view talk to
this small protocol. Two adapters implement it: :mod:`.etcd` (the default) and :mod:`.memory`
(the fake mesh). ``meshware.testing.check_registry`` runs one conformance suite against both, so
the fake cannot drift from the real thing.

Semantics, as etcd defines them:

* every write bumps one global ``revision``; a key keeps the ``create_revision`` of its creation;
* ``snapshot`` entries carry each key's ``lease`` (0 for none); ``create`` writes a key only if
  it does not exist, atomically (etcd: a transaction on ``create_revision == 0``);
* a key written with a lease is deleted when the lease expires or is revoked (a ``Delete``
  update reaches watchers);
* ``watch(prefix, start_revision)`` yields batches of :class:`~meshware._core.table.Update`
  for every change at or after ``start_revision``; it raises
  :class:`~meshware.EtcdCompacted` when that revision is gone (the watcher must re-list) and
  :class:`~meshware.RegistryUnavailable` when the backend goes away (the watcher resumes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .._core.table import Entry, Reset, Update

__all__ = ["Registry", "Watch"]


class Watch(Protocol):
    """A stream of update batches; ``close()`` may be called from another thread."""

    def __iter__(self) -> Iterator[list[Update]]: ...

    def close(self) -> None: ...


class Registry(Protocol):
    """The operations meshware performs on its registry (blocking; call from threads)."""

    def snapshot(self, prefix: str) -> Reset:
        """Every key under ``prefix`` and the revision they were read at."""
        ...

    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Changes under ``prefix`` from ``start_revision`` on."""
        ...

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        ...

    def keepalive(self, lease: int) -> int:
        """Refresh a lease; its remaining TTL. Raises :class:`~meshware.LeaseLost` if gone."""
        ...

    def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (a lease already gone is fine)."""
        ...

    def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write a key (under a lease when ``lease`` is not 0); the new revision.

        Raises :class:`~meshware.LeaseLost` when the lease no longer exists.
        """
        ...

    def create(self, key: str, value: bytes, *, lease: int = 0) -> Entry | None:
        """Write a key only if it does not exist (never overwrites): ``None`` when written,
        else the key as it is (its :attr:`~meshware._core.table.Entry.lease` included).

        Raises :class:`~meshware.LeaseLost` when the lease no longer exists.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete a key (a missing key is fine)."""
        ...

    def close(self) -> None:
        """Release connections; a registry is not used after this."""
        ...
