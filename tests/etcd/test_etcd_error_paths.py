"""Error paths of the clients against answers faked with respx (no etcd needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from meshware import EtcdAuthError, EtcdError, LeaseLost, RegistryUnavailable
from meshware.etcd import AsyncEtcdClient, EtcdClient

A = "http://etcd-a:2379"
B = "http://etcd-b:2379"
HEADER = {"cluster_id": "1", "member_id": "2", "revision": "7", "raft_term": "2"}
EMPTY_RANGE = {"header": HEADER}


def error(message: str, code: int, status: int) -> httpx.Response:
    return httpx.Response(status, json={"error": message, "code": code, "message": message})


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_malformed_json_raises_etcd_error(mock: respx.MockRouter) -> None:
    mock.post(f"{A}/v3/kv/range").respond(200, content=b"<html>oops</html>")
    with EtcdClient(A) as client, pytest.raises(EtcdError, match=r"not JSON.*oops"):
        client.get("k")


def test_gateway_error_body_raises_etcd_error_with_code_and_status(
    mock: respx.MockRouter,
) -> None:
    mock.post(f"{A}/v3/kv/put").mock(return_value=error("etcdserver: request is too large", 3, 400))
    with EtcdClient(A) as client, pytest.raises(EtcdError, match="too large") as info:
        client.put("k", "v")
    assert (info.value.code, info.value.status) == (3, 400)


def test_503_fails_over_to_the_next_endpoint_and_sticks_to_it(mock: respx.MockRouter) -> None:
    a = mock.post(f"{A}/v3/kv/range").mock(return_value=error("etcdserver: no leader", 14, 503))
    b = mock.post(f"{B}/v3/kv/range").respond(200, json=EMPTY_RANGE)
    with EtcdClient([A, B]) as client:
        assert client.get("k") is None
        assert client.get("k") is None
        assert client.current_endpoint == B
    assert (a.call_count, b.call_count) == (1, 2)


def test_connection_errors_on_every_endpoint_raise_registry_unavailable(
    mock: respx.MockRouter,
) -> None:
    mock.post(f"{A}/v3/kv/range").mock(side_effect=httpx.ConnectError("refused"))
    mock.post(f"{B}/v3/kv/range").mock(side_effect=httpx.ReadTimeout("too slow"))
    with EtcdClient([A, B]) as client, pytest.raises(RegistryUnavailable) as info:
        client.get("k")
    assert f"{A}: ConnectError: refused" in str(info.value)
    assert f"{B}: ReadTimeout: too slow" in str(info.value)


def test_failed_endpoint_is_tried_again_on_the_next_call(mock: respx.MockRouter) -> None:
    route = mock.post(f"{A}/v3/kv/range")
    route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=EMPTY_RANGE)]
    with EtcdClient(A) as client:
        with pytest.raises(RegistryUnavailable):
            client.get("k")
        assert client.get("k") is None  # no lock-out after a failure


def test_expired_token_is_renewed_once_and_the_call_retried(mock: respx.MockRouter) -> None:
    login = mock.post(f"{A}/v3/auth/authenticate")
    login.side_effect = [
        httpx.Response(200, json={"header": HEADER, "token": "t1"}),
        httpx.Response(200, json={"header": HEADER, "token": "t2"}),
    ]
    rng = mock.post(f"{A}/v3/kv/range")
    rng.side_effect = [
        httpx.Response(200, json=EMPTY_RANGE),
        error("etcdserver: invalid auth token", 16, 401),
        httpx.Response(200, json=EMPTY_RANGE),
    ]
    with EtcdClient(A, username="root", password="pw") as client:
        client.get("k")
        client.get("k")
    assert login.call_count == 2
    tokens = [call.request.headers.get("authorization") for call in rng.calls]
    assert tokens == ["t1", "t1", "t2"]


def test_a_token_refused_again_after_login_is_an_auth_error(mock: respx.MockRouter) -> None:
    mock.post(f"{A}/v3/auth/authenticate").respond(200, json={"header": HEADER, "token": "t"})
    mock.post(f"{A}/v3/kv/range").mock(
        return_value=error("etcdserver: invalid auth token", 16, 401)
    )
    with (
        EtcdClient(A, username="root", password="pw") as client,
        pytest.raises(EtcdAuthError, match="invalid auth token"),
    ):
        client.get("k")


def test_wrong_password_raises_auth_error(mock: respx.MockRouter) -> None:
    message = "etcdserver: authentication failed, invalid user ID or password"
    mock.post(f"{A}/v3/auth/authenticate").mock(return_value=error(message, 3, 400))
    with (
        EtcdClient(A, username="root", password="bad") as client,
        pytest.raises(EtcdAuthError, match="authentication failed"),
    ):
        client.get("k")


def test_credentials_for_a_server_without_auth_send_no_token(mock: respx.MockRouter) -> None:
    message = "etcdserver: authentication is not enabled"
    mock.post(f"{A}/v3/auth/authenticate").mock(return_value=error(message, 9, 400))
    rng = mock.post(f"{A}/v3/kv/range").respond(200, json=EMPTY_RANGE)
    with EtcdClient(A, username="root", password="pw") as client:
        client.get("k")
    assert "authorization" not in rng.calls.last.request.headers


def test_keepalive_of_an_unknown_lease_raises_lease_lost(mock: respx.MockRouter) -> None:
    # etcd answers a keep-alive for an unknown lease with 200 and no TTL.
    body = {"result": {"header": HEADER, "ID": "123"}}
    mock.post(f"{A}/v3/lease/keepalive").respond(200, content=json.dumps(body).encode() + b"\n")
    with EtcdClient(A) as client, pytest.raises(LeaseLost):
        client.lease_keepalive(123)


def test_revoking_an_unknown_lease_is_fine(mock: respx.MockRouter) -> None:
    mock.post(f"{A}/v3/lease/revoke").mock(
        return_value=error("etcdserver: requested lease not found", 5, 404)
    )
    with EtcdClient(A) as client:
        client.lease_revoke(123)


def test_watch_stream_that_ends_without_cancel_raises_registry_unavailable(
    mock: respx.MockRouter,
) -> None:
    created = json.dumps({"result": {"header": HEADER, "created": True}}).encode() + b"\n"
    mock.post(f"{A}/v3/watch").respond(200, content=created)
    with EtcdClient(A) as client:
        watch = client.watch_prefix("/p/")
        assert next(watch).created
        with pytest.raises(RegistryUnavailable, match="watch again from revision 8"):
            next(watch)


# -- async twin --------------------------------------------------------------------------------


async def test_async_503_fails_over_to_the_next_endpoint(mock: respx.MockRouter) -> None:
    mock.post(f"{A}/v3/kv/range").mock(return_value=error("etcdserver: no leader", 14, 503))
    mock.post(f"{B}/v3/kv/range").respond(200, json=EMPTY_RANGE)
    async with AsyncEtcdClient([A, B]) as client:
        assert await client.get("k") is None
        assert client.current_endpoint == B


async def test_async_all_endpoints_down_raise_registry_unavailable(
    mock: respx.MockRouter,
) -> None:
    mock.post(f"{A}/v3/kv/range").mock(side_effect=httpx.ConnectError("refused"))
    async with AsyncEtcdClient(A) as client:
        with pytest.raises(RegistryUnavailable, match="refused"):
            await client.get("k")


async def test_async_malformed_json_raises_etcd_error(mock: respx.MockRouter) -> None:
    mock.post(f"{A}/v3/kv/put").respond(200, json={"header": {"revision": []}})
    async with AsyncEtcdClient(A) as client:
        with pytest.raises(EtcdError, match="'revision' should be an integer"):
            await client.put("k", "v")


async def test_async_expired_token_is_renewed(mock: respx.MockRouter) -> None:
    login = mock.post(f"{A}/v3/auth/authenticate").respond(
        200, json={"header": HEADER, "token": "t"}
    )
    mock.post(f"{A}/v3/kv/range").side_effect = [
        error("etcdserver: invalid auth token", 16, 401),
        httpx.Response(200, json=EMPTY_RANGE),
    ]
    async with AsyncEtcdClient(A, username="root", password="pw") as client:
        assert await client.get("k") is None
    assert login.call_count == 2
