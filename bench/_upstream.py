"""The upstream of ``bench/bench_client.py``: a tiny plain-ASGI app, served by uvicorn.

``GET /users/{id}`` answers a small JSON document naming the instance (``INSTANCE`` in the
environment) that served it. ``?delay=MS`` makes it sleep that many milliseconds first, times
``SLOWDOWN`` (an environment factor, default 1): one instance started with ``SLOWDOWN=10`` is ten
times slower on the same requests. Everything else is a 404. Plain ASGI (no framework) so the
server costs as little as possible next to the clients being measured.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs

INSTANCE = os.environ.get("INSTANCE", "?")
SLOWDOWN = float(os.environ.get("SLOWDOWN", "1"))

_JSON = [(b"content-type", b"application/json")]
_NOT_FOUND = b'{"error": "not found"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    status = 404
    body = _NOT_FOUND
    if path.startswith("/users/") and path[7:].isdigit():
        query = scope.get("query_string", b"")
        if query:
            delay = parse_qs(query.decode("latin-1")).get("delay")
            if delay:
                await asyncio.sleep(float(delay[0]) * SLOWDOWN / 1000)
        user = int(path[7:])
        status = 200
        body = json.dumps({"id": user, "name": f"user-{user}", "instance": INSTANCE}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
