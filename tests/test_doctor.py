"""`meshware doctor` against a real etcd and real apps imported from a project directory."""

from __future__ import annotations

import json
import socket
import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshware import InstanceRecord, RouteSpec
from meshware._core.records import instance_key
from meshware.cli import main
from meshware.etcd import EtcdClient
from meshware.testing.etcd import EtcdServer

FLASK_APP = """
from flask import Flask
import meshware
from meshware.integrations.flask import Mesh

app = Flask(__name__)

@app.get("/items/<int:item_id>")
@meshware.public
def item(item_id): ...

@app.get("/users/<int:user_id>")
def clash(user_id): ...

@app.get("/internal/debug")
@meshware.exclude
def debug(): ...

@app.get("/admin/stats")
def stats(): ...

Mesh(app, service="catalog", exclude=["/admin/*"])
"""

FASTAPI_APP = """
from fastapi import FastAPI
from meshware.integrations.starlette import Mesh

app = FastAPI()

@app.get("/carts/{cart_id}")
async def cart(cart_id: int): ...

Mesh(app, service="carts")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path


def module(project: Path, source: str) -> str:
    name = f"app_{uuid.uuid4().hex[:8]}"  # a fresh module each time (sys.modules caches)
    (project / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def mesh(etcd_server: EtcdServer, mesh_prefix: str) -> list[str]:
    users = InstanceRecord(
        "users", "u1", "http://127.0.0.1:8001", (RouteSpec("/users/{id:int}", ("GET", "HEAD")),)
    )
    with EtcdClient(etcd_server.endpoint) as client:
        client.put(instance_key(mesh_prefix, "users", "u1"), users.encode())
    return ["--etcd", etcd_server.endpoint, "--prefix", mesh_prefix]


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", *args])
    return result.exit_code, result.output


def test_a_flask_app_routes_left_out_with_reasons_and_conflicts(
    project: Path, mesh: list[str], etcd_server: EtcdServer, mesh_prefix: str
) -> None:
    name = module(project, FLASK_APP)
    code, out = doctor(f"{name}:app", "--app-dir", str(project), *mesh)
    assert code == 1, out
    assert "etcd 3.5" in out  # the version etcd reports
    assert "1 service(s) (users)" in out
    assert f"{name}:app: a Flask app, service 'catalog'" in out
    assert "GET,HEAD,OPTIONS /items/{item_id:int}  (public)" in out
    assert "/internal/debug: marked @meshware.exclude" in out
    assert "/admin/stats: left out by the Mesh's include/exclude patterns" in out
    assert "/static/<path:filename>: static files (Mesh(include_static=True)" in out
    assert "FIX  conflicts  1 to fix, below" in out
    assert "GET, HEAD /users/{user_id:int} is already served by 'users', which keeps it" in out
    assert "To fix:" in out
    with EtcdClient(etcd_server.endpoint) as client:  # imported, never registered
        assert not client.get_prefix(f"{mesh_prefix}/v1/instances/catalog/").kvs


def test_a_fastapi_app_without_problems_exits_0(project: Path, mesh: list[str]) -> None:
    name = module(project, FASTAPI_APP)
    code, out = doctor(f"{name}:app", "--app-dir", str(project), *mesh)
    assert code == 0, out
    assert "a FastAPI app, service 'carts'" in out
    assert "GET /carts/{cart_id}" in out
    assert "/docs: API docs (Mesh(include_docs=True) publishes them)" in out
    assert "none with the live mesh" in out
    assert "Nothing to fix." in out


def test_an_application_factory_is_called_as_gunicorn_does(project: Path, mesh: list[str]) -> None:
    name = module(
        project,
        "from flask import Flask\nfrom meshware.integrations.flask import Mesh\n"
        "def create_app():\n    app = Flask(__name__)\n    app.add_url_rule('/ping', 'ping', lambda: 'ok')\n"
        "    Mesh(app, service='pinger')\n    return app\n",
    )
    code, out = doctor(f"{name}:create_app()", "--app-dir", str(project), *mesh)
    assert code == 0, out
    assert "a Flask app, service 'pinger'" in out
    assert "GET,HEAD,OPTIONS /ping" in out


def test_json_for_scripts(project: Path, mesh: list[str]) -> None:
    name = module(project, FASTAPI_APP)
    code, out = doctor(f"{name}:app", "--app-dir", str(project), "--json", *mesh)
    report = json.loads(out)
    assert code == 0
    assert report["ok"] is True
    assert [c["check"] for c in report["checks"]] == [
        "etcd",
        "app",
        "routes",
        "left out",
        "conflicts",
        "advertise",
    ]


def test_an_app_without_a_mesh_is_told_how_to_join(project: Path, mesh: list[str]) -> None:
    name = module(
        project, "from flask import Flask\napp = Flask(__name__)\n@app.get('/a')\ndef a(): ...\n"
    )
    code, out = doctor(f"{name}:app", "--app-dir", str(project), *mesh)
    assert code == 1
    assert 'has no meshware Mesh: add `Mesh(app, service="NAME")`' in out
    assert "GET,HEAD,OPTIONS /a" in out  # what it would publish


def test_a_module_that_is_not_there_says_where_it_looked(project: Path, mesh: list[str]) -> None:
    code, out = doctor("nowhere_service:app", "--app-dir", str(project), *mesh)
    assert code == 1
    assert f"no module 'nowhere_service' in {project}" in out
    assert "--app-dir" in out


def test_a_missing_setting_is_named(project: Path, mesh: list[str]) -> None:
    name = module(
        project,
        "from flask import Flask\nfrom meshware.integrations.flask import Mesh\n"
        "app = Flask(__name__)\nMesh(app)\n",
    )
    code, out = doctor(f"{name}:app", "--app-dir", str(project), *mesh)
    assert code == 1
    assert "MESHWARE_SERVICE" in out


def test_etcd_down_is_the_first_thing_to_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, out = doctor("--etcd", dead)
    assert code == 1
    assert f"FIX  etcd       {dead} does not answer" in out
    assert "1. start etcd (`meshware dev`" in out


def test_importing_for_the_doctor_never_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    import pytest_meshware
    from meshware._member import registration_suppressed
    from meshware.integrations.flask import Mesh

    monkeypatch.setattr(pytest_meshware, "SUPPRESS_AUTOMATIC_REGISTRATION", False)
    with registration_suppressed("meshware doctor"):
        mesh = Mesh(Flask("quiet"), service="quiet", advertise_url="http://127.0.0.1:1")
    assert mesh.member is not None
    assert mesh.member._starter is None  # no registration thread
    assert mesh.member.registrar is None
