"""Find the address this process serves on, when ``MESHWARE_ADVERTISE_URL`` is not set.

Every server meshware supports (uvicorn, gunicorn, werkzeug's dev server, hypercorn) listens on
a TCP socket that the serving process holds open; its workers inherit it. So the listening
sockets among our own file descriptors tell the port without asking the server. A socket bound
to a wildcard address is advertised under the host name. When there is no listening socket (yet),
or more than one and they disagree, the caller waits or asks the user to set the URL.
"""

from __future__ import annotations

import os
import socket

__all__ = ["listening_urls"]


def listening_urls(scheme: str = "http") -> list[str]:
    """Base URLs of the TCP sockets this process listens on (Linux ``/proc``; else empty)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    urls: list[str] = []
    for fd in fds:
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:  # not a socket: close our duplicate, or every poll leaks descriptors
            os.close(dup)
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                continue
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            host, port = sock.getsockname()[:2]
        except OSError:
            continue
        finally:
            sock.close()
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        url = f"{scheme}://{host}:{port}"
        if url not in urls:
            urls.append(url)
    return sorted(urls)
