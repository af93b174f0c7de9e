"""The local router as an ASGI app, against mock instances (no servers)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import meshware
from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware.edge.proxy import MeshProxy, _body, _ClientGone


def make_table() -> RoutingTable:
    routes = (
        RouteSpec("/items/{id:int}", ("GET",)),  # private, and more specific
        RouteSpec("/items/{name}", ("GET",), public=True),
    )
    return RoutingTable.from_records(
        [InstanceRecord("items", "i1", "http://10.0.0.1:8000", routes)]
    )


def call(public_only: bool, method: str, path: str, **kw: Any) -> httpx.Response:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"path": request.url.path})

    table = make_table()

    async def go() -> httpx.Response:
        client = meshware.AsyncClient(
            table, transport_factory=lambda i: httpx.MockTransport(upstream)
        )
        proxy = MeshProxy(client, type("M", (), {"table": table})(), public_only=public_only)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=proxy), base_url="http://edge"
        ) as c:
            r = await c.request(method, path, **kw)
        await client.aclose()
        return r

    return asyncio.run(go())


def test_a_public_template_never_leads_to_a_private_route_that_wins_in_the_table() -> None:
    assert call(True, "GET", "/items/42").status_code == 404  # {id:int} is private and wins
    assert call(True, "GET", "/items/hat").json() == {"path": "/items/hat"}


def test_every_route_is_reachable_when_not_public_only() -> None:
    assert call(False, "GET", "/items/42").status_code == 200


def test_an_unknown_path_is_404_and_an_unpublished_method_405() -> None:
    assert call(False, "GET", "/nothing").status_code == 404
    r = call(False, "DELETE", "/items/hat")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"


def test_a_client_gone_mid_upload_never_yields_a_complete_looking_body() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b'{"items": [1, 2', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def consume() -> bytes:
        return b"".join([chunk async for chunk in _body(receive)])

    with pytest.raises(_ClientGone):
        asyncio.run(consume())
