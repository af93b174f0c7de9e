"""The `orders` service: a FastAPI app that joins the mesh and calls `users` through it.

Run it with ``uvicorn orders_service:app --port 8002``. It never learns where `users` runs:
``meshware.AsyncClient`` resolves ``/users/{id}`` through the live routing table (kept current by
an etcd watch) and sends the request to a live instance, with balancing, retries and failover.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

import meshware
from meshware.integrations.starlette import Mesh

ORDERS = {
    7: {"id": 7, "user_id": 1, "item": "difference engine"},
    8: {"id": 8, "user_id": 2, "item": "compiler"},
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with meshware.AsyncClient(total_timeout=5) as client:  # an httpx.AsyncClient
        app.state.mesh = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/orders/{order_id:int}")
@meshware.public
async def get_order(order_id: int) -> dict[str, Any]:
    order = ORDERS.get(order_id)
    if order is None:
        raise HTTPException(404, "no such order")
    try:
        response = await app.state.mesh.get(f"/users/{order['user_id']}")
    except meshware.MeshError as exc:  # no route, no live instance, retries exhausted...
        raise HTTPException(503, f"users is unavailable: {exc}") from exc
    response.raise_for_status()
    return {**order, "user": response.json()}


@app.get("/orders")
async def list_orders() -> list[dict[str, Any]]:
    return list(ORDERS.values())


Mesh(app, service="orders")  # the one line
