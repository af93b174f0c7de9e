"""Testing meshware services: fake meshes, fault injection, a real-etcd fixture, conformance.

* :class:`FakeMesh` — apps in process, an in-memory registry, faults, a fake clock
  (the ``fake_mesh`` pytest fixture);
* :class:`MeshClock` — the fake clock (``mesh_clock``);
* :class:`~meshware.testing.etcd.EtcdServer` — a real etcd for a test session (``etcd_server``);
* :func:`check_registry` — the conformance suite a registry backend passes.

The pytest plugin (the top-level ``pytest_meshware`` module) is registered when meshware is
installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .conformance import check_registry
    from .etcd import EtcdServer
    from .fake import FakeMesh, Fault, MeshCall, MeshClock, ServiceStub

__all__ = [
    "EtcdServer",
    "FakeMesh",
    "Fault",
    "MeshCall",
    "MeshClock",
    "ServiceStub",
    "check_registry",
]

_WHERE = {
    "check_registry": ".conformance",
    "EtcdServer": ".etcd",
    "FakeMesh": ".fake",
    "Fault": ".fake",
    "MeshCall": ".fake",
    "MeshClock": ".fake",
    "ServiceStub": ".fake",
}


def __getattr__(name: str) -> Any:  # lazy: importing meshware.testing costs nothing
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'meshware.testing' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
