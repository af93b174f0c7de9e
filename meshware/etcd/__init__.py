"""meshware's own small client for etcd's v3 API (JSON over HTTP, on httpx).

:class:`EtcdClient` blocks, :class:`AsyncEtcdClient` is its async twin with the same methods;
both are thin shells around the pure request/answer layer in :mod:`._protocol`, which also
documents the gateway's quirks. :mod:`._config` holds the shared failover and login logic.
"""

from __future__ import annotations

from ._async import AsyncEtcdClient, AsyncWatch
from ._config import TLSConfig
from ._protocol import (
    DeleteResult,
    KeyValue,
    LeaseGrant,
    LeaseInfo,
    PutResult,
    RangeResult,
    Status,
    WatchEvent,
    WatchResponse,
    prefix_range_end,
)
from ._sync import EtcdClient, Watch

__all__ = [
    "AsyncEtcdClient",
    "AsyncWatch",
    "DeleteResult",
    "EtcdClient",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "PutResult",
    "RangeResult",
    "Status",
    "TLSConfig",
    "Watch",
    "WatchEvent",
    "WatchResponse",
    "prefix_range_end",
]
