"""A route's C{auth} key: forward auth, a table read into an
L{AuthSettings}::

    auth = { url = "http://127.0.0.1:9000/verify", copy_headers = ["X-User"] }

Keys: C{url} (required, C{http://} or C{https://}), C{copy_headers} (fields
of a 2xx answer put in the request; default none), C{forward_headers}
(request fields sent to the service; default C{Authorization} and
C{Cookie}), C{timeout} (seconds, default 5), C{cache} (seconds a 2xx may be
reused per credential, default 0: off), C{cache_without_directives}
(reuse a 2xx without C{Cache-Control}; default false), C{cache_entries}
(the most credentials remembered, default 10000)."""

from __future__ import annotations

from urllib.parse import urlsplit

from rproxy.config._validate import (
    Table,
    boolean,
    header_name,
    non_negative_number,
    positive_int,
    positive_number,
)
from rproxy.http.filters.auth import DEFAULT_FORWARD, AuthSettings

__all__ = ["AUTH_KEYS", "parse_auth"]

#: the keys of a route's C{auth} table.
AUTH_KEYS = (
    "url",
    "copy_headers",
    "forward_headers",
    "timeout",
    "cache",
    "cache_without_directives",
    "cache_entries",
)


def auth_url(value: object) -> str:
    """
    An auth service's URL: C{http} or C{https}, with a host, ASCII.
    """
    if not isinstance(value, str) or not value.isascii():
        raise ValueError(f"must be an ASCII http:// or https:// URL, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"must be an http:// or https:// URL with a host, got {value!r}"
        )
    if any(c in value for c in " \t\r\n"):
        raise ValueError(f"must not hold spaces, got {value!r}")
    return value


def parse_auth(table: Table) -> AuthSettings | None:
    """
    The forward auth of the route C{table}, or None (problems reported to
    it).
    """
    auth = table.table("auth", AUTH_KEYS)
    if auth is None:
        return None
    found = len(table.problems.lines)
    url = auth.require("url", auth_url)
    copy = auth.array("copy_headers", header_name)
    forward = (
        auth.array("forward_headers", header_name)
        if "forward_headers" in auth
        else DEFAULT_FORWARD
    )
    timeout = auth.get("timeout", positive_number, 5.0)
    cache = auth.get("cache", non_negative_number, 0.0)
    unmarked = auth.get("cache_without_directives", boolean, False)
    entries = auth.get("cache_entries", positive_int, 10_000)
    if url is None or len(table.problems.lines) != found:
        return None
    return AuthSettings(
        url,
        copy_headers=copy,
        forward_headers=forward,
        timeout=timeout,
        cache=cache,
        cache_without_directives=unmarked,
        cache_entries=entries,
    )
