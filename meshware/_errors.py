"""The exceptions meshware raises.

One root, a shallow tree (the shape httpx uses)::

    MeshError
    ├── ConfigError            (also ValueError)  a setting is missing or wrong
    ├── RoutingError       (also httpx.RequestError)
    │   ├── NoRouteError       (also LookupError) no service publishes the method + path
    │   │   └── ShadowedRouteError                 the app serves it, but not for mesh calls
    │   ├── NoEndpointAvailable (also httpx.ConnectError) a route exists but no live instance serves it
    │   └── TableNotLoaded                        the routing table was never loaded (etcd unreachable)
    ├── RetriesExhausted   (also httpx.TransportError, and the last attempt's error class)
    ├── DeadlineExceeded   (also httpx.TimeoutException)  the request's total time ran out
    ├── Throttled          (also httpx.TransportError) refused locally: the service is shedding load
    ├── RouteConflictError                        strict mode: this service's routes clash
    ├── TemplateError          (also ValueError)  a route template cannot be parsed
    └── RegistryError
        ├── RegistryUnavailable                   etcd cannot be reached (every endpoint tried)
        ├── LeaseLost                             the lease expired or was revoked under us
        ├── BadRecord          (also ValueError)  a record in the registry does not parse
        ├── RegistryReset                         etcd lost its history (restarted empty, another
        │                                         cluster): watchers must re-list
        └── EtcdError                             etcd answered with an error
            ├── EtcdAuthError                     wrong user/password, or permission denied
            └── EtcdCompacted                     a watch asked for a compacted revision

Errors the mesh client raises subclass the matching httpx exception too, so code written for
httpx (``except httpx.TransportError``) keeps working with :class:`meshware.Client`.

Messages say what was expected and which setting, key or route is at fault, so the user can act
on them without reading the source.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ._core.retry import Attempt

__all__ = [
    "BadRecord",
    "ConfigError",
    "DeadlineExceeded",
    "EtcdAuthError",
    "EtcdCompacted",
    "EtcdError",
    "LeaseLost",
    "MeshError",
    "NoEndpointAvailable",
    "NoRouteError",
    "RegistryError",
    "RegistryReset",
    "RegistryUnavailable",
    "RetriesExhausted",
    "RouteConflictError",
    "RoutingError",
    "ShadowedRouteError",
    "TableNotLoaded",
    "TemplateError",
    "Throttled",
]


class MeshError(Exception):
    """Root of every exception meshware raises on purpose.

    Every meshware error pickles (multiprocessing, task queues): its message and attributes
    are restored as they were, whatever its ``__init__`` takes.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(MeshError, ValueError):
    """A setting is missing or has a value meshware cannot use.

    ``setting`` names it (the argument or environment variable) when there is one.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class TemplateError(MeshError, ValueError):
    """A route template is not in a form meshware understands."""


class RoutingError(MeshError, httpx.RequestError):
    """A request could not be routed to an instance."""

    def __init__(self, message: str) -> None:
        httpx.RequestError.__init__(self, message)


class NoRouteError(RoutingError, LookupError):
    """No service in the mesh publishes a route for this method and path.

    ``allowed`` lists the methods that *would* match the path, when some would
    (the mesh's equivalent of a 405).
    """

    def __init__(self, method: str, path: str, *, allowed: Sequence[str] = ()) -> None:
        self.method = method
        self.path = path
        self.allowed = tuple(allowed)
        if self.allowed:
            msg = (
                f"no route for {method} {path}: the path is served, but only for "
                f"{', '.join(self.allowed)}"
            )
        else:
            msg = (
                f"no route for {method} {path}: no service in the mesh publishes a matching "
                "route (see `meshware routes`)"
            )
        super().__init__(msg)


class ShadowedRouteError(NoRouteError):
    """The path goes to a route its app serves but does not publish for mesh calls.

    Static files, API docs, routes excluded with ``@meshware.exclude`` (or a pattern), and the
    rest of a mount are *shadows*: they take part in matching, so no other route takes their
    paths, but the mesh never routes to them. ``service``, ``template`` and ``reason`` (``static``,
    ``docs``, ``excluded``) name the shadow.
    """

    def __init__(self, method: str, path: str, *, service: str, template: str, reason: str) -> None:
        self.service = service
        self.template = template
        self.reason = reason
        super().__init__(method, path)
        self.args = (
            f"no route for {method} {path}: service {service!r} serves it with {template} "
            f"({reason}), which is not published for mesh calls",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class NoEndpointAvailable(RoutingError, httpx.ConnectError):
    """A route matched, but its service has no live, serving instance for it."""

    def __init__(self, service: str, template: str, *, reason: str = "") -> None:
        self.service = service
        self.template = template
        msg = f"route {template} of service {service!r} has no serving instance"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)


class TableNotLoaded(RoutingError):
    """The path could not be routed because the routing table was never loaded.

    The registry (etcd) has not answered since this process started (``since``, a wall-clock
    timestamp; ``cause``, the last error), so the table is empty: this is not a missing route.
    Once etcd answers, the table loads and requests resolve again by themselves.
    """

    def __init__(self, method: str, path: str, *, since: float | None, cause: str) -> None:
        self.method = method
        self.path = path
        self.since = since
        self.cause = cause
        when = (
            f"since {time.strftime('%H:%M:%S', time.localtime(since))}"
            if since is not None
            else "since this process started"
        )
        super().__init__(
            f"cannot route {method} {path}: the mesh's routing table was never loaded, the "
            f"registry (etcd) has been unreachable {when}: {cause or 'no answer yet'} "
            "(check MESHWARE_ETCD_ENDPOINTS and that etcd runs; `meshware doctor` tells)"
        )


class RetriesExhausted(MeshError, httpx.TransportError):
    """Every attempt the policy allowed failed with an error; ``attempts`` tells each one.

    The instance raised also subclasses the last attempt's own httpx exception class (for
    example ``httpx.ConnectError``), so ``except httpx.ConnectError`` catches it as before.
    ``reason`` says why no further attempt was made (attempts used up, retry budget spent,
    deadline too close, method not idempotent...). The last error is ``__cause__``.
    """

    def __init__(self, message: str, *, attempts: Sequence[Attempt] = (), reason: str = "") -> None:
        httpx.TransportError.__init__(self, message)
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.reason = reason

    @classmethod
    def like(cls, error: BaseException) -> type[RetriesExhausted]:
        """The subclass that is also ``type(error)`` (cached)."""
        return cls._like_type(type(error))

    @classmethod
    def _like_type(cls, base: type[BaseException]) -> type[RetriesExhausted]:
        if not issubclass(base, httpx.TransportError) or issubclass(base, MeshError):
            return cls
        made = _exhausted_types.get(base)
        if made is None:
            made = type(
                cls.__name__, (cls, base), {"__module__": cls.__module__, "_like_base": base}
            )
            _exhausted_types[base] = made
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        base = type(self).__dict__.get("_like_base")
        if base is None:
            return super().__reduce__()
        # a class made by like() is found again through like(), not by its (shared) name
        return (_restore_exhausted, (base, self.args, dict(self.__dict__)))


def _restore(cls: type[MeshError], args: tuple[Any, ...], state: dict[str, Any]) -> MeshError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def _restore_exhausted(
    base: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> MeshError:
    return _restore(RetriesExhausted._like_type(base), args, state)


_exhausted_types: dict[type[BaseException], type[RetriesExhausted]] = {}


class DeadlineExceeded(MeshError, httpx.TimeoutException):
    """The request's total timeout (or the deadline it inherited from its caller) ran out.

    ``attempts`` tells the attempts made before it did (maybe none).
    """

    def __init__(self, message: str, *, attempts: Sequence[Any] = ()) -> None:
        httpx.TimeoutException.__init__(self, message)
        self.attempts = tuple(attempts)


class Throttled(MeshError, httpx.TransportError):
    """The client refused a request itself, without sending it: the service has been answering
    most recent requests with ``429``/``503`` (client-side adaptive throttling, see the README's
    "Traffic control"). ``service`` is the service; ``probability`` the refusal rate at the time.
    Back off, or serve a degraded answer: retrying at once only gets refused again.
    """

    def __init__(self, message: str, *, service: str = "", probability: float = 0.0) -> None:
        httpx.TransportError.__init__(self, message)
        self.service = service
        self.probability = probability


class RouteConflictError(MeshError):
    """Strict mode: routes of this service are already claimed by another service."""


class RegistryError(MeshError):
    """Something went wrong between meshware and its registry."""


class RegistryUnavailable(RegistryError):
    """The registry (etcd) could not be reached on any configured endpoint."""


class LeaseLost(RegistryError):
    """The lease holding this instance's record expired or was revoked."""


class BadRecord(RegistryError, ValueError):
    """A record under the mesh prefix does not follow the documented format."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"bad mesh record at {key!r}: {problem}")


class RegistryReset(RegistryError):
    """The registry is not the history a watcher was following: its revision went back (etcd
    restarted with an empty data directory) or its cluster id changed. Re-list, then watch."""


class EtcdError(RegistryError):
    """etcd answered a request with an error.

    ``code`` is etcd's gRPC status code when it sent one (for example 9 for a failed
    precondition), ``status`` the HTTP status of the gateway's answer.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class EtcdAuthError(EtcdError):
    """Authentication failed, or the user lacks permission for the key range."""


class EtcdCompacted(EtcdError):
    """A watch asked for a revision that etcd has compacted away.

    ``compact_revision`` is the oldest revision still available; the watcher must re-list.
    """

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision
