"""What the sync and async clients share: settings, endpoint failover, login state.

Pure decisions, no I/O (except :func:`shutdown_socket`, the one socket call both watches need).

Design notes
------------
* **Failover** (:class:`Failover`): calls go to the endpoint that last worked; on a connection
  error, a timeout or an HTTP 503 the next one is tried, in the configured order, until each
  has been tried once in this call; then :class:`~meshware.RegistryUnavailable` names every
  endpoint and what went wrong there. Nothing is locked out: the next call tries again from
  the endpoint that last worked, so a recovered etcd is used at once.
* **Login** (:class:`ClientSettings`): with a user name and password, the first call logs in
  (``/v3/auth/authenticate``) and every call sends the token as ``Authorization``. When etcd
  says the token is invalid (simple tokens expire after ``--auth-token-ttl`` idle seconds,
  or are gone after a restart), the client logs in again and retries that call once. A server
  without auth enabled answers the login with "authentication is not enabled"; the client then
  simply sends no token, as etcd's Go client does.
* **TLS** (:class:`TLSConfig`): a CA bundle for the server certificate and optionally a client
  certificate, turned into one :class:`ssl.SSLContext` shared by every connection.
* Connections ignore proxy settings from the environment (``trust_env=False``): etcd clients do
  not go through HTTP proxies, and a stray ``HTTP_PROXY`` must not break service discovery.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from meshware._errors import ConfigError, EtcdAuthError, RegistryUnavailable

from ._protocol import Request, authenticate_request, needs_reauth, parse_answer

__all__ = [
    "ClientSettings",
    "Failover",
    "StreamEnded",
    "TLSConfig",
    "describe_failure",
    "shutdown_socket",
]

#: Seconds a watch waits for data by default; see ``watch_prefix``.
DEFAULT_WATCH_READ_TIMEOUT = 1500.0


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS settings for ``https://`` endpoints.

    ``ca_file``: the CA bundle that signed etcd's certificate (default: the system's).
    ``cert_file`` and ``key_file``: a client certificate, for etcd's ``--client-cert-auth``
    (``key_file`` may be omitted when the key is inside ``cert_file``).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context verifying etcd's certificate and presenting the client certificate.

        Raises :class:`~meshware.ConfigError` when a file is missing or does not parse.
        """
        if self.key_file and not self.cert_file:
            raise ConfigError("TLSConfig: key_file given without cert_file", setting="cert_file")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLSConfig: cannot load {self}: {exc}", setting="tls") from exc
        return context


def describe_failure(error: BaseException | httpx.Response) -> str:
    """A short account of why an endpoint failed, for :class:`~meshware.RegistryUnavailable`."""
    if isinstance(error, httpx.Response):
        return f"HTTP {error.status_code}: {error.text[:200].strip()}"
    text = str(error) or "no details"
    return f"{type(error).__name__}: {text}"


class Failover:
    """The etcd endpoints and which one to try first (the one that last worked)."""

    def __init__(self, endpoints: Sequence[str] | str) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        urls = [self._check(e.strip()) for e in endpoints if e.strip()]
        if not urls:
            raise ConfigError("no etcd endpoint given", setting="endpoints")
        self.urls: tuple[str, ...] = tuple(dict.fromkeys(urls))
        self._current = 0

    @staticmethod
    def _check(endpoint: str) -> str:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"etcd endpoint {endpoint!r} is not an http(s)://host:port URL "
                "(for example http://127.0.0.1:2379)",
                setting="endpoints",
            )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ConfigError(
                f"etcd endpoint {endpoint!r} has a path; give only scheme, host and port",
                setting="endpoints",
            )
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ConfigError(
                f"etcd endpoint {endpoint!r} has an invalid port", setting="endpoints"
            ) from None
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def current(self) -> str:
        """The endpoint calls go to first."""
        return self.urls[self._current]

    def order(self) -> list[str]:
        """Endpoints in the order one call tries them: the last good one, then the others."""
        return [*self.urls[self._current :], *self.urls[: self._current]]

    def succeeded(self, url: str) -> None:
        """``url`` answered: stick to it."""
        self._current = self.urls.index(url)

    def failed(self, url: str) -> None:
        """``url`` stopped answering: if calls go to it first, try the next one first."""
        if self.urls[self._current] == url:
            self._current = (self._current + 1) % len(self.urls)

    def unavailable(self, failures: Sequence[tuple[str, str]]) -> RegistryUnavailable:
        """The error once every endpoint failed; ``failures`` is ``(endpoint, why)`` pairs."""
        tried = "; ".join(f"{url}: {why}" for url, why in failures)
        return RegistryUnavailable(
            f"etcd is unreachable: every endpoint failed ({tried}); "
            f"configured endpoints: {', '.join(self.urls)}"
        )


class ClientSettings:
    """Settings and login state shared by :class:`EtcdClient` and :class:`AsyncEtcdClient`."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float,
        tls: TLSConfig | None,
        username: str | None,
        password: str | None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout!r}", setting="timeout")
        if (username is None) != (password is None):
            raise ConfigError(
                "give both username and password for etcd, or neither",
                setting="username" if username is None else "password",
            )
        self.failover = Failover(endpoints)
        self.timeout = timeout
        self.verify: ssl.SSLContext | bool = tls.ssl_context() if tls else True
        self._credentials = (username, password) if username is not None else None
        self._token: str | None = None  # None: not logged in yet; "": auth is off

    # -- httpx ---------------------------------------------------------------------------------

    def client_options(self, *, read_timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments for an httpx client (``read_timeout`` for watch streams)."""
        return {"timeout": httpx.Timeout(self.timeout, read=read_timeout), "trust_env": False}

    def transport_options(self, *, stream: bool = False) -> dict[str, Any]:
        """Keyword arguments for an httpx transport; streams get TCP keep-alive.

        Keep-alive probes notice a vanished host (~30 s) even when etcd sends nothing.
        """
        options: dict[str, Any] = {"verify": self.verify}
        if stream:
            keepalive = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
            for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, name):
                    keepalive.append((socket.IPPROTO_TCP, getattr(socket, name), value))
            options["socket_options"] = keepalive
        return options

    # -- auth ----------------------------------------------------------------------------------

    @property
    def login_needed(self) -> bool:
        """Whether a call must log in first."""
        return self._credentials is not None and self._token is None

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header, once logged in."""
        return {"Authorization": self._token} if self._token else {}

    def login_request(self) -> Request[str]:
        """The ``/v3/auth/authenticate`` call for the configured user."""
        assert self._credentials is not None
        username, password = self._credentials
        return authenticate_request(username or "", password or "")

    def logged_in(self, status: int, content: bytes) -> None:
        """Take the token from etcd's answer to :meth:`login_request`."""
        self._token = None
        try:
            self._token = parse_answer(self.login_request(), status, content)
        except EtcdAuthError as exc:
            if "authentication is not enabled" not in str(exc):
                raise
            self._token = ""

    def retry_after_login(self, error: BaseException, *, watch: bool = False) -> bool:
        """Whether to log in again and retry once after ``error``.

        A watch refused with "permission denied" is retried too: that is how etcd answers a
        watch whose token expired.
        """
        if self._credentials is None or not isinstance(error, EtcdAuthError):
            return False
        if needs_reauth(error) or (watch and "permission denied" in str(error)):
            self._token = None
            return True
        return False


# -- shared by the two watch classes ---------------------------------------------------------


class StreamEnded(Exception):
    """The watch stream ended without an error from etcd."""


def shutdown_socket(sock: Any) -> None:
    """Shut a socket down so that a thread blocked reading it wakes up."""
    try:
        if isinstance(sock, socket.socket):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # SSLSocket's own would race
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass
