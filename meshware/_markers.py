"""Per-view markers that the framework integrations read when they publish routes.

They only set an attribute on the view function; nothing else happens at import or call time::

    @app.get("/users/{id:int}")
    @meshware.public                       # exposed at the edge (nginx, ``meshware proxy --public-only``)
    @meshware.policy(idempotent=True, timeout=2.0, retries=3)
    def get_user(id: int): ...

    @app.post("/login")
    @meshware.rate_limit("20/s", burst=10)   # per calling client; enforced by members and edges
    @meshware.concurrency_limit(8)           # at most 8 in progress at once
    def login(): ...

    @app.route("/internal/debug")
    @meshware.exclude                      # not published in the mesh at all
    def debug(): ...

Put the markers *below* the framework's route decorator, so the framework stores the marked function.
Class-based views (Flask ``MethodView``, Starlette ``HTTPEndpoint``) can be marked too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._core.limits import limits_from_json
from ._errors import ConfigError

__all__ = [
    "MARK_ATTRIBUTE",
    "concurrency_limit",
    "exclude",
    "marks_of",
    "policy",
    "public",
    "rate_limit",
]

MARK_ATTRIBUTE = "__meshware__"

F = TypeVar("F", bound=Callable[..., Any])


def _mark(func: F, **marks: object) -> F:
    current = dict(getattr(func, MARK_ATTRIBUTE, {}))
    current.update(marks)
    try:
        setattr(func, MARK_ATTRIBUTE, current)
    except (AttributeError, TypeError) as exc:  # builtins, bound methods of slotted classes
        raise ConfigError(f"cannot mark {func!r} for meshware: {exc}") from exc
    return func


def public(func: F) -> F:
    """Mark a view as public: the edge (nginx config, public-only proxy) exposes its route."""
    return _mark(func, public=True)


def exclude(func: F) -> F:
    """Keep a view's route out of the mesh: it is not published, nobody resolves to it."""
    return _mark(func, exclude=True)


def policy(
    *,
    idempotent: bool | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> Callable[[F], F]:
    """Publish a per-route client policy that every meshware client obeys.

    ``idempotent=True`` lets clients retry non-GET requests to this route; ``timeout`` is the
    per-attempt timeout in seconds; ``retries`` the most retries after the first attempt.
    """
    if timeout is not None and not timeout > 0:
        raise ConfigError(
            f"policy(timeout=...) must be a positive number of seconds, not {timeout!r}"
        )
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigError(f"policy(retries=...) must be a whole number >= 0, not {retries!r}")
    marks: dict[str, object] = {}
    if idempotent is not None:
        marks["idempotent"] = bool(idempotent)
    if timeout is not None:
        marks["timeout"] = float(timeout)
    if retries is not None:
        marks["retries"] = retries

    def decorate(func: F) -> F:
        return _mark(func, **marks)

    return decorate


def rate_limit(rate: str, *, burst: int = 0, per: str = "client") -> Callable[[F], F]:
    """Declare a rate limit for a view's route, published with it and enforced where requests
    enter: by each member for calls from inside the mesh, by the edges for the public.

    ``rate`` is ``"COUNT/s"``, ``"COUNT/min"`` or ``"COUNT/h"``, mesh-wide (each of N members
    or edges enforces 1/N of it); ``burst`` requests beyond the rate may arrive at once (nginx's
    ``burst``); ``per="client"`` counts each calling service (inside the mesh) or client address
    (at the edge) separately, ``per="route"`` counts every caller together. Refused requests get
    ``429 Too Many Requests`` with ``Retry-After``.
    """
    raw = {"rate": rate, "burst": burst, "per": per}
    try:
        limits_from_json(raw)
    except ValueError as exc:
        raise ConfigError(f"rate_limit({rate!r}, burst={burst!r}, per={per!r}): {exc}") from None

    def decorate(func: F) -> F:
        return _mark(func, rate_limit=raw)

    return decorate


def concurrency_limit(limit: int) -> Callable[[F], F]:
    """Declare that at most ``limit`` requests to a view's route may be in progress at once, at
    each enforcement point (each member process, each edge); more get ``429``."""
    try:
        limits_from_json({"concurrency": limit})
    except ValueError as exc:
        raise ConfigError(f"concurrency_limit({limit!r}): {exc}") from None

    def decorate(func: F) -> F:
        return _mark(func, concurrency_limit=limit)

    return decorate


def marks_of(obj: object) -> dict[str, Any]:
    """The meshware marks set on a view (function, class, or a wrapper with ``__wrapped__``)."""
    seen = 0
    while obj is not None and seen < 16:
        marks = getattr(obj, MARK_ATTRIBUTE, None)
        if isinstance(marks, dict):
            return dict(marks)
        obj = getattr(obj, "__wrapped__", None)
        seen += 1
    return {}
