"""The mesh transports (sync and async twins) against mock instances: routing, retries, errors.

Every test runs through both ``meshware.Client`` and ``meshware.AsyncClient``; instances are
``httpx.MockTransport`` s plugged in at the per-instance seam, time is a fake clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import meshware
from meshware import RoutingTable

from .conftest import FakeClock, Instances, add_instance, users_table

Send = Callable[..., httpx.Response]


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def streamed(flavor: str, chunk: bytes) -> Any:
    """A request body of unknown length, of the kind the client flavour accepts."""
    if flavor == "sync":
        return iter([chunk])

    async def gen() -> Any:
        yield chunk

    return gen()


@pytest.fixture
def send(flavor: str, clock: FakeClock) -> Send:
    """``send(table, instances, method, url, client={...}, **request_kwargs)`` through a mesh client."""

    def run(
        table: RoutingTable,
        instances: Instances,
        method: str = "GET",
        url: str = "/users/1",
        client: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        options: dict[str, Any] = dict(
            transport_factory=instances.factory, clock=clock, rng=random.Random(0)
        )
        options.update(client or {})
        if flavor == "sync":
            with meshware.Client(table, sleep=clock.sleep, **options) as c:
                r = c.request(method, url, **kwargs)
                r.read()
                return r

        async def go() -> httpx.Response:
            async with meshware.AsyncClient(table, sleep=clock.asleep, **options) as c:
                r = await c.request(method, url, **kwargs)
                await r.aread()
                return r

        return asyncio.run(go())

    return run


def failing(urls: set[str], exc: type[Exception] = httpx.ConnectError) -> Instances:
    def handler(url: str, request: httpx.Request) -> httpx.Response:
        if url in urls:
            raise exc("boom")
        return httpx.Response(200, json={"instance": url})

    return Instances(handler)


# --------------------------------------------------------------------------- routing


def test_a_path_goes_to_an_instance_of_its_service_with_host_and_query(send: Send) -> None:
    inst = Instances()
    r = send(users_table(1), inst, url="/users/42?x=1&y=%2F")
    assert r.status_code == 200
    _url, req = inst.seen[0]
    assert str(req.url) == "http://10.0.0.1:8000/users/42?x=1&y=%2F"
    assert req.headers["host"] == "10.0.0.1:8000"


def test_a_service_can_be_addressed_by_name(send: Send) -> None:
    inst = Instances()
    send(users_table(1), inst, url="mesh://users/anything/at/all")
    assert str(inst.seen[0][1].url) == "http://10.0.0.1:8000/anything/at/all"


def test_unknown_path_raises_no_route_error_naming_method_and_path(send: Send) -> None:
    with pytest.raises(meshware.NoRouteError, match="GET /nope") as info:
        send(users_table(1), Instances(), url="/nope")
    assert isinstance(info.value, httpx.RequestError)
    assert info.value.request.url.path == "/nope"


def test_draining_instances_get_no_new_requests(send: Send) -> None:
    inst = Instances()
    for _ in range(20):
        send(users_table(3, draining=2), inst)
    assert set(inst.urls) == {"http://10.0.0.3:8000"}


def test_a_route_whose_instances_all_drain_raises_no_endpoint_available(send: Send) -> None:
    with pytest.raises(meshware.NoEndpointAvailable, match="draining") as info:
        send(users_table(2, draining=2), Instances())
    assert isinstance(info.value, httpx.ConnectError)


def test_an_unknown_service_name_raises_no_endpoint_available(send: Send) -> None:
    with pytest.raises(meshware.NoEndpointAvailable, match="meshware instances"):
        send(users_table(1), Instances(), url="mesh://billing/x")


# --------------------------------------------------------------------------- retries


def test_connection_refused_fails_over_without_delay_even_for_post(
    send: Send, clock: FakeClock
) -> None:
    inst = failing({"http://10.0.0.1:8000", "http://10.0.0.2:8000"})
    r = send(users_table(3), inst, "POST", "/users", json={"name": "Ada"})
    assert r.status_code == 200
    assert inst.urls[-1] == "http://10.0.0.3:8000"
    assert clock.slept == [] or set(clock.slept) == {0.0}
    assert all(req.content == b'{"name":"Ada"}' for _, req in inst.seen)


def test_a_post_that_failed_on_the_wire_is_not_retried_and_raises_httpx_error(send: Send) -> None:
    inst = failing(
        {"http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"}, httpx.ReadError
    )
    with pytest.raises(httpx.ReadError) as info:
        send(users_table(3), inst, "POST", "/users", json={})
    assert not isinstance(info.value, meshware.RetriesExhausted)
    assert len(inst.seen) == 1


def test_exhausted_retries_raise_an_error_that_is_also_the_last_httpx_error(send: Send) -> None:
    inst = failing(
        {"http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"}, httpx.ReadError
    )
    with pytest.raises(meshware.RetriesExhausted) as info:
        send(users_table(3), inst)
    err = info.value
    assert isinstance(err, httpx.ReadError)
    assert isinstance(err, meshware.MeshError)
    assert [a.outcome for a in err.attempts] == ["failed"] * 3
    assert len({a.instance for a in err.attempts}) == 3
    assert "3 attempts made" in str(err)
    assert isinstance(err.__cause__, httpx.ReadError)


def test_a_503_is_retried_and_the_last_response_returned_when_all_fail(send: Send) -> None:
    inst = Instances(lambda url, req: httpx.Response(503, text="busy"))
    r = send(users_table(3), inst)
    assert r.status_code == 503
    assert r.text == "busy"
    assert len(inst.seen) == 3


def test_retry_after_is_waited_for(send: Send, clock: FakeClock) -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200)])
    r = send(users_table(2), Instances(lambda url, req: next(answers)))
    assert r.status_code == 200
    assert clock.slept == [2.0]


def test_a_route_published_idempotent_retries_post_with_its_own_limit(send: Send) -> None:
    inst = Instances(lambda url, req: httpx.Response(502))
    send(users_table(3), inst, "POST", "/users/1/touch")
    assert len(inst.seen) == 5  # retries=4 published by the route


def test_per_request_overrides_turn_retries_off(send: Send) -> None:
    inst = Instances(lambda url, req: httpx.Response(503))
    send(users_table(3), inst, extensions={"meshware": {"retries": 0}})
    assert len(inst.seen) == 1
    assert "meshware" not in inst.seen[0][1].extensions


def test_a_streamed_body_of_unknown_length_is_not_replayed(send: Send, flavor: str) -> None:
    inst = failing(
        {"http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"}, httpx.ReadError
    )
    with pytest.raises(httpx.ReadError):
        send(users_table(3), inst, "PUT", "/users/1", content=streamed(flavor, b"chunk"))
    assert len(inst.seen) == 1


def test_a_small_streamed_body_with_a_length_is_buffered_and_replayed(
    send: Send, flavor: str
) -> None:
    inst = Instances(lambda url, req: httpx.Response(503 if len(inst.seen) == 1 else 200))
    body = streamed(flavor, b"chunk")
    r = send(users_table(3), inst, "PUT", "/users/1", content=body, headers={"Content-Length": "5"})
    assert r.status_code == 200
    assert [req.content for _, req in inst.seen] == [b"chunk", b"chunk"]


# --------------------------------------------------------------------------- timeouts, deadlines


def test_the_remaining_deadline_is_sent_downstream(send: Send) -> None:
    inst = Instances()
    send(users_table(1), inst, extensions={"meshware": {"total_timeout": 1.5}})
    assert inst.seen[0][1].headers[meshware.DEADLINE_HEADER] == "1500"


def test_no_deadline_header_without_a_deadline(send: Send) -> None:
    inst = Instances()
    send(users_table(1), inst)
    assert meshware.DEADLINE_HEADER not in inst.seen[0][1].headers


def test_attempt_timeouts_cap_httpx_timeouts(send: Send) -> None:
    inst = Instances()
    send(users_table(1), inst, url="/slow", timeout=httpx.Timeout(5.0, connect=0.01))
    assert inst.seen[0][1].extensions["timeout"] == {
        "connect": 0.01,
        "read": 0.05,
        "write": 0.05,
        "pool": 0.05,
    }


def test_a_timeout_past_the_deadline_raises_deadline_exceeded(send: Send, clock: FakeClock) -> None:
    def slow(url: str, request: httpx.Request) -> httpx.Response:
        clock.now += 1.0
        raise httpx.ReadTimeout("slow")

    with pytest.raises(meshware.DeadlineExceeded) as info:
        send(users_table(3), Instances(slow), extensions={"meshware": {"total_timeout": 0.5}})
    assert isinstance(info.value, httpx.TimeoutException)
    assert len(info.value.attempts) == 1


def test_an_inherited_deadline_already_passed_sends_nothing(send: Send) -> None:
    inst = Instances()
    with meshware.deadline(0), pytest.raises(meshware.DeadlineExceeded, match="nothing sent"):
        send(users_table(1), inst)
    assert inst.seen == []


# --------------------------------------------------------------------------- httpx keeps working


def test_auth_event_hooks_and_cookies_still_apply(send: Send, flavor: str) -> None:
    inst = Instances(lambda url, req: httpx.Response(200, headers={"set-cookie": "s=1; Path=/"}))
    hooks: list[str] = []

    def hook(r: httpx.Request) -> Any:
        hooks.append(f"request {r.url.path}")
        if flavor == "async":
            return asyncio.sleep(0)
        return None

    send(
        users_table(1),
        inst,
        client={
            "auth": ("ada", "pw"),
            "cookies": {"c": "1"},
            "event_hooks": {"request": [hook]},
        },
    )
    sent = inst.seen[0][1]
    assert sent.headers["authorization"].startswith("Basic ")
    assert sent.headers["cookie"] == "c=1"
    assert hooks == ["request /users/1"]


def test_urls_that_are_not_mesh_urls_pass_through() -> None:
    plain = httpx.MockTransport(lambda req: httpx.Response(204))
    transport = meshware.MeshTransport(users_table(1), transport_factory=Instances().factory)
    transport._plain = plain
    with httpx.Client(transport=transport) as c:
        assert c.get("http://127.0.0.1:9/whatever").status_code == 204


# --------------------------------------------------------------------------- balancing and pools


def test_ejected_instance_is_skipped_then_probed_back(clock: FakeClock) -> None:
    down = {"http://10.0.0.1:8000"}
    inst = failing(down)
    policy = meshware.ClientPolicy(eject_after=2, eject_base=10.0, eject_jitter=0.0)
    with meshware.Client(
        users_table(3),
        policy=policy,
        transport_factory=inst.factory,
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        for _ in range(60):
            assert c.get("/users/1").status_code == 200
        tries = inst.urls.count("http://10.0.0.1:8000")
        assert tries == 2  # ejected after two failures, never tried again while ejected
        down.clear()
        clock.now += 11.0
        for _ in range(60):
            c.get("/users/1")
        assert inst.urls.count("http://10.0.0.1:8000") > tries + 5  # the probe passed: back


def test_each_instance_gets_its_own_pool_and_vanished_ones_are_closed(clock: FakeClock) -> None:
    inst = Instances()
    view = type("View", (), {})()
    view.table = users_table(2)
    with meshware.Client(view, transport_factory=inst.factory, clock=clock) as c:  # type: ignore[arg-type]
        for _ in range(20):
            c.get("/users/1")
        pools = c.mesh_transport.pools
        assert set(pools) == {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
        view.table = add_instance(users_table(1), "http://10.0.0.9:8000")
        c.get("/users/1")
        assert "http://10.0.0.2:8000" not in c.mesh_transport.pools
        assert inst.closed == ["http://10.0.0.2:8000"]


class Chunks(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield from (b"a", b"b")


def test_a_streamed_response_holds_its_instance_busy_until_closed(clock: FakeClock) -> None:
    inst = Instances(lambda url, req: httpx.Response(200, stream=Chunks()))
    with meshware.Client(users_table(1), transport_factory=inst.factory, clock=clock) as c:
        with c.stream("GET", "/users/1") as r:
            stats = c.mesh_transport.engine.stats["http://10.0.0.1:8000"]
            assert stats.inflight == 1
            r.read()
        assert stats.inflight == 0


def test_bad_extensions_fail_with_a_clear_error(send: Send) -> None:
    with pytest.raises(meshware.ConfigError, match="unknown key"):
        send(users_table(1), Instances(), extensions={"meshware": {"retry": 1}})


# --------------------------------------------------------------------------- review regressions


class Failing(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        raise httpx.ReadError("connection reset while reading the body")
        yield b""  # pragma: no cover


def inflight(client: meshware.Client) -> dict[str, int]:
    return {u: s.inflight for u, s in client.mesh_transport.engine.stats.items() if s.inflight}


def test_a_retry_after_of_non_ascii_digits_is_ignored_not_a_crash(clock: FakeClock) -> None:
    answers = iter(
        [httpx.Response(503, headers=[(b"retry-after", "²".encode())]), httpx.Response(200)]
    )
    inst = Instances(lambda url, req: next(answers))
    with meshware.Client(
        users_table(2), transport_factory=inst.factory, clock=clock, sleep=clock.sleep
    ) as c:
        assert c.get("/users/1").status_code == 200
        assert inflight(c) == {}


def test_a_retryable_answer_whose_body_fails_is_retried_and_released(clock: FakeClock) -> None:
    answers = iter([httpx.Response(503, stream=Failing()), httpx.Response(200)])
    inst = Instances(lambda url, req: next(answers))
    with meshware.Client(
        users_table(2), transport_factory=inst.factory, clock=clock, sleep=clock.sleep
    ) as c:
        assert c.get("/users/1").status_code == 200
        assert inflight(c) == {}


def test_a_probe_that_ends_without_an_outcome_does_not_leave_the_instance_out_for_good(
    clock: FakeClock,
) -> None:
    bad = {"http://10.0.0.1:8000"}
    mode = {"error": httpx.ConnectError}

    def handler(url: str, req: httpx.Request) -> httpx.Response:
        if url in bad:
            raise mode["error"]("boom")
        return httpx.Response(200)

    inst = Instances(handler)
    policy = meshware.ClientPolicy(eject_after=1, eject_base=1.0, eject_jitter=0.0)
    with meshware.Client(
        users_table(1),
        policy=policy,
        transport_factory=inst.factory,
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        with pytest.raises(meshware.RetriesExhausted):
            c.get("/users/1")  # ejects the only instance
        clock.now += 2.0
        mode["error"] = RuntimeError  # the probe dies of something that is not an httpx error
        with pytest.raises(RuntimeError):
            c.get("/users/1")
        bad.clear()
        assert c.get("/users/1").status_code == 200  # a new probe may go, and passes


def test_explicit_limits_hold_for_the_whole_instance() -> None:
    from meshware._pool import FastPool

    with meshware.Client(users_table(1), limits=httpx.Limits(max_connections=2)) as c:
        transport = c.mesh_transport._pool(
            c.mesh_transport.engine.stats_list(
                (), c.mesh_transport.mesh.table.instances("users"), 0.0
            )[0]
        ).transport
        assert isinstance(transport._pool, FastPool)  # type: ignore[attr-defined]
        assert transport._pool._max_connections == 2  # type: ignore[attr-defined]


def test_pools_of_instances_gone_from_the_table_are_closed_even_if_their_stats_were_dropped(
    clock: FakeClock,
) -> None:
    inst = Instances()
    view = type("View", (), {})()
    view.table = users_table(1)
    with meshware.Client(view, transport_factory=inst.factory, clock=clock) as c:  # type: ignore[arg-type]
        c.get("/users/1")
        c.mesh_transport.engine.stats.clear()  # as when a retry used an instance already gone
        view.table = add_instance(RoutingTable.empty(), "http://10.0.0.9:8000")
        c.get("/users/1")
        assert inst.closed == ["http://10.0.0.1:8000"]


def test_service_addressed_requests_follow_a_table_change(clock: FakeClock) -> None:
    inst = Instances()
    view = type("View", (), {})()
    view.table = users_table(1)
    with meshware.Client(view, transport_factory=inst.factory, clock=clock) as c:  # type: ignore[arg-type]
        c.get("mesh://users/users/1")
        view.table = add_instance(RoutingTable.empty(), "http://10.0.0.9:8000")
        c.get("mesh://users/users/1")
    assert inst.urls == ["http://10.0.0.1:8000", "http://10.0.0.9:8000"]


def test_a_deadline_passing_while_an_attempt_is_prepared_gives_a_positive_timeout(
    clock: FakeClock,
) -> None:
    inst = Instances()

    def slow_factory(instance: object) -> httpx.BaseTransport:
        clock.now += 1.0  # like building an SSL context under load
        return inst.factory(instance)

    with meshware.Client(
        users_table(1), transport_factory=slow_factory, clock=clock, total_timeout=0.5
    ) as c:
        c.get("/users/1")
    timeouts = inst.seen[0][1].extensions["timeout"]
    assert all(v is not None and v > 0 for v in timeouts.values())
