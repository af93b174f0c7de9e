"""meshware's errors travel between processes (multiprocessing, task queues) and read well."""

from __future__ import annotations

import multiprocessing
import pickle

import httpx
import pytest

import meshware
from meshware._core.retry import Attempt
from meshware._errors import (
    BadRecord,
    ConfigError,
    DeadlineExceeded,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    NoEndpointAvailable,
    NoRouteError,
    RetriesExhausted,
    TableNotLoaded,
    Throttled,
)

ATTEMPT = Attempt("http://10.0.0.5:8001", "failed", None, "ReadError: reset", 12.0, 0.01)

ERRORS = [
    ConfigError("bad", setting="MESHWARE_LEASE_TTL"),
    NoRouteError("GET", "/nope", allowed=["POST"]),
    NoEndpointAvailable("users", "/users/{id:int}", reason="all instances are draining"),
    RetriesExhausted("gave up", attempts=[ATTEMPT], reason="attempts used up"),
    RetriesExhausted.like(httpx.ReadError("reset"))("gave up", attempts=[ATTEMPT], reason="r"),
    RetriesExhausted.like(httpx.ConnectError("refused"))("gave up"),
    DeadlineExceeded("too late", attempts=[ATTEMPT]),
    BadRecord("/meshware/v1/instances/a/b", "not JSON"),
    EtcdError("no", code=9, status=400),
    EtcdAuthError("denied", code=7),
    EtcdCompacted("compacted", compact_revision=42),
    TableNotLoaded("GET", "/users/1", since=1_800_000_000.0, cause="connection refused"),
    Throttled("GET /users/1: not sent", service="users", probability=0.9),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_survives_a_pickle_round_trip(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_retries_exhausted_keeps_the_httpx_class_of_its_last_error_across_pickle() -> None:
    error = RetriesExhausted.like(httpx.ReadError("reset"))("gave up", reason="budget spent")
    error.request = httpx.Request("POST", "mesh:///orders", json={"item": 1})
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, httpx.ReadError)
    assert isinstance(copy, meshware.RetriesExhausted)
    assert copy.reason == "budget spent"
    assert copy.request.url == "mesh:///orders"


def _raise_in_worker(n: int) -> None:
    cause = httpx.ConnectError("refused")
    raise RetriesExhausted.like(cause)(f"call {n} gave up", attempts=[ATTEMPT], reason="r")


def test_a_worker_process_raises_it_to_its_parent() -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply_async(_raise_in_worker, (7,))
        with pytest.raises(RetriesExhausted) as info:
            result.get(timeout=60)
    assert isinstance(info.value, httpx.ConnectError)
    assert str(info.value) == "call 7 gave up"
    assert info.value.attempts == (ATTEMPT,)


def test_no_endpoint_message_has_no_nested_parentheses() -> None:
    error = NoEndpointAvailable(
        "users",
        "/users",
        reason="no instance of this service is in the mesh (see `meshware instances`)",
    )
    assert str(error) == (
        "route /users of service 'users' has no serving instance: no instance of this service "
        "is in the mesh (see `meshware instances`)"
    )
