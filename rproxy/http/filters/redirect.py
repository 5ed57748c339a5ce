"""The redirect of plain HTTP to https, as a filter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rproxy.http.filters import PLAIN_TEXT, HTTPFilter, LocalReply
from rproxy.http.framing import RequestHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["HTTPSRedirect"]


class HTTPSRedirect(HTTPFilter):
    """
    Answer every request with a 308 to the same host and target over https,
    on the port C{port()} gives (left out of the URL when None or 443).  A
    request without a Host gets a 400: there is nowhere to send it.
    """

    name = "https-redirect"

    def __init__(self, port: Callable[[], int | None]) -> None:
        self.port = port

    def request_head(self, exchange: Exchange, head: RequestHead) -> LocalReply:
        host = head.host
        if not host:
            return LocalReply(400, PLAIN_TEXT, b"400 Bad Request: no Host\n")
        https = self.port()
        suffix = b"" if https in (None, 443) else b":%d" % https
        target = head.target if head.target.startswith(b"/") else b"/"
        location = b"https://" + _without_port(host) + suffix + target
        return LocalReply(
            308,
            (*PLAIN_TEXT, (b"Location", location)),
            b"Moved to " + location + b"\n",
        )


def _without_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.rpartition(b":")[0] if b":" in host else host
