"""Apps whose /slow request takes a while: for testing that shutdown drains before it stops."""

from __future__ import annotations

import asyncio
import time

from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh

flask_app = Flask(__name__)


@flask_app.get("/slow/<float:seconds>")
def flask_slow(seconds: float) -> str:
    time.sleep(seconds)  # the work a request does
    return "done"


FlaskMesh(flask_app, service="slow-flask")


async def starlette_slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.path_params["seconds"]))  # the work a request does
    return PlainTextResponse("done")


starlette_app = Starlette(routes=[Route("/slow/{seconds:float}", starlette_slow)])
StarletteMesh(starlette_app, service="slow-starlette")
