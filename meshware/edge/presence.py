"""An edge's presence in the registry: ``<prefix>/v1/edges/<id>`` under its own lease.

Every edge (``meshware edge nginx --watch``, ``meshware proxy --public-only``) keeps one key
alive, so each edge can count the live edges (:attr:`meshware.MeshView.traffic`) and enforce
``1/N`` of a route's mesh-wide rate. The key goes away with the lease: a stopped edge at once
(revoked), a crashed one when its TTL runs out; the others then re-render with the new N.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid

from .._core.traffic import edge_key
from .._errors import MeshError
from ..registry.base import Registry

__all__ = ["EdgePresence"]

log = logging.getLogger("meshware.edge")


class EdgePresence:
    """Keep this edge's key alive under a lease of ``ttl`` seconds (refreshed every ttl/3)."""

    def __init__(self, registry: Registry, prefix: str, kind: str, *, ttl: int = 5) -> None:
        self.registry = registry
        self.edge_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.key = edge_key(prefix, self.edge_id)
        self.value = json.dumps({"kind": kind, "hostname": socket.gethostname()}).encode()
        self.ttl = ttl
        self.lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EdgePresence:
        self._register()
        self._thread = threading.Thread(target=self._run, name="meshware-edge", daemon=True)
        self._thread.start()
        return self

    def _register(self) -> None:
        try:
            self.lease = self.registry.grant(self.ttl)
            self.registry.put(self.key, self.value, lease=self.lease)
        except MeshError as exc:
            self.lease = 0
            log.warning("edge: could not register %s (retrying): %s", self.key, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.lease:
                self._register()
                continue
            try:
                self.registry.keepalive(self.lease)
            except MeshError as exc:
                log.warning("edge: lease of %s lost, registering again: %s", self.key, exc)
                self._register()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lease:
            with contextlib.suppress(MeshError):  # else it expires by itself
                self.registry.revoke(self.lease)
            self.lease = 0
