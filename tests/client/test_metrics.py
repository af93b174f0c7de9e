"""Prometheus metrics count requests, attempts, retries and ejections per service."""

from __future__ import annotations

import random

import httpx
import pytest

import meshware

from .conftest import FakeClock, Instances, users_table

prometheus_client = pytest.importorskip("prometheus_client")
from meshware.metrics import PrometheusObserver  # noqa: E402


def value(registry: object, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if got is None else float(got)


def test_requests_attempts_retries_and_ejections_are_counted(clock: FakeClock) -> None:
    registry = prometheus_client.CollectorRegistry()
    down = "http://10.0.0.1:8000"

    def handler(url: str, request: httpx.Request) -> httpx.Response:
        if url == down:
            raise httpx.ConnectError("refused")
        return httpx.Response(200)

    policy = meshware.ClientPolicy(eject_after=1)
    with meshware.Client(
        users_table(2),
        policy=policy,
        transport_factory=Instances(handler).factory,
        metrics=PrometheusObserver(registry),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(0),
    ) as client:
        for _ in range(10):
            client.get("/users/1")
        with pytest.raises(meshware.NoRouteError):
            client.get("/nope")

    assert value(registry, "meshware_client_requests_total", service="users", outcome="2xx") == 10
    assert value(registry, "meshware_client_attempts_total", service="users", outcome="unsent") == 1
    assert value(registry, "meshware_client_retries_total", service="users") == 1
    assert value(registry, "meshware_client_ejections_total", service="users", instance=down) == 1
    assert value(registry, "meshware_client_request_seconds_count", service="users") == 10


def test_two_observers_on_one_registry_share_the_metrics() -> None:
    registry = prometheus_client.CollectorRegistry()
    PrometheusObserver(registry)
    PrometheusObserver(registry)  # no "Duplicated timeseries" error


def test_table_staleness_is_reported_for_a_view() -> None:
    registry = prometheus_client.CollectorRegistry()
    view = type("View", (), {"table": users_table(1), "staleness": 2.5})()
    meshware.Client(view, metrics=PrometheusObserver(registry)).close()
    assert value(registry, "meshware_table_staleness_seconds") == 2.5
