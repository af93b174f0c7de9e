"""Serving ``meshware proxy`` under uvicorn, guarded against hostile clients.

Design notes
------------
uvicorn's HTTP/1.1 protocol (h11) has no request-head timeout, no connection limit and no
answer for HTTP/0.9; past the process's descriptor limit every ``accept`` fails and every good
request waits. :func:`guarded_protocol` is uvicorn's own protocol with the guards nginx has:

* **connection limit** (:attr:`ProxyLimits.max_connections`, kept below the descriptor limit):
  a connection over it is answered ``503`` (``Retry-After: 1``) and closed (after the client,
  1 s at most: a reset could lose the answer), its descriptor back soon; the accept backlog is
  kept in the descriptor reserve (asyncio accepts that many before answering any);
* **request-head timeout**: the request line and headers must arrive within
  :attr:`~ProxyLimits.header_timeout` of the connection (or of the previous answer), else
  ``408`` and close, however slowly the bytes drip in (slowloris);
* **body timeout**: no body byte for :attr:`~ProxyLimits.body_timeout` seconds: ``408`` (if no
  answer has started) and close;
* **head size**: a request head over :attr:`~ProxyLimits.max_header_bytes` gets ``431``
  (a request line alone that long, ``414``);
* **request line**: only ``HTTP/1.x`` is spoken (a higher minor version is taken as 1.1, as
  RFC 9112 says); HTTP/0.9 (no version) and other versions get ``400`` as soon as the line is in, instead of a wait for headers that
  never come.

The body-size limit is the app's (:class:`~meshware.edge.proxy.MeshProxy` ``max_body``: ``413``),
which sees ``Content-Length`` and counts chunked bodies exactly. uvicorn's own ``Server`` and
``Date`` headers are off: a proxied answer carries the upstream's, not two of each.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import resource
from dataclasses import dataclass
from typing import Any

__all__ = ["ProxyLimits", "guarded_protocol", "uvicorn_config"]

log = logging.getLogger("meshware.proxy")

_BACKLOG = 128  # asyncio accepts up to this many at once, before any is answered or closed
_LINGER = 1.0  # seconds a refused connection waits for the client to close first
_RESERVED_FDS = _BACKLOG + 64  # a burst of accepts; listening socket, upstreams, etcd, logs
_REQUEST_LINE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ ]+ HTTP/1\.[0-9]\r?$")


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """What one client may hold of the proxy."""

    max_connections: int = 1024
    header_timeout: float = 10.0  # seconds for the whole request head
    body_timeout: float = 30.0  # seconds without a body byte
    keepalive_timeout: float = 5.0  # idle seconds between requests
    max_header_bytes: int = 16384

    def effective_connections(self) -> int:
        """:attr:`max_connections`, lowered to fit the descriptor limit (raised if allowed)."""
        want = self.max_connections + _RESERVED_FDS
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            target = want if hard == resource.RLIM_INFINITY else min(want, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft == resource.RLIM_INFINITY or soft >= want:
            return self.max_connections
        fitted = max(1, soft - _RESERVED_FDS)
        log.warning(
            "proxy: %d connections do not fit the descriptor limit (%d): at most %d",
            self.max_connections,
            soft,
            fitted,
        )
        return fitted


def _raw_answer(status: int, reason: str, text: str, extra: str = "") -> bytes:
    body = (text + "\n").encode("utf-8")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    ).encode("latin-1") + body


@functools.cache
def _guarded_h11() -> type[Any]:
    """uvicorn's h11 protocol with the guards (defined on first use: uvicorn and h11 are the
    ``proxy`` extra's)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        """uvicorn's h11 protocol with a connection limit, timeouts and request-line checks."""

        limits = ProxyLimits()
        max_connections = 1024

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._timer: asyncio.TimerHandle | None = None
            self._line = b""  # the start of the current request head, until its first line is in
            self._line_checked = False
            self._refused = False
            self._head_size = 0  # bytes of the current request head so far
            self._head_done = False
            self._tail = b""

        # -- connection ---------------------------------------------------------------------------

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > self.max_connections:
                self._refuse(
                    503, "Service Unavailable", "too many connections", "retry-after: 1\r\n"
                )
                return
            self._arm(self.limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _refuse(self, status: int, reason: str, text: str, extra: str = "") -> None:
            """Answer and close. The close waits for the client (at most ``_LINGER`` s, our side
            shut first): closing with its unread bytes in the buffer would send a reset, and the
            client could lose the answer. Over the limit by more than a burst: at once."""
            self._disarm()
            self._refused = True
            if self.transport.is_closing():
                return
            started = self.cycle is not None and self.cycle.response_started
            if not started:
                self.transport.write(_raw_answer(status, reason, text, extra))
            crowded = len(self.connections) > self.max_connections + _BACKLOG // 4
            if crowded or not self.transport.can_write_eof():
                self.transport.close()
                return
            self.transport.write_eof()
            self._timer = self.loop.call_later(_LINGER, self.transport.close)

        # -- timers -------------------------------------------------------------------------------

        def _arm(self, delay: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(delay, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            state = self.conn.their_state
            if state is h11.IDLE:
                self._refuse(408, "Request Timeout", "the request head took too long")
            elif state is h11.SEND_BODY:
                if self.flow.read_paused:  # the app is not reading: not the client's fault
                    self._arm(self.limits.body_timeout)
                    return
                self._refuse(408, "Request Timeout", "the request body stalled")

        # -- data ---------------------------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            if self._refused:  # answered and closing: what still comes is dropped
                return
            if self.conn.their_state is h11.IDLE and not self._check_head(data):
                return
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._arm(self.limits.body_timeout)  # each body chunk restarts the clock
            elif state is not h11.IDLE:
                self._disarm()  # the request is in: the app's own timeouts apply now

        def _check_head(self, data: bytes) -> bool:
            if not self._head_done:  # h11 limits only a head that is still incomplete
                seen = self._tail + data
                end = min(
                    (i for i in (seen.find(b"\n\n"), seen.find(b"\n\r\n")) if i >= 0), default=-1
                )
                size = self._head_size + (len(data) if end < 0 else end - len(self._tail))
                if size > self.limits.max_header_bytes:
                    self._refuse(
                        431, "Request Header Fields Too Large", "the request head is too large"
                    )
                    return False
                self._head_done = end >= 0
                self._head_size += len(data)
                self._tail = seen[-2:]
            if self._line_checked:
                return True
            self._line = (self._line + data).lstrip(b"\r\n")
            end = self._line.find(b"\n")
            if end < 0:
                if len(self._line) > self.limits.max_header_bytes:
                    self._refuse(414, "URI Too Long", "the request line is too long")
                    return False
                return True
            line = self._line[:end]
            self._line = b""
            self._line_checked = True
            if _REQUEST_LINE.match(line):
                return True
            if line.count(b" ") == 1 or not line.rstrip(b"\r").rpartition(b" ")[2].startswith(
                b"HTTP/"
            ):
                self._refuse(400, "Bad Request", "HTTP/0.9 and malformed request lines are refused")
            else:
                self._refuse(400, "Bad Request", "only HTTP/1.x is spoken here")
            return False

        def send_400_response(self, msg: str) -> None:
            if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:
                self._refuse(
                    431, "Request Header Fields Too Large", "the request head is too large"
                )
            else:
                self._refuse(400, "Bad Request", "invalid HTTP request")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._line = b""
            self._line_checked = False
            self._head_size = 0
            self._head_done = False
            self._tail = b""
            if not self.transport.is_closing():
                self._arm(self.limits.header_timeout)
                if self.conn.their_state is not h11.IDLE:  # a pipelined request already came in
                    self._disarm()

    return GuardedH11


def guarded_protocol(limits: ProxyLimits) -> type[Any]:
    """uvicorn's h11 protocol guarded by ``limits`` (uvicorn builds one per connection)."""
    return type(
        "GuardedH11",
        (_guarded_h11(),),
        {"limits": limits, "max_connections": limits.effective_connections()},
    )


def uvicorn_config(app: Any, host: str, port: int, limits: ProxyLimits | None = None) -> Any:
    """The ``uvicorn.Config`` ``meshware proxy`` runs ``app`` with."""
    import uvicorn

    lim = limits or ProxyLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(lim),
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # the caller's own X-Forwarded-For is not trusted
        server_header=False,  # a proxied answer carries its upstream's Server and Date
        date_header=False,
        timeout_keep_alive=int(lim.keepalive_timeout) or 1,
        h11_max_incomplete_event_size=lim.max_header_bytes,
        backlog=_BACKLOG,
    )
