"""On SIGTERM an instance leaves the table first, and the requests it is serving still complete."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

import meshware

from .conftest import Servers, free_port, wait_table


@pytest.mark.parametrize(
    ("server", "app", "service"),
    [
        ("gunicorn", "slow_apps:flask_app", "slow-flask"),
        ("uvicorn", "slow_apps:starlette_app", "slow-starlette"),
    ],
)
def test_sigterm_withdraws_first_and_in_flight_requests_complete(
    servers: Servers, mesh: meshware.MeshView, server: str, app: str, service: str
) -> None:
    port = free_port()
    if server == "gunicorn":
        proc = servers.gunicorn(app, port, "-w", "1", "--graceful-timeout", "10")
    else:
        proc = servers.uvicorn(app, port, "--timeout-graceful-shutdown", "10")
    wait_table(mesh, lambda t: bool(t.instances(service)), procs=(proc,))

    result: dict[str, object] = {}
    started = threading.Event()

    def call() -> None:
        with (
            httpx.Client(timeout=10) as http,
            http.stream("GET", f"http://127.0.0.1:{port}/slow/1.5") as response,
        ):
            started.set()  # the headers came: the server is working on the request
            result["text"] = response.read().decode()
            result["status"] = response.status_code
            result["finished"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    assert started.wait(10)
    proc.send_signal(signal.SIGTERM)
    mesh.wait_for(lambda t: not t.instances(service), timeout=5)
    withdrawn = time.monotonic()
    caller.join(10)
    assert (result["status"], result["text"]) == (200, "started\ndone")
    finished = result["finished"]
    assert isinstance(finished, float)
    assert withdrawn < finished  # out of the table while it was still serving the request
    # gunicorn exits 0; uvicorn re-raises the SIGTERM it handled, as it does without meshware
    assert proc.wait(15) == (0 if server == "gunicorn" else -signal.SIGTERM)
