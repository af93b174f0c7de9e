"""The upstream behind the edge in the edge tests: public and private routes that say which they are."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import meshware


async def echo(request: Request, route: str) -> dict[str, object]:
    body = await request.body()
    return {
        "route": route,
        "path": request.url.path,
        "method": request.method,
        "xff": request.headers.get("x-forwarded-for"),
        "proto": request.headers.get("x-forwarded-proto"),
        "deadline": request.headers.get("x-meshware-timeout-ms"),
        "upgrade": request.headers.get("upgrade"),
        "body": len(body),
    }


@meshware.public
async def get_user(request: Request) -> Response:
    return JSONResponse(await echo(request, "get_user"))


@meshware.public
async def create_user(request: Request) -> Response:
    return JSONResponse(await echo(request, "create_user"), status_code=201)


@meshware.public
async def get_file(request: Request) -> Response:
    return JSONResponse(await echo(request, "get_file"))


async def private(request: Request) -> Response:
    return PlainTextResponse("PRIVATE " + request.url.path)


app = Starlette(
    routes=[
        Route("/users/{id:int}", get_user, methods=["GET"]),
        Route("/users", create_user, methods=["POST"]),
        Route("/files/{name}", get_file, methods=["GET"]),
        Route("/users/{id:int}/secret", private, methods=["GET", "POST"]),
        Route("/admin", private, methods=["GET", "POST", "DELETE"]),
        Route("/internal/{rest:path}", private),
        Route("/user-service/users/{id:int}", get_user, methods=["GET"]),
    ]
)
