"""The `users` service: a Flask app that joins the mesh in one line.

Run it under any WSGI server, e.g. ``gunicorn -w 2 -b 127.0.0.1:8001 users_service:app``.
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, jsonify
from flask.typing import ResponseReturnValue

import meshware
from meshware.integrations.flask import Mesh

USERS = {1: {"id": 1, "name": "Ada"}, 2: {"id": 2, "name": "Grace"}}

app = Flask(__name__)
admin = Blueprint("admin", __name__, url_prefix="/users/admin")


@app.get("/users")
def list_users() -> ResponseReturnValue:
    return jsonify(list(USERS.values()))


@app.get("/users/<int:user_id>")
@meshware.public
@meshware.policy(timeout=2.0)
def get_user(user_id: int) -> ResponseReturnValue:
    if user_id not in USERS:
        abort(404)
    return jsonify(USERS[user_id])


@admin.post("/reindex")
def reindex() -> ResponseReturnValue:
    return jsonify({"reindexed": len(USERS)})


app.register_blueprint(admin)

Mesh(app, service="users")  # the one line
