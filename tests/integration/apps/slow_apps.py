"""Apps whose /slow request takes a while: for testing that shutdown drains before it stops.

The answer is streamed: ``started`` at once (so a test knows the server is working on the
request), then ``done`` after the given number of seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from flask import Flask, Response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from meshware.integrations.flask import Mesh as FlaskMesh
from meshware.integrations.starlette import Mesh as StarletteMesh

flask_app = Flask(__name__)


@flask_app.get("/slow/<float:seconds>")
def flask_slow(seconds: float) -> Response:
    def body() -> Iterator[str]:
        yield "started\n"
        time.sleep(seconds)  # the work a request does
        yield "done"

    return Response(body(), mimetype="text/plain")


FlaskMesh(flask_app, service="slow-flask")


async def starlette_slow(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield "started\n"
        await asyncio.sleep(float(request.path_params["seconds"]))  # the work a request does
        yield "done"

    return StreamingResponse(body(), media_type="text/plain")


starlette_app = Starlette(routes=[Route("/slow/{seconds:float}", starlette_slow)])
StarletteMesh(starlette_app, service="slow-starlette")
