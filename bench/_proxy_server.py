"""The public-only ``meshware proxy`` of ``bench/bench_edge.py``, in a process of its own.

``python _proxy_server.py PORT UPSTREAM_URL [LOOP]`` serves :class:`~meshware.edge.proxy.MeshProxy`
(``public_only=True``) under uvicorn, as ``meshware proxy --public-only`` does, over a fixed
:class:`~meshware.RoutingTable` instead of etcd: the service ``users`` at ``UPSTREAM_URL`` with
the one public route ``GET /users/{id:int}`` (:func:`users_table`, which ``bench_edge`` also uses
to render the nginx configuration it compares with).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

from meshware import InstanceRecord, RouteSpec, RoutingTable

USERS_ROUTE = "/users/{id:int}"


def users_table(upstream: str) -> RoutingTable:
    """The service ``users`` at ``upstream``, serving the public route ``GET /users/{id:int}``."""
    routes = (RouteSpec(USERS_ROUTE, ("GET",), public=True),)
    return RoutingTable.from_records([InstanceRecord("users", "u0", upstream, routes)])


def main(argv: list[str]) -> None:
    import uvicorn

    import meshware
    from meshware.edge.proxy import MeshProxy
    from meshware.edge.serve import uvicorn_config

    port, upstream = int(argv[0]), argv[1]
    loop = argv[2] if len(argv) > 2 else "auto"
    table = users_table(upstream)
    # trust_env=False: no proxy from the environment, the traffic stays on loopback
    client = meshware.AsyncClient(table, total_timeout=10, trust_env=False)
    app = MeshProxy(client, SimpleNamespace(table=table), public_only=True)
    config = uvicorn_config(app, "127.0.0.1", port)  # as `meshware proxy` runs it
    if loop != "auto":
        config.loop = loop  # "asyncio" or "uvloop": the event loop under the same protocol
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1:])
