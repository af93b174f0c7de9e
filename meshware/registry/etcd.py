"""The etcd registry: the :class:`~meshware.registry.Registry` port over meshware's etcd client.

A thin adapter: etcd key-values become :class:`~meshware._core.table.Entry` values, watch
events become ``Upsert`` / ``Delete`` updates stamped with their revision. The client does the
failover between endpoints, authentication, TLS and error mapping.

**Is it still the same etcd?** Resuming a watch at a revision is only right in the history
that revision belongs to. etcd restarted with an empty data directory starts again at revision
1 on the same ports (often with the same cluster id, since a single member's id derives from
its name and peer URLs), and a watch resumed at the old revision would wait, silently, for a
revision far in the future. So each watch checks etcd's first answer: a current revision
below the one it resumes from, or a cluster id other than the last snapshot's, raises
:class:`~meshware.RegistryReset`, and the watcher re-lists.

**A hung member.** A watch stream on a member that stopped answering (SIGSTOPped, wedged)
stays open and silent: its TCP peer is the kernel. With several endpoints, each watch probes
the member it streams from every :data:`WATCH_PROBE_INTERVAL` seconds; a member that does not
answer within the client's timeout (at most 1 s) is avoided from then on and the stream is
closed, so the watcher resumes on another member at once, missing nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import httpx

from .._config import EtcdSettings
from .._core.table import Delete, Entry, Reset, Update, Upsert
from .._errors import RegistryReset, RegistryUnavailable
from ..etcd import EtcdClient, KeyValue, TLSConfig

__all__ = ["EtcdRegistry"]

log = logging.getLogger("meshware.registry")

# A watch stream with no traffic for this long ends quietly and is re-opened from the same
# revision, so a silently dead connection (a partition, not a refused connection) is noticed
# within this time; etcd's own progress notifications come only every 10 minutes.
WATCH_IDLE_TIMEOUT = 30.0
WATCH_PROBE_INTERVAL = 1.0


class EtcdRegistry:
    """The registry port on an :class:`~meshware.etcd.EtcdClient`."""

    def __init__(
        self, client: EtcdClient, *, watch_idle_timeout: float = WATCH_IDLE_TIMEOUT
    ) -> None:
        self.client = client
        self.watch_idle_timeout = watch_idle_timeout
        self.cluster_id = 0  # of the last snapshot (0: none yet)

    @classmethod
    def from_settings(cls, settings: EtcdSettings) -> EtcdRegistry:
        """An etcd registry for the endpoints, TLS files and credentials in ``settings``."""
        tls = None
        if settings.ca_file or settings.cert_file:
            tls = TLSConfig(
                ca_file=settings.ca_file, cert_file=settings.cert_file, key_file=settings.key_file
            )
        client = EtcdClient(
            settings.endpoints,
            timeout=settings.timeout,
            tls=tls,
            username=settings.username,
            password=settings.password,
        )
        return cls(client)

    def snapshot(self, prefix: str) -> Reset:
        result = self.client.get_prefix(prefix)
        if result.cluster_id:
            self.cluster_id = result.cluster_id
        return Reset(tuple(_entry(kv) for kv in result.kvs), result.revision)

    def watch(self, prefix: str, start_revision: int) -> _EtcdWatch:
        return _EtcdWatch(self, prefix, start_revision)

    def grant(self, ttl: int) -> int:
        return self.client.lease_grant(ttl).id

    def keepalive(self, lease: int) -> int:
        return self.client.lease_keepalive(lease)

    def revoke(self, lease: int) -> None:
        self.client.lease_revoke(lease)

    def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return self.client.put(key, value, lease=lease).revision

    def create(self, key: str, value: bytes, *, lease: int = 0) -> Entry | None:
        result = self.client.create(key, value, lease=lease)
        if result.created:
            return None
        if result.existing is None:  # deleted between the compare and the read: impossible in
            return Entry(key, b"", 0, 0)  # one txn, but never pretend it was written
        return _entry(result.existing)

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def close(self) -> None:
        self.client.close()


class _EtcdWatch:
    def __init__(self, registry: EtcdRegistry, prefix: str, start_revision: int) -> None:
        self._registry = registry
        self._start = start_revision
        self._done = threading.Event()
        self._stream = registry.client.watch_prefix(
            prefix,
            start_revision=start_revision or None,
            read_timeout=registry.watch_idle_timeout,
        )

    def __iter__(self) -> Iterator[list[Update]]:
        try:
            yield from self._batches()
        except RegistryUnavailable as exc:
            if isinstance(exc.__cause__, httpx.ReadTimeout):
                return  # idle for watch_idle_timeout: end quietly, the caller watches again
            raise
        finally:
            self._done.set()  # the member probe stops with the stream

    def _batches(self) -> Iterator[list[Update]]:
        for response in self._stream:
            if response.created:
                self._check_history(response.revision, response.cluster_id)
                self._watch_the_member()
            batch: list[Update] = []
            for event in response.events:
                kv = event.kv
                if event.type == "DELETE":
                    batch.append(Delete(kv.key, kv.mod_revision))
                else:
                    batch.append(Upsert(_entry(kv), kv.mod_revision))
            yield batch

    def _check_history(self, revision: int, cluster_id: int) -> None:
        known = self._registry.cluster_id
        if known and cluster_id and cluster_id != known:
            raise RegistryReset(
                f"etcd's cluster id changed from {known:x} to {cluster_id:x}: another cluster "
                "answers on these endpoints; re-listing"
            )
        if self._start and revision < self._start - 1:
            raise RegistryReset(
                f"etcd's revision went back from {self._start - 1} to {revision} (restarted with "
                "an empty data directory?); re-listing"
            )

    def _watch_the_member(self) -> None:
        client = self._registry.client
        if len(client.endpoints) < 2 or self._done.is_set():
            return  # nowhere else to go
        endpoint = client.current_endpoint
        threading.Thread(
            target=self._probe, args=(endpoint,), name="meshware-watch-probe", daemon=True
        ).start()

    def _probe(self, endpoint: str) -> None:
        client = self._registry.client
        timeout = min(1.0, client._settings.timeout)
        while not self._done.wait(WATCH_PROBE_INTERVAL):
            if not client.probe(endpoint, timeout):
                if self._done.is_set():
                    return
                log.warning(
                    "etcd member %s stopped answering; moving the mesh watch to another member",
                    endpoint,
                )
                client.avoid(endpoint)
                self._stream.close()
                return

    def close(self) -> None:
        self._done.set()
        self._stream.close()


def _entry(kv: KeyValue) -> Entry:
    return Entry(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease)
