"""The `orders` service: a FastAPI app that joins the mesh and calls `users` through it.

Run it with ``uvicorn orders_service:app --port 8002``. It never learns where `users` runs: it
resolves ``/users/{id}`` through the live routing table and calls an instance that serves it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

import meshware
from meshware.integrations.starlette import Mesh

ORDERS = {
    7: {"id": 7, "user_id": 1, "item": "difference engine"},
    8: {"id": 8, "user_id": 2, "item": "compiler"},
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with meshware.connect() as mesh:  # the live routing table, kept current by an etcd watch
        async with httpx.AsyncClient(timeout=5) as http:
            app.state.mesh, app.state.http = mesh, http
            yield


app = FastAPI(lifespan=lifespan)


async def call_mesh(method: str, path: str) -> Any:
    """Resolve a path through the mesh and call one live instance of its service."""
    found = app.state.mesh.resolve(method, path)
    instance = random.choice(found.require_instances())
    response = await app.state.http.request(method, instance.url + path)
    response.raise_for_status()
    return response.json()


@app.get("/orders/{order_id:int}")
@meshware.public
async def get_order(order_id: int) -> dict[str, Any]:
    order = ORDERS.get(order_id)
    if order is None:
        raise HTTPException(404, "no such order")
    user = await call_mesh("GET", f"/users/{order['user_id']}")
    return {**order, "user": user}


@app.get("/orders")
async def list_orders() -> list[dict[str, Any]]:
    return list(ORDERS.values())


Mesh(app, service="orders")  # the one line
