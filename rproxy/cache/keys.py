"""Cache keys: the primary key of a request (RFC 9111 §2: its target URI,
as scheme, authority and request-target) and of a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["cache_key", "url_key"]

_DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}


def cache_key(scheme: bytes, host: bytes | None, target: bytes) -> bytes:
    """
    The key of a request for C{target} (origin-form) on C{host} (its
    C{Host}, any case, a default port left out) over C{scheme}.
    """
    scheme = scheme.lower()
    authority = (host or b"").lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and authority.endswith(default):
        authority = authority[: -len(default)]
    return scheme + b"://" + authority + target


def url_key(url: bytes | str) -> bytes | None:
    """
    The key of an absolute URL (C{http://host/path?query}), or C{None} if
    it is not one.
    """
    text = url.decode("latin-1") if isinstance(url, bytes) else url
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return cache_key(
        parts.scheme.encode("latin-1"),
        parts.netloc.encode("latin-1"),
        target.encode("latin-1"),
    )
