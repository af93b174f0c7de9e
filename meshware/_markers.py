"""Per-view markers that the framework integrations read when they publish routes.

They only set an attribute on the view function; nothing else happens at import or call time::

    @app.get("/users/{id:int}")
    @meshware.public                       # exposed at the edge (nginx, ``meshware proxy --public-only``)
    @meshware.policy(idempotent=True, timeout=2.0, retries=3)
    def get_user(id: int): ...

    @app.route("/internal/debug")
    @meshware.exclude                      # not published in the mesh at all
    def debug(): ...

Put the markers *below* the framework's route decorator, so the framework stores the marked function.
Class-based views (Flask ``MethodView``, Starlette ``HTTPEndpoint``) can be marked too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import ConfigError

__all__ = ["MARK_ATTRIBUTE", "exclude", "marks_of", "policy", "public"]

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
