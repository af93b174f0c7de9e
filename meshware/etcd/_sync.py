"""The blocking etcd client: the I/O shell around :mod:`._protocol` (twin of :mod:`._async`)."""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any, Self, TypeVar

import httpx

from meshware._errors import EtcdError, LeaseLost, RegistryUnavailable

from . import _protocol as p
from ._config import (
    DEFAULT_WATCH_READ_TIMEOUT,
    ClientSettings,
    StreamEnded,
    TLSConfig,
    describe_failure,
    shutdown_socket,
)

__all__ = ["EtcdClient", "Watch"]

T = TypeVar("T")


class EtcdClient:
    """A blocking client for etcd's v3 API, over HTTP/JSON with httpx; safe to share
    between threads.

    ``endpoints``: one ``http(s)://host:port`` URL, several (a sequence or a comma-separated
    string) for failover. ``timeout``: seconds for each attempt (connect, read, write).
    ``tls``: CA and client certificate for ``https`` endpoints. ``username`` / ``password``:
    log in, and again whenever the token expires.

    Calls raise :class:`~meshware.RegistryUnavailable` when no endpoint answers, and
    :class:`~meshware.EtcdError` (or a subclass) when etcd answers with an error.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 5.0,
        tls: TLSConfig | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._settings = ClientSettings(
            endpoints, timeout=timeout, tls=tls, username=username, password=password
        )
        self._http = self._new_http()
        self._keepalive_http: httpx.Client | None = None
        self._lock = threading.Lock()

    def _new_http(self, *, stream: bool = False, read_timeout: float | None = None) -> httpx.Client:
        s = self._settings
        transport = httpx.HTTPTransport(**s.transport_options(stream=stream))
        options = s.client_options(read_timeout=read_timeout if stream else s.timeout)
        return httpx.Client(transport=transport, **options)

    def avoid(self, endpoint: str) -> None:
        """``endpoint`` stopped answering (a hung member): try the next one first from now on."""
        self._settings.failover.failed(endpoint)

    def probe(self, endpoint: str, timeout: float) -> bool:
        """Whether the etcd process at ``endpoint`` answers anything within ``timeout``."""
        with self._new_http() as http:
            try:
                http.post(f"{endpoint}/v3/maintenance/status", json={}, timeout=timeout)
            except httpx.HTTPError:
                return False
        return True

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The configured endpoints."""
        return self._settings.failover.urls

    @property
    def current_endpoint(self) -> str:
        """The endpoint calls go to first (the one that last answered)."""
        return self._settings.failover.current

    # -- I/O -------------------------------------------------------------------------------

    def _send(
        self, http: httpx.Client, request: p.Request[Any], *, stream: bool = False
    ) -> httpx.Response:
        """POST ``request`` to the first endpoint that answers (other than with a 503)."""
        failover = self._settings.failover
        failures: list[tuple[str, str]] = []
        for url in failover.order():
            headers = self._settings.auth_headers()
            try:
                r = http.build_request(
                    "POST", url + request.path, json=request.body, headers=headers
                )
                response = http.send(r, stream=stream)
            except httpx.TransportError as exc:
                failures.append((url, describe_failure(exc)))
                continue
            if response.status_code == 503:
                response.read()
                response.close()
                failures.append((url, describe_failure(response)))
                continue
            failover.succeeded(url)
            return response
        raise failover.unavailable(failures)

    def _login(self) -> None:
        response = self._send(self._http, self._settings.login_request())
        self._settings.logged_in(response.status_code, response.content)

    def _call(self, request: p.Request[T], http: httpx.Client | None = None) -> T:
        http = http or self._http
        for attempt in (1, 2):
            if self._settings.login_needed:
                self._login()
            response = self._send(http, request)
            try:
                return p.parse_answer(request, response.status_code, response.content)
            except EtcdError as exc:
                if attempt == 2 or not self._settings.retry_after_login(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- keys ------------------------------------------------------------------------------

    def get(self, key: str) -> p.KeyValue | None:
        """The key's value and metadata, or ``None`` when it does not exist."""
        kvs = self._call(p.range_request(key)).kvs
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str, *, keys_only: bool = False) -> p.RangeResult:
        """Every key starting with ``prefix`` (sorted), and the revision they were read at.

        ``keys_only`` leaves the values out (``value`` is then ``b""``).
        """
        return self._call(p.range_request(prefix, prefix=True, keys_only=keys_only))

    def put(self, key: str, value: bytes | str, *, lease: int = 0) -> p.PutResult:
        """Write ``value`` (``str`` is UTF-8 encoded) at ``key``, under ``lease`` if not 0.

        Raises :class:`~meshware.LeaseLost` when the lease does not exist (any more).
        """
        return self._call(p.put_request(key, value, lease=lease))

    def create(self, key: str, value: bytes | str, *, lease: int = 0) -> p.CreateResult:
        """Write ``value`` at ``key`` only if the key does not exist yet (a transaction).

        ``created`` tells whether it did; if not, ``existing`` is the key as it is.
        """
        return self._call(p.create_request(key, value, lease=lease))

    def delete(self, key: str) -> p.DeleteResult:
        """Delete ``key`` (a missing key is fine: ``deleted`` is then 0)."""
        return self._call(p.delete_request(key))

    def delete_prefix(self, prefix: str) -> p.DeleteResult:
        """Delete every key starting with ``prefix``."""
        return self._call(p.delete_request(prefix, prefix=True))

    # -- leases ----------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> p.LeaseGrant:
        """A new lease of ``ttl`` seconds."""
        return self._call(p.lease_grant_request(ttl))

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease; its TTL in seconds. Raises :class:`~meshware.LeaseLost` when the
        lease expired or was revoked.

        Keep-alives use a connection of their own, so slow calls never delay them.
        """
        if self._keepalive_http is None:
            with self._lock:
                if self._keepalive_http is None:
                    self._keepalive_http = self._new_http()
        return self._call(p.lease_keepalive_request(lease_id), self._keepalive_http)

    def lease_revoke(self, lease_id: int) -> None:
        """End the lease now, deleting its keys; a lease already gone is fine."""
        with contextlib.suppress(LeaseLost):
            self._call(p.lease_revoke_request(lease_id))

    def lease_time_to_live(self, lease_id: int) -> p.LeaseInfo:
        """The lease's remaining TTL and its keys; :class:`~meshware.LeaseLost` if gone."""
        return self._call(p.lease_time_to_live_request(lease_id))

    # -- cluster ---------------------------------------------------------------------------

    def status(self) -> p.Status:
        """The status of the member that answers (version, leader, revision, ...)."""
        return self._call(p.status_request())

    # -- watch -----------------------------------------------------------------------------

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int | None = None,
        prev_kv: bool = False,
        read_timeout: float | None = DEFAULT_WATCH_READ_TIMEOUT,
    ) -> Watch:
        """Watch every key starting with ``prefix``, from ``start_revision`` (default: now).

        Returns a :class:`Watch`: iterate it for :class:`WatchResponse` objects (the first is
        etcd's ``created`` confirmation, then events, and progress notifications without
        events); ``close()`` it, from any thread, to stop. ``prev_kv`` adds each key's
        previous value to the events.

        ``read_timeout``: seconds without any data from etcd after which the watch raises
        :class:`~meshware.RegistryUnavailable`. etcd notifies an idle watch of its progress
        every ``--experimental-watch-progress-notify-interval`` (10 minutes by default) and
        may stay silent for up to two intervals, so the default (25 minutes) suits a default
        server; lower both to notice a hung etcd sooner (``None``: wait forever). A dead or
        unreachable server is noticed without it: at once when its connection closes, within
        about 30 s through TCP keep-alive otherwise.
        """
        return Watch(
            self, prefix, start_revision=start_revision, prev_kv=prev_kv, read_timeout=read_timeout
        )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (watches have their own: close them too)."""
        self._http.close()
        if self._keepalive_http is not None:
            self._keepalive_http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EtcdClient {', '.join(self.endpoints)}>"


class Watch:
    """A running watch: an iterator of :class:`WatchResponse` over one streaming connection.

    The stream is opened by the first ``next()``. It raises
    :class:`~meshware.EtcdCompacted` when the start revision was compacted (re-list, then
    watch from the listing's revision + 1) and :class:`~meshware.RegistryUnavailable` when
    the connection is lost (watch again from :attr:`next_revision`). :meth:`close` may be
    called from any thread; a thread iterating the watch then stops at once.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        *,
        start_revision: int | None,
        prev_kv: bool,
        read_timeout: float | None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._prev_kv = prev_kv
        self._read_timeout = read_timeout
        self.next_revision: int = start_revision or 0
        """The revision to watch from to miss nothing seen so far (0: from now)."""
        self._lock = threading.Lock()
        self._closed = False  # close() was called
        self._over = False  # the stream ended; iteration stops
        self._busy = False  # a thread is inside __next__
        self._http: httpx.Client | None = None
        self._response: httpx.Response | None = None
        self._lines: Iterator[str] | None = None
        self._socket: Any = None
        self._relogged = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> p.WatchResponse:
        with self._lock:
            if self._closed or self._over:
                raise StopIteration
            self._busy = True
        try:
            return self._next()
        except BaseException:
            self._over = True
            raise
        finally:
            with self._lock:
                self._busy = False
                done = self._closed or self._over
            if done:
                self._release()

    def _next(self) -> p.WatchResponse:
        while True:
            try:
                if self._lines is None:
                    self._open()
                line = self._read_line()
            except (httpx.TransportError, StreamEnded) as exc:
                if self._closed:
                    raise StopIteration from None
                raise RegistryUnavailable(
                    f"the watch on {self._prefix!r} lost etcd: {describe_failure(exc)}; "
                    f"watch again from revision {self.next_revision}"
                ) from exc
            try:
                response = p.parse_watch_line(line)
            except EtcdError as exc:
                if self._relogged or not self._client._settings.retry_after_login(exc, watch=True):
                    raise
                self._relogged = True  # the token may have expired: log in, watch again
                self._release()
                continue
            self.next_revision = p.next_watch_revision(self.next_revision, response)
            return response

    def _open(self) -> None:
        client = self._client
        if client._settings.login_needed:
            client._login()
        request = p.watch_request(
            self._prefix, start_revision=self.next_revision or None, prev_kv=self._prev_kv
        )
        self._http = http = client._new_http(stream=True, read_timeout=self._read_timeout)
        response = client._send(http, request, stream=True)
        self._response = response
        if response.status_code != 200:
            response.read()
            p.parse_answer(request, response.status_code, response.content)  # raises
            raise EtcdError(f"etcd answered the watch with HTTP {response.status_code}")
        stream = response.extensions.get("network_stream")
        with self._lock:
            self._socket = stream.get_extra_info("socket") if stream is not None else None
            closed = self._closed
        if closed:  # close() came while we connected
            raise StreamEnded("closed")
        self._lines = response.iter_lines()

    def _read_line(self) -> str:
        assert self._lines is not None
        for line in self._lines:
            if line.strip():
                return line
        raise StreamEnded("etcd closed the stream")

    def _release(self) -> None:
        with self._lock:  # whichever thread gets here first closes the connection
            response, http = self._response, self._http
            self._response = self._http = self._lines = self._socket = None
        if response is not None:
            response.close()
        if http is not None:
            http.close()

    def close(self) -> None:
        """Stop the watch and close its connection; safe from any thread, idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            busy, sock = self._busy, self._socket
        if busy:
            if sock is not None:
                shutdown_socket(sock)  # the iterating thread wakes up and releases
        else:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()
