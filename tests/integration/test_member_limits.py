"""Members enforce their routes' limits per calling service, on real servers (uvicorn,
gunicorn) registered in a real etcd: 429 with Retry-After for a caller over its limit, nothing
for another caller of the same route, the rate shared by the live instances."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

import meshware

from .conftest import Servers, free_port, wait_table

NOISY = {"X-Meshware-Caller": "noisy"}
QUIET = {"X-Meshware-Caller": "quiet"}
EXACT = meshware.ClientPolicy(retries=0, throttle_k=0)  # count what the member answers


def hammer(client: meshware.Client, path: str, seconds: float) -> Counter[int]:
    got: Counter[int] = Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = client.get(path, headers=NOISY)
        got[r.status_code] += 1
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    return got


def test_a_caller_over_its_limit_gets_429_and_another_caller_is_unaffected(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    ports = [free_port(), free_port()]
    procs = [servers.uvicorn("limit_apps:starlette_app", p, "--factory") for p in ports]
    procs.append(servers.gunicorn("limit_apps:flask_app()", flask_port := free_port(), "-w", "1"))
    wait_table(
        mesh,
        lambda t: (
            sum(i.serving for i in t.instances("limited")) == 2
            and any(i.serving for i in t.instances("limited-flask"))
        ),
        procs=tuple(procs),
    )
    time.sleep(0.5)  # the servers' own views see both instances (they count N from them)
    with meshware.Client(mesh=mesh, policy=EXACT) as client:
        # 10/s, burst 4, shared by the live instances: the 2 uvicorns admit 5/s and a burst
        # of 2 each (a sequential caller may stick to one of them: between 12 and 25 over
        # 2 s), the one gunicorn worker all of it (about 24 over 2 s); the rest is refused
        for path, low, high in (("/login", 10, 27), ("/flask/login", 20, 26)):
            got = hammer(client, path, 2.0)
            assert got[429] > 0, (path, got)
            assert low <= got[200] <= high, (path, got)
            quiet = [client.get(path, headers=QUIET).status_code for _ in range(3)]
            assert quiet == [200] * 3, path  # its own bucket (3 fit the burst on one instance)
            assert client.get("/free", headers=NOISY).status_code == 200
    assert flask_port


def test_a_concurrency_limit_refuses_what_is_beyond_it(
    servers: Servers, mesh: meshware.MeshView
) -> None:
    port = free_port()
    proc = servers.uvicorn("limit_apps:starlette_app", port, "--factory")
    wait_table(mesh, lambda t: any(i.serving for i in t.instances("limited")), procs=(proc,))
    statuses: list[int] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as direct:

        def one() -> None:
            statuses.append(direct.get("/report").status_code)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [200, 429, 429]
