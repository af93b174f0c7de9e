"""Apps for the client drills (``tests/integration/test_client_drills.py``).

Factories, so that importing this module registers nothing: ``gunicorn 'drill_apps:users_app()'``,
``uvicorn --factory drill_apps:slow_app``.

* ``users``: ``GET /users/<id>`` and a non-idempotent ``POST /users`` (Flask);
* ``slow``: ``GET /slow/{seconds}`` sleeps that long (Starlette);
* ``relay``: ``GET /relay/{seconds}`` calls ``slow`` through ``meshware.Client()`` (the process's
  shared view) inside its handler, so the caller's deadline travels on; it keeps an account of
  that downstream call, read back with ``GET /relay-outcome`` (which waits for it). Flask and
  Starlette flavours.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from flask import Flask, jsonify
from flask import request as flask_request
from flask.typing import ResponseReturnValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import meshware
from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh


def users_app() -> Flask:
    app = Flask("drill_users")

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> ResponseReturnValue:
        return jsonify(id=user_id, pid=os.getpid())

    @app.post("/users")
    def create_user() -> ResponseReturnValue:
        return jsonify(created=flask_request.get_json(), pid=os.getpid()), 201

    FlaskMesh(app, service="users")
    return app


def slow_app() -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(float(request.path_params["seconds"]))
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/slow/{seconds:float}", slow)])
    StarletteMesh(app, service="slow")
    return app


class _Relay:
    """The downstream call of ``/relay`` and the account of the last one (one per process)."""

    def __init__(self) -> None:
        self._client: meshware.Client | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: dict[str, Any] = {}

    def call(self, seconds: float, header: str | None) -> dict[str, Any]:
        with self._lock:
            if self._client is None:
                self._client = meshware.Client()  # the process's shared view (MESHWARE_* env)
            client = self._client
        self._done.clear()
        left = meshware.time_left()  # the deadline the integration set from the header
        t0 = time.monotonic()
        try:
            response = client.get(f"/slow/{seconds}")
            outcome: dict[str, Any] = {"error": None, "status": response.status_code}
        except Exception as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)[:500]}
        outcome.update(elapsed=time.monotonic() - t0, time_left=left, header=header)
        self._outcome = outcome
        self._done.set()
        return outcome

    def last(self) -> dict[str, Any]:
        if not self._done.wait(10):
            return {"error": "no /relay call finished within 10 s"}
        return self._outcome


def relay_flask() -> Flask:
    app = Flask("drill_relay")
    relay = _Relay()

    @app.get("/relay/<float:seconds>")
    def relay_call(seconds: float) -> ResponseReturnValue:
        return jsonify(relay.call(seconds, flask_request.headers.get(meshware.DEADLINE_HEADER)))

    @app.get("/relay-outcome")
    def relay_outcome() -> ResponseReturnValue:
        return jsonify(relay.last())

    FlaskMesh(app, service="relay")
    return app


def relay_starlette() -> Starlette:
    relay = _Relay()

    def relay_call(request: Request) -> JSONResponse:  # sync: runs in a worker thread
        seconds = float(request.path_params["seconds"])
        return JSONResponse(relay.call(seconds, request.headers.get(meshware.DEADLINE_HEADER)))

    def relay_outcome(request: Request) -> JSONResponse:
        return JSONResponse(relay.last())

    app = Starlette(
        routes=[
            Route("/relay/{seconds:float}", relay_call),
            Route("/relay-outcome", relay_outcome),
        ]
    )
    StarletteMesh(app, service="relay")
    return app
