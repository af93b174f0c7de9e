"""User/password authentication against a private etcd with auth enabled."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from meshware import EtcdAuthError
from meshware.etcd import AsyncEtcdClient, EtcdClient
from meshware.testing.etcd import EtcdServer

ROOT = ("root", "root-secret")
APP = ("app", "app-secret")  # may only touch keys under /app/


def enable_auth(server: EtcdServer) -> None:
    """Add root and a user limited to ``/app/``, then turn authentication on."""
    calls = [
        ("user/add", {"name": ROOT[0], "password": ROOT[1]}),
        ("role/add", {"name": "root"}),
        ("user/grant", {"user": "root", "role": "root"}),
        ("user/add", {"name": APP[0], "password": APP[1]}),
        ("role/add", {"name": "app"}),
        # key "/app/", range_end "/app0" (base64), READWRITE
        (
            "role/grant",
            {
                "name": "app",
                "perm": {"key": "L2FwcC8=", "range_end": "L2FwcDA=", "permType": "READWRITE"},
            },
        ),
        ("user/grant", {"user": "app", "role": "app"}),
        ("enable", {}),
    ]
    with httpx.Client(base_url=server.endpoint + "/v3/auth/") as http:
        for path, body in calls:
            http.post(path, json=body).raise_for_status()


def drop_all_tokens(server: EtcdServer) -> None:
    """Turn auth off and on again: etcd forgets every token it handed out."""
    with httpx.Client(base_url=server.endpoint + "/v3/auth/") as http:
        token = http.post("authenticate", json={"name": ROOT[0], "password": ROOT[1]})
        headers = {"Authorization": token.json()["token"]}
        http.post("disable", json={}, headers=headers).raise_for_status()
        http.post("enable", json={}).raise_for_status()


@pytest.fixture
def auth_etcd(make_etcd: Callable[..., EtcdServer]) -> EtcdServer:
    """A private etcd with auth on; tokens expire after 1 idle second."""
    server = make_etcd(extra_args=["--auth-token-ttl=1"])
    enable_auth(server)
    return server


def test_without_credentials_etcd_refuses(auth_etcd: EtcdServer) -> None:
    with EtcdClient(auth_etcd.endpoint) as client, pytest.raises(EtcdAuthError, match="user name"):
        client.get("/app/k")


def test_wrong_password_raises_auth_error(auth_etcd: EtcdServer) -> None:
    client = EtcdClient(auth_etcd.endpoint, username="app", password="wrong")
    with client, pytest.raises(EtcdAuthError, match="authentication failed"):
        client.get("/app/k")


def test_permission_denied_outside_the_users_keys(auth_etcd: EtcdServer) -> None:
    with EtcdClient(auth_etcd.endpoint, username=APP[0], password=APP[1]) as client:
        client.put("/app/k", "v")
        with pytest.raises(EtcdAuthError, match="permission denied") as info:
            client.put("/other/k", "v")
        assert info.value.code == 7
        watch = client.watch_prefix("/other/")
        with watch, pytest.raises(EtcdAuthError, match="permission denied"):
            next(watch)


def test_dropped_token_is_renewed_transparently(auth_etcd: EtcdServer) -> None:
    with EtcdClient(auth_etcd.endpoint, username=APP[0], password=APP[1]) as client:
        client.put("/app/k", "v1")
        drop_all_tokens(auth_etcd)
        client.put("/app/k", "v2")  # "invalid auth token" -> log in again -> retry
        token = client._settings.auth_headers()["Authorization"]
        drop_all_tokens(auth_etcd)
        # a watch refused because of its token is answered "permission denied": also renewed
        with client.watch_prefix("/app/") as watch:
            assert next(watch).created
        assert client._settings.auth_headers()["Authorization"] != token


def test_token_expired_by_ttl_is_renewed(auth_etcd: EtcdServer) -> None:
    with EtcdClient(auth_etcd.endpoint, username=APP[0], password=APP[1]) as client:
        client.put("/app/k", "v1")
        old_token = client._settings.auth_headers()["Authorization"]
        # Simple tokens expire after --auth-token-ttl (1 s) *idle* seconds, checked once a
        # second. Polling with the token would keep it alive, so this test has to sleep.
        time.sleep(2.1)
        stale = httpx.post(
            auth_etcd.endpoint + "/v3/kv/range",
            json={"key": "L2FwcC9r"},
            headers={"Authorization": old_token},
        )
        assert "invalid auth token" in stale.text
        assert client.get("/app/k").value == b"v1"  # type: ignore[union-attr]
        assert client._settings.auth_headers()["Authorization"] != old_token


async def test_async_client_logs_in_and_renews_a_dropped_token(auth_etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(auth_etcd.endpoint, username=APP[0], password=APP[1]) as client:
        await client.put("/app/k", "v1")
        drop_all_tokens(auth_etcd)
        assert (await client.get("/app/k")).value == b"v1"  # type: ignore[union-attr]
        drop_all_tokens(auth_etcd)
        async with client.watch_prefix("/app/") as watch:
            assert (await anext(watch)).created
