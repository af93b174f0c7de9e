"""Apps whose ``GET /users/<int>`` clashes with ``users``: strict mode must refuse to start them.

Factories (importing this module registers nothing): ``gunicorn 'strict_apps:flask_app()'``,
``flask --app 'strict_apps:flask_app()' run``, ``uvicorn --factory strict_apps:starlette_app``.
The settings (``MESHWARE_STRICT=true``, etcd, prefix) come from the environment.
"""

from __future__ import annotations

from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def flask_app() -> Flask:
    from meshware.integrations.flask import Mesh

    app = Flask("clash")
    app.add_url_rule("/users/<int:uid>", "clash", lambda uid: "clash")
    Mesh(app, service="clash")
    return app


def starlette_app() -> Starlette:
    from meshware.integrations.starlette import Mesh

    async def clash(request: object) -> PlainTextResponse:
        return PlainTextResponse("clash")

    app = Starlette(routes=[Route("/users/{uid:int}", clash)])
    Mesh(app, service="clash")
    return app
