"""An instance that cannot even be dialed (its pool or its attempt cannot be built) is a failing
instance: the request goes on to another one, and the failures eject it (issue 12, finding 5)."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

import meshware
from meshware import RoutingTable

from .conftest import FakeClock, Instances, users_table

BAD = "http://10.0.0.1:8000"


def broken_factory(instances: Instances):  # type: ignore[no-untyped-def]
    def factory(instance: object) -> httpx.BaseTransport:
        if instance.url == BAD:  # type: ignore[attr-defined]
            raise ValueError("this instance's pool cannot be built")
        return instances.factory(instance)

    return factory


def run_calls(flavor: str, table: RoutingTable, instances: Instances, n: int) -> list[int]:
    clock = FakeClock()
    options = dict(transport_factory=broken_factory(instances), clock=clock, rng=random.Random(1))
    if flavor == "sync":
        with meshware.Client(table, sleep=clock.sleep, **options) as c:  # type: ignore[arg-type]
            return [c.get("/users/1").status_code for _ in range(n)]

    async def go() -> list[int]:
        async with meshware.AsyncClient(table, sleep=clock.asleep, **options) as c:  # type: ignore[arg-type]
            return [(await c.get("/users/1")).status_code for _ in range(n)]

    return asyncio.run(go())


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_every_call_succeeds_and_the_undialable_instance_is_ejected(flavor: str) -> None:
    instances = Instances()
    statuses = run_calls(flavor, users_table(2), instances, 100)
    assert statuses == [200] * 100  # before: 99 of 100 raised
    assert set(instances.urls) == {"http://10.0.0.2:8000"}


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_a_lone_undialable_instance_fails_with_a_connect_error_naming_it(flavor: str) -> None:
    table = users_table(1)
    with pytest.raises(httpx.ConnectError, match=r"cannot dial instance 'http://10\.0\.0\.1:8000'"):
        run_calls(flavor, table, Instances(), 1)
