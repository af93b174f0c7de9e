"""Finding the listening socket must not leak file descriptors (it is polled every 20 ms)."""

from __future__ import annotations

import os
import tempfile

from meshware._listen import listening_urls


def test_polling_for_the_listening_socket_leaks_no_descriptors() -> None:
    with tempfile.TemporaryFile() as f:  # a descriptor that is not a socket
        assert f.fileno() >= 0
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            listening_urls()
        # a leak costs at least one descriptor per poll (50); other threads' own come and go
        assert len(os.listdir("/proc/self/fd")) - before < 25
