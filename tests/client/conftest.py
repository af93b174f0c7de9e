"""Helpers for the mesh client's tests: tables built from records, fake clocks, mock instances."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
import pytest

from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware._core.table import Entry, Reset, Upsert
from meshware.testing.fake import MeshClock

PREFIX = "/meshware"


def entry(
    service: str, url: str, routes: Iterable[RouteSpec], *, state: str = "serving", rev: int = 1
) -> Entry:
    iid = url.split("//", 1)[1].replace(":", "-").replace(".", "-").replace("/", "")
    record = InstanceRecord(service, f"i{iid}", url, tuple(routes), state=state)  # type: ignore[arg-type]
    return Entry(f"{PREFIX}/v1/instances/{service}/i{iid}", record.encode(), rev, rev)


USERS = (
    RouteSpec("/users/{id:int}", ("GET", "HEAD", "PUT")),
    RouteSpec("/users", ("POST",)),
    RouteSpec("/users/{id:int}/touch", ("POST",), idempotent=True, retries=4),
    RouteSpec("/slow", ("GET",), timeout=0.05),
)


def users_table(n: int = 3, *, draining: int = 0) -> RoutingTable:
    """``n`` instances of ``users`` at http://10.0.0.K:8000, the first ``draining`` of them draining."""
    entries = tuple(
        entry(
            "users",
            f"http://10.0.0.{k}:8000",
            USERS,
            state="draining" if k <= draining else "serving",
        )
        for k in range(1, n + 1)
    )
    return RoutingTable.empty(PREFIX).apply(Reset(entries, 1))


def add_instance(table: RoutingTable, url: str, rev: int = 2) -> RoutingTable:
    return table.apply(Upsert(entry("users", url, USERS, rev=rev), rev))


# The clients' tests use the clock meshware ships for its fake mesh: time moves only when told.
FakeClock = MeshClock


Handler = Callable[[str, httpx.Request], httpx.Response]


class Instances:
    """Mock instances: ``handler(instance_url, request)`` answers; every attempt is recorded."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or (lambda url, req: httpx.Response(200, json={"instance": url}))
        self.seen: list[tuple[str, httpx.Request]] = []
        self.closed: list[str] = []

    def factory(self, instance: object) -> httpx.MockTransport:
        url = instance.url  # type: ignore[attr-defined]

        def handle(request: httpx.Request) -> httpx.Response:
            request.read()
            self.seen.append((url, request))
            return self.handler(url, request)

        outer = self

        class Tracked(httpx.MockTransport):
            def close(self) -> None:
                outer.closed.append(url)

            async def aclose(self) -> None:
                outer.closed.append(url)

        return Tracked(handle)

    @property
    def urls(self) -> list[str]:
        return [u for u, _ in self.seen]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
