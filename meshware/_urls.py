"""Building each attempt's URL cheaply.

Parsing a URL is the single most expensive step httpx performs per request (~16 µs here, more
than all of meshware's routing and balancing together). An attempt's URL is an instance's base
URL with the request's already-parsed path and query, so it can be assembled from parts that
httpx has already validated. This relies on how httpx 0.28 stores a URL (a ``ParseResult``
named tuple in ``URL._uri_reference``); :func:`_self_check` verifies that at import and, if
httpx ever changes, every attempt URL is built through the public API instead (slower, same
result).
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["InstanceURL"]


class InstanceURL:
    """An instance's base URL, ready to be joined with request paths."""

    __slots__ = ("_parts", "_prefix", "_ref", "base", "host_header", "host_raw")

    def __init__(self, url: str) -> None:
        self.base = httpx.URL(url)
        if self.base.scheme not in ("http", "https") or not self.base.host:
            raise httpx.UnsupportedProtocol(
                f"instance URL {url!r} is not an absolute http:// or https:// URL"
            )
        self._prefix = self.base.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        self.host_raw: bytes = self.base.netloc
        self.host_header = self.host_raw.decode("ascii")
        ref: Any = getattr(self.base, "_uri_reference", None)
        self._ref: Any = ref if _FAST else None
        # scheme, userinfo, host, port of the instance: the first fields of every attempt URL
        self._parts: tuple[Any, ...] = tuple(ref)[:4] if self._ref is not None else ()

    def join(self, request_url: httpx.URL) -> httpx.URL:
        """This instance's URL for the path and query of ``request_url``."""
        ref = self._ref
        src: Any = getattr(request_url, "_uri_reference", None) if ref is not None else None
        if src is not None:
            out = _new(httpx.URL)
            out._uri_reference = _new_tuple(
                type(ref), (*self._parts, self._prefix + (src.path or "/"), src.query, None)
            )
            return out
        raw = request_url.raw_path
        if self._prefix:
            raw = self._prefix.encode("ascii") + raw
        return self.base.copy_with(raw_path=raw)


_new = object.__new__
_new_tuple = tuple.__new__


def _self_check() -> bool:
    try:
        probe = httpx.URL("http://127.0.0.1:8000")
        ref = probe._uri_reference
        req = httpx.URL("mesh:///a%20b/c?x=1&y=%2F")
        out = httpx.URL.__new__(httpx.URL)
        out._uri_reference = ref._replace(
            path=req._uri_reference.path, query=req._uri_reference.query, fragment=None
        )
        fields = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")
        return (
            type(ref)._fields == fields
            and str(out) == "http://127.0.0.1:8000/a%20b/c?x=1&y=%2F"
            and out == httpx.URL(str(out))
        )
    except Exception:  # pragma: no cover - a future httpx
        return False


_FAST = _self_check()
