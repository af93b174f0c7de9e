"""Small services for the fake-mesh tests: Flask ``users``, FastAPI ``orders`` (calls users)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from flask import Flask, request

import meshware
from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh

USERS = {1: "Ada", 2: "Grace"}


def make_users() -> Flask:
    app = Flask("users")

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> Any:
        if user_id not in USERS:
            return {"error": "no such user"}, 404
        return {"id": user_id, "name": USERS[user_id]}

    @app.post("/users")
    def create_user() -> Any:
        return {"created": request.get_json()["name"]}, 201

    @app.get("/users/<int:user_id>/greeting")
    def greeting(user_id: int) -> Any:
        with meshware.Client() as client:  # a service's own outgoing call, through the mesh
            name = client.get(f"/users/{user_id}").json()["name"]
        return {"greeting": f"Hello, {name}"}

    FlaskMesh(app, service="users")
    return app


def make_orders() -> FastAPI:
    lifecycle: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.append("startup")
        async with meshware.AsyncClient() as client:
            app.state.mesh = client
            yield
        lifecycle.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    app.state.lifecycle = lifecycle

    @app.get("/orders/{order_id:int}")
    async def get_order(order_id: int) -> dict[str, Any]:
        response = await app.state.mesh.get("/users/1")
        if response.status_code != 200:
            raise HTTPException(502, f"users answered {response.status_code}")
        return {"id": order_id, "user": response.json()}

    StarletteMesh(app, service="orders")
    return app
