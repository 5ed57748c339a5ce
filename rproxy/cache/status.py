"""The C{Cache-Status} response field (RFC 9211): how this cache handled a
request, as one list member appended after those of caches nearer the
origin."""

from __future__ import annotations

import math
import re

from attrs import define

__all__ = ["FIELD", "CacheStatus"]

FIELD = b"Cache-Status"

_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


def item(text: str) -> str:
    """C{text} as a Structured Field token if it is one, else a string."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@define
class CacheStatus:
    """
    One cache's member of C{Cache-Status}.

    @ivar hit: the response came from the cache without the backend.
    @ivar fwd: why the request went to the backend (C{bypass}, C{method},
        C{uri-miss}, C{vary-miss}, C{miss}, C{request}, C{stale},
        C{partial}), or C{None}.
    @ivar fwd_status: the status the backend answered with.
    @ivar ttl: the response's remaining freshness in seconds (negative
        when stale).
    @ivar stored: the backend's response was stored.
    @ivar collapsed: the request waited for another's backend fetch.
    @ivar detail: extra words (a token or string).
    """

    hit: bool = False
    fwd: str | None = None
    fwd_status: int | None = None
    ttl: float | None = None
    stored: bool = False
    collapsed: bool = False
    detail: str | None = None

    def render(self, name: str) -> bytes:
        """
        The member as the cache called C{name} writes it.
        """
        parts = [item(name)]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append("fwd=" + self.fwd)
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.ttl is not None:
            parts.append(f"ttl={math.floor(self.ttl)}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.detail is not None:
            parts.append("detail=" + item(self.detail))
        return "; ".join(parts).encode("latin-1")
