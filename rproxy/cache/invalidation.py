"""Invalidation (RFC 9111 §4.4): after an unsafe request gets a non-error
response, the stored responses for its target URI and for the same-origin
URIs its C{Location} and C{Content-Location} name are dropped.  Pure
functions.

A method is unsafe unless RFC 9110 §9.2.1 defines it safe (GET, HEAD,
OPTIONS, TRACE): a method the cache does not know counts as unsafe.  A
non-error status is 2xx or 3xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urljoin

from rproxy.cache.control import field_values
from rproxy.cache.keys import url_key

__all__ = ["SAFE_METHODS", "invalidated_keys", "invalidates"]

Fields = Sequence[tuple[bytes, bytes]]

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def invalidates(method: bytes, status: int) -> bool:
    """
    Whether a response of C{status} to a C{method} request invalidates.
    """
    return method not in SAFE_METHODS and 200 <= status < 400


def _origin(key: bytes) -> bytes:
    scheme, _, rest = key.partition(b"://")
    return scheme + b"://" + rest.split(b"/", 1)[0].split(b"?", 1)[0]


def invalidated_keys(key: bytes, headers: Fields) -> list[bytes]:
    """
    The keys to invalidate after such a response to the request whose key
    is C{key} (an absolute URL, L{rproxy.cache.keys.cache_key}): C{key}, and
    the same-origin ones of C{Location} and C{Content-Location} (resolved
    against it).
    """
    keys = [key]
    base = key.decode("latin-1")
    origin = _origin(key)
    for name in (b"location", b"content-location"):
        for value in field_values(headers, name)[:1]:
            try:
                resolved = urljoin(base, value.strip().decode("latin-1"))
            except ValueError:
                continue
            other = url_key(resolved)
            if other is not None and _origin(other) == origin and other not in keys:
                keys.append(other)
    return keys
