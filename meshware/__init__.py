"""meshware: Flask and Starlette/FastAPI apps as members of an etcd-backed service mesh.

Each service publishes the routes it serves under a lease (``meshware.integrations.flask`` /
``meshware.integrations.starlette``); every process that calls other services keeps a live
routing table (:func:`connect`) and resolves a path like ``/users/42`` to a live instance of the
service that serves it. :class:`Client` and :class:`AsyncClient` (httpx clients) call services
through the mesh with balancing, retries, deadlines and outlier ejection. See the README for
the record format, the client and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._async_transport import AsyncMeshTransport
from ._client import AsyncClient, Client
from ._config import EtcdSettings, MemberSettings
from ._core.policy import ClientPolicy
from ._core.records import InstanceRecord, RouteSpec, Shadow
from ._core.retry import Attempt
from ._core.table import (
    Conflict,
    Endpoints,
    Instance,
    Resolution,
    Route,
    RoutingTable,
    Shadowed,
)
from ._core.templates import Template, parse_template
from ._deadline import DEADLINE_HEADER, deadline, time_left
from ._errors import (
    BadRecord,
    ConfigError,
    DeadlineExceeded,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    LeaseLost,
    MeshError,
    NoEndpointAvailable,
    NoRouteError,
    RegistryError,
    RegistryReset,
    RegistryUnavailable,
    RetriesExhausted,
    RouteConflictError,
    RoutingError,
    ShadowedRouteError,
    TableNotLoaded,
    TemplateError,
    Throttled,
)
from ._markers import concurrency_limit, exclude, policy, public, rate_limit
from ._transport import MeshTransport
from ._view import MeshView
from .registry.base import Registry

__version__ = "0.1.0"

__all__ = [
    "DEADLINE_HEADER",
    "AsyncClient",
    "AsyncMeshTransport",
    "Attempt",
    "BadRecord",
    "Client",
    "ClientPolicy",
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "Endpoints",
    "EtcdAuthError",
    "EtcdCompacted",
    "EtcdError",
    "EtcdSettings",
    "Instance",
    "InstanceRecord",
    "LeaseLost",
    "MemberSettings",
    "MeshError",
    "MeshTransport",
    "MeshView",
    "NoEndpointAvailable",
    "NoRouteError",
    "RegistryError",
    "RegistryReset",
    "RegistryUnavailable",
    "Resolution",
    "RetriesExhausted",
    "Route",
    "RouteConflictError",
    "RouteSpec",
    "RoutingError",
    "RoutingTable",
    "Shadow",
    "Shadowed",
    "ShadowedRouteError",
    "TableNotLoaded",
    "Template",
    "TemplateError",
    "Throttled",
    "__version__",
    "concurrency_limit",
    "connect",
    "deadline",
    "exclude",
    "parse_template",
    "policy",
    "public",
    "rate_limit",
    "time_left",
]


def connect(
    *,
    etcd_endpoints: str | Sequence[str] | None = None,
    prefix: str | None = None,
    registry: Registry | None = None,
    **etcd_settings: Any,
) -> MeshView:
    """A started :class:`MeshView`: the live routing table of the mesh.

    Settings come from the arguments, then the ``MESHWARE_*`` environment variables (see the
    README). ``registry`` replaces etcd (for example a
    :class:`~meshware.registry.MemoryRegistry`). Use it as a context manager, or call ``stop()``::

        with meshware.connect() as mesh:
            found = mesh.resolve("GET", "/users/42")
            found.service, found.route.template.text, found.params, found.instances
    """
    args = {
        k: v
        for k, v in dict(etcd_settings, etcd_endpoints=etcd_endpoints, prefix=prefix).items()
        if v is not None
    }
    settings = EtcdSettings.load(args)
    if registry is None:
        from .registry.etcd import EtcdRegistry

        registry = EtcdRegistry.from_settings(settings)
    return MeshView(registry, settings.prefix).start()
