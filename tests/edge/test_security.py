"""Hostile requests against a real nginx (rendered config) and the public-only proxy.

Whatever is sent, a non-public route is never reached (the upstream's private views answer
"PRIVATE ...") and the edge never answers 5xx.
"""

from __future__ import annotations

import json

import pytest

from .conftest import raw

H = b"Host: edge.test\r\n"

CORPUS: list[tuple[str, bytes]] = [
    ("private route", b"GET /admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("private sub-route", b"GET /users/1/secret HTTP/1.1\r\n" + H + b"\r\n"),
    ("private path route", b"GET /internal/x/y HTTP/1.1\r\n" + H + b"\r\n"),
    ("case game", b"GET /ADMIN HTTP/1.1\r\n" + H + b"\r\n"),
    ("case game on a public prefix", b"GET /Users/1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("dot-dot", b"GET /users/1/../../admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("dot-dot into a public route", b"GET /admin/../users/1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded dots", b"GET /users/%2e%2e/admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded dots upper", b"GET /%2E%2E/admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded slash", b"GET /users/1%2fsecret HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded slash traversal", b"GET /files/..%2f..%2fadmin HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded backslash", b"GET /files/..%5cadmin HTTP/1.1\r\n" + H + b"\r\n"),
    ("raw backslash", b"GET /files/..\\admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("doubled slash", b"GET //admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("doubled slash inside", b"GET /users//1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("dot segment", b"GET /./admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("dot segment inside", b"GET /users/1/./secret HTTP/1.1\r\n" + H + b"\r\n"),
    ("semicolon parameter", b"GET /admin;x=1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("semicolon on public", b"GET /users/1;/secret HTTP/1.1\r\n" + H + b"\r\n"),
    ("null byte", b"GET /users/1%00/secret HTTP/1.1\r\n" + H + b"\r\n"),
    ("raw null byte", b"GET /admin\x00 HTTP/1.1\r\n" + H + b"\r\n"),
    ("very long path", b"GET /users/" + b"1" * 20000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    (
        "very long header",
        b"GET /users/1 HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n",
    ),
    (
        "many headers",
        b"GET /users/1 HTTP/1.1\r\n"
        + H
        + b"".join(b"X-%d: y\r\n" % i for i in range(500))
        + b"\r\n",
    ),
    ("absolute-form private", b"GET http://edge.test/admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form other host", b"GET http://127.0.0.1:1/admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("asterisk form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    ("host header with a path", b"GET /users/1 HTTP/1.1\r\nHost: edge.test/admin\r\n\r\n"),
    ("two host headers", b"GET /admin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("no host header", b"GET /admin HTTP/1.1\r\n\r\n"),
    ("method not published", b"DELETE /users/1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("method not published on private", b"DELETE /admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("TRACE", b"TRACE /users/1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("CONNECT", b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("garbage method", b"G\x01T /users/1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("HTTP/0.9", b"GET /admin\r\n"),
    ("unknown HTTP version", b"GET /admin HTTP/9.9\r\n" + H + b"\r\n"),
    ("HTTP/2 request line", b"GET /users/1 HTTP/2.0\r\n" + H + b"\r\n"),
    ("version without a number", b"GET /users/1 HTTP/\r\n" + H + b"\r\n"),
    ("lowercase version", b"GET /users/1 http/1.1\r\n" + H + b"\r\n"),
    (
        "chunked body too large",
        b"POST /users HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + (b"8000\r\n" + b"x" * 0x8000 + b"\r\n") * 3,
    ),
    ("bare LF lines", b"GET /admin HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n"),
    (
        "CL.TE smuggling",
        b"POST /users HTTP/1.1\r\n"
        + H
        + b"Content-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nX: y\r\n\r\n",
    ),
    (
        "two content lengths",
        b"POST /users HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}"
        b"GET /admin HTTP/1.1\r\n\r\n",
    ),
    (
        "TE obfuscated",
        b"POST /users HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n",
    ),
    (
        "pipelined private",
        b"GET /users/1 HTTP/1.1\r\n" + H + b"\r\nGET /admin HTTP/1.1\r\n" + H + b"\r\n",
    ),
    (
        "body too large",
        b"POST /users HTTP/1.1\r\n" + H + b"Content-Length: 10000000\r\n\r\n" + b"x" * 1000,
    ),
    ("query traversal", b"GET /users/1?next=/../admin HTTP/1.1\r\n" + H + b"\r\n"),
    (
        "rewrite internal prefix",
        b"GET /user-service/users/1/../../../admin HTTP/1.1\r\n" + H + b"\r\n",
    ),
    ("rewrite traversal", b"GET /u/1/../../admin HTTP/1.1\r\n" + H + b"\r\n"),
    (
        "upgrade to websocket",
        b"GET /admin HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ),
]


@pytest.fixture(params=["nginx", "proxy"])
def edge(request: pytest.FixtureRequest) -> int:
    return int(request.getfixturevalue(f"{request.param}_port"))


@pytest.mark.parametrize(("name", "request_bytes"), CORPUS, ids=[n for n, _ in CORPUS])
def test_hostile_requests_never_reach_private_routes_nor_get_5xx(
    edge: int, name: str, request_bytes: bytes
) -> None:
    status, data = raw(edge, request_bytes)
    assert b"PRIVATE" not in data, data[:300]
    assert not 500 <= status < 600, data[:300]
    # every request gets an answer (nginx answers HTTP/0.9 in HTTP/0.9: a body, no status line)
    assert status or b"400 Bad Request" in data, data[:300]
    for line in data.split(b"\r\n"):  # pipelined/smuggled second answers too
        if line.startswith(b"HTTP/1."):
            assert not line.split(b" ")[1].startswith(b"5"), data[:300]


def body(data: bytes) -> dict[str, object]:
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = rest.partition(b"\r\n")
        rest = rest[: int(size, 16)]
    return dict(json.loads(rest))


def test_public_routes_are_served(edge: int) -> None:
    status, data = raw(edge, b"GET /users/42 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert status == 200
    assert body(data)["route"] == "get_user"
    status, data = raw(
        edge,
        b"POST /users HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    assert status == 201
    assert body(data)["body"] == 2


def test_a_rewritten_prefix_reaches_the_services_own_route(edge: int) -> None:
    status, data = raw(edge, b"GET /u/7 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert status == 200
    assert body(data)["path"] == "/user-service/users/7"


def test_unpublished_methods_get_405_and_unknown_paths_404(edge: int) -> None:
    assert raw(edge, b"DELETE /users/1 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")[0] == 405
    assert raw(edge, b"GET /nowhere HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")[0] == 404


def test_forwarding_headers_are_set_not_trusted_and_internal_ones_dropped(edge: int) -> None:
    status, data = raw(
        edge,
        b"GET /users/1 HTTP/1.1\r\n"
        + H
        + b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
        b"X-Meshware-Timeout-Ms: 1\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    seen = body(data)
    assert seen["xff"] == "127.0.0.1"
    assert seen["proto"] == "http"
    assert seen["deadline"] != "1"  # the caller's budget is not trusted (the proxy sends its own)
