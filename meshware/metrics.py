"""Prometheus metrics for the mesh client (``pip install 'meshware[prometheus]'``).

::

    from meshware.metrics import PrometheusObserver
    client = meshware.Client(metrics=PrometheusObserver())   # registers in prometheus_client.REGISTRY

===========================================  ==========  ===========================================
metric                                       type        labels
===========================================  ==========  ===========================================
``meshware_client_requests_total``           counter     ``service``, ``outcome`` (status class
                                                         ``2xx``..``5xx``, or the error's name)
``meshware_client_request_seconds``          histogram   ``service`` (retries included)
``meshware_client_attempts_total``           counter     ``service``, ``outcome`` (``response``,
                                                         ``unsent``, ``failed``, ``timeout``)
``meshware_client_retries_total``            counter     ``service``
``meshware_client_retry_budget_exhausted``   counter     ``service``
``meshware_client_ejections_total``          counter     ``service``, ``instance``
``meshware_client_panic_total``              counter     ``service``
``meshware_table_staleness_seconds``         gauge       (seconds since etcd last answered the view)
===========================================  ==========  ===========================================

Several clients may share one observer, or each create one for the same registry: the metrics
are created once per registry.
"""

from __future__ import annotations

from typing import Any

from ._core.balance import InstanceStats
from ._core.call import Call
from ._core.retry import Attempt
from ._errors import ConfigError

__all__ = ["PrometheusObserver"]

_by_registry: dict[int, dict[str, Any]] = {}


def _metrics(registry: Any) -> dict[str, Any]:
    try:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "meshware.metrics needs prometheus_client: pip install 'meshware[prometheus]'"
        ) from exc
    registry = REGISTRY if registry is None else registry
    found = _by_registry.get(id(registry))
    if found is not None and found["registry"] is registry:
        return found
    m: dict[str, Any] = {
        "registry": registry,
        "requests": Counter(
            "meshware_client_requests_total",
            "Requests made through meshware clients, by final outcome.",
            ["service", "outcome"],
            registry=registry,
        ),
        "seconds": Histogram(
            "meshware_client_request_seconds",
            "Time per request, retries included.",
            ["service"],
            registry=registry,
        ),
        "attempts": Counter(
            "meshware_client_attempts_total",
            "Attempts sent to instances, by outcome.",
            ["service", "outcome"],
            registry=registry,
        ),
        "retries": Counter(
            "meshware_client_retries_total", "Retries made.", ["service"], registry=registry
        ),
        "budget": Counter(
            "meshware_client_retry_budget_exhausted",
            "Retries refused because the service's retry budget was spent.",
            ["service"],
            registry=registry,
        ),
        "ejections": Counter(
            "meshware_client_ejections_total",
            "Instances ejected by outlier detection.",
            ["service", "instance"],
            registry=registry,
        ),
        "panic": Counter(
            "meshware_client_panic_total",
            "Requests balanced in panic mode (most instances unhealthy).",
            ["service"],
            registry=registry,
        ),
        "staleness": Gauge(
            "meshware_table_staleness_seconds",
            "Seconds since the registry last answered the routing table's watch.",
            registry=registry,
        ),
    }
    _by_registry[id(registry)] = m
    return m


class PrometheusObserver:
    """Counts what the mesh client does, in ``registry`` (default: prometheus_client's own)."""

    def __init__(self, registry: Any = None) -> None:
        self._m = _metrics(registry)

    def bind(self, mesh: object) -> None:
        """Report the table staleness of ``mesh`` (a :class:`~meshware.MeshView`)."""
        if hasattr(mesh, "staleness"):

            def staleness() -> float:
                value = mesh.staleness
                return float("nan") if value is None else float(value)

            self._m["staleness"].set_function(staleness)

    def attempt(self, call: Call, attempt: Attempt) -> None:
        self._m["attempts"].labels(call.service, attempt.outcome).inc()

    def retry(self, call: Call, delay: float) -> None:
        self._m["retries"].labels(call.service).inc()

    def gave_up(self, call: Call, reason: str) -> None:
        pass

    def budget_exhausted(self, call: Call) -> None:
        self._m["budget"].labels(call.service).inc()

    def ejected(self, stats: InstanceStats, duration: float, reason: str) -> None:
        self._m["ejections"].labels(stats.service, stats.url).inc()

    def restored(self, stats: InstanceStats) -> None:
        pass

    def panic(self, call: Call) -> None:
        self._m["panic"].labels(call.service).inc()

    def finished(self, call: Call, outcome: str, seconds: float) -> None:
        self._m["requests"].labels(call.service, outcome).inc()
        self._m["seconds"].labels(call.service).observe(seconds)
