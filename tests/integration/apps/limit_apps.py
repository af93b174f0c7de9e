"""Apps that declare limits (``tests/integration/test_member_limits.py``); factories, so that
importing this module registers nothing.

* ``limited`` (Starlette, ``uvicorn --factory limit_apps:starlette_app``) and ``limited-flask``
  (Flask, ``gunicorn 'limit_apps:flask_app()'``): ``GET /login`` limited to 10/s per caller,
  burst 4; ``GET /report`` at most 1 in progress (it takes 0.3 s); ``GET /free`` unlimited
  (answers its process id).
"""

from __future__ import annotations

import os
import time

from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import meshware
from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh


def starlette_app() -> Starlette:
    @meshware.rate_limit("10/s", burst=4)
    async def login(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @meshware.concurrency_limit(1)
    def report(request: Request) -> PlainTextResponse:
        time.sleep(0.3)
        return PlainTextResponse("report")

    async def free(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(os.getpid()))

    app = Starlette(routes=[Route("/login", login), Route("/report", report), Route("/free", free)])
    StarletteMesh(app, service="limited")
    return app


def flask_app() -> Flask:
    app = Flask("limited_flask")

    @app.get("/flask/login")
    @meshware.rate_limit("10/s", burst=4)
    def login() -> str:
        return "ok"

    FlaskMesh(app, service="limited-flask")
    return app
