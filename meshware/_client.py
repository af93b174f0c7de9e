"""``meshware.Client`` and ``meshware.AsyncClient``: httpx clients wired to the mesh.

They *are* :class:`httpx.Client` / :class:`httpx.AsyncClient` (auth, event hooks, cookies,
timeouts, streaming all work as usual), with ``base_url="mesh://"`` and a mesh transport, so::

    with meshware.Client() as client:
        client.get("/users/42")                  # routed by path: mesh:///users/42
        client.get("mesh://users/users/42")      # addressed to the service "users"
        client.get("https://example.com/")       # not a mesh URL: sent as usual

Client-wide policy comes from ``policy=`` (a :class:`~meshware.ClientPolicy`) or its fields as
keyword arguments (``retries=1, total_timeout=2.0``); per-request overrides go in
``extensions={"meshware": {"retries": 0, "timeout": 0.5, "total_timeout": 2, "idempotent": True}}``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ._async_transport import AsyncMeshTransport
from ._core.call import Observer
from ._core.policy import ClientPolicy
from ._core.table import Instance, RoutingTable
from ._errors import ConfigError
from ._transport import MeshTransport
from ._transport_base import MeshSource

__all__ = ["AsyncClient", "Client"]

_POLICY_FIELDS = frozenset(f.name for f in dataclasses.fields(ClientPolicy))
_TRANSPORT_HTTP = ("verify", "cert", "http2", "trust_env")


def _split(
    kwargs: dict[str, Any], policy: ClientPolicy | None
) -> tuple[ClientPolicy | None, dict[str, Any]]:
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in _POLICY_FIELDS}
    if "transport" in kwargs:
        raise ConfigError(
            "meshware.Client builds its own transport; to bring your own httpx client use "
            "httpx.Client(transport=meshware.MeshTransport(...))",
            setting="transport",
        )
    if policy is not None and not isinstance(policy, ClientPolicy):
        raise ConfigError(
            f"policy must be a meshware.ClientPolicy, not {policy!r}", setting="policy"
        )
    if not fields:
        return policy, kwargs  # None: the transport's default (the fake mesh's, or ClientPolicy())
    return dataclasses.replace(policy or ClientPolicy(), **fields), kwargs


class Client(httpx.Client):
    """A :class:`httpx.Client` whose ``mesh://`` requests go through the mesh.

    ``mesh`` is a :class:`~meshware.MeshView` (``meshware.connect()``), a
    :class:`~meshware.RoutingTable`, or ``None`` for the process's shared view configured by the
    ``MESHWARE_*`` settings. ``limits`` apply per instance. Other keyword arguments are
    :class:`~meshware.ClientPolicy` fields or :class:`httpx.Client` arguments.
    """

    def __init__(
        self,
        mesh: MeshSource | RoutingTable | None = None,
        *,
        policy: ClientPolicy | None = None,
        limits: httpx.Limits | None = None,
        transport_factory: Callable[[Instance], httpx.BaseTransport] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        metrics: Observer | None = None,
        base_url: str | httpx.URL = "mesh://",
        **kwargs: Any,
    ) -> None:
        resolved, kwargs = _split(kwargs, policy)
        http = {k: kwargs[k] for k in _TRANSPORT_HTTP if k in kwargs}
        self.mesh_transport = MeshTransport(
            mesh,
            policy=resolved,
            limits=limits,
            transport_factory=transport_factory,
            clock=clock,
            sleep=sleep,
            rng=rng,
            observer=observer,
            metrics=metrics,
            **http,
        )
        super().__init__(base_url=base_url, transport=self.mesh_transport, **kwargs)

    @property
    def policy(self) -> ClientPolicy:
        """The client-wide policy in force."""
        return self.mesh_transport.policy


class AsyncClient(httpx.AsyncClient):
    """A :class:`httpx.AsyncClient` whose ``mesh://`` requests go through the mesh.

    Same arguments as :class:`Client` (``sleep`` is a coroutine function).
    """

    def __init__(
        self,
        mesh: MeshSource | RoutingTable | None = None,
        *,
        policy: ClientPolicy | None = None,
        limits: httpx.Limits | None = None,
        transport_factory: Callable[[Instance], httpx.AsyncBaseTransport] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        metrics: Observer | None = None,
        base_url: str | httpx.URL = "mesh://",
        **kwargs: Any,
    ) -> None:
        resolved, kwargs = _split(kwargs, policy)
        http = {k: kwargs[k] for k in _TRANSPORT_HTTP if k in kwargs}
        self.mesh_transport = AsyncMeshTransport(
            mesh,
            policy=resolved,
            limits=limits,
            transport_factory=transport_factory,
            clock=clock,
            sleep=sleep,
            rng=rng,
            observer=observer,
            metrics=metrics,
            **http,
        )
        super().__init__(base_url=base_url, transport=self.mesh_transport, **kwargs)

    @property
    def policy(self) -> ClientPolicy:
        """The client-wide policy in force."""
        return self.mesh_transport.policy
