"""HTTP filters: the seam between a client's request and the backend's
response, where caching, compression, limits, rules, auth, redirects and
header rewriting plug in.

A filter provides L{IHTTPFilter}; subclass L{HTTPFilter} and override only
the hooks you need (hooks left as they are cost nothing: the chain never
calls them).  Request hooks run in order (the listener's filters, then the
route's); response hooks in the reverse order, so the filter that saw the
request first sees the response last.  The listener's filters' request heads
are seen before routing, the route's after it.

Every hook may:

  - continue: return C{None} (head hooks; change the head in place if you
    like), or the body bytes to pass on (body hooks; C{b""} passes nothing
    on now);
  - answer locally: return a L{LocalReply} from a head hook;
  - suspend the exchange: return a L{Deferred} that fires with what the hook
    would have returned.  Later events wait for it, in order, and the side
    that produces them is paused meanwhile.

A hook that raises (or a Deferred that fails) ends the exchange: the client
gets a 500 if nothing was sent to it yet, the traceback goes to the log, and
the connection and the process carry on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen
from twisted.internet.defer import Deferred
from zope.interface import implementer

from rproxy._fastwrite import Data
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.interfaces import IHTTPFilter

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "PLAIN_TEXT",
    "HTTPFilter",
    "IHTTPFilter",
    "LocalReply",
    "Step",
    "filter_hooks",
]

Trailers = list[tuple[bytes, bytes]]


@frozen
class LocalReply:
    """
    A response a filter gives instead of the backend's.

    C{Content-Length} is added (and the body left out for a C{HEAD}
    request); C{headers} must not hold framing fields.  The client's
    connection stays open for its next request when the request was read
    whole, and closes otherwise.
    """

    status: int
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    reason: bytes | None = None


#: the fields of the short plain-text answers the built-in filters give.
PLAIN_TEXT = (
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"Cache-Control", b"no-store"),
)

#: what a head hook returns, at once or through a Deferred.
Step = LocalReply | None | Deferred[LocalReply | None]


@implementer(IHTTPFilter)
class HTTPFilter:
    """
    A filter that lets everything through: override the hooks you need.
    """

    name = "filter"

    def request_head(self, exchange: Exchange, head: RequestHead) -> Step:
        return None

    def request_body(self, exchange: Exchange, data: bytes) -> bytes | Deferred[bytes]:
        return data

    def request_end(self, exchange: Exchange) -> bytes | Deferred[bytes]:
        return b""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> Step:
        return None

    def response_body(self, exchange: Exchange, data: Data) -> Data | Deferred[Data]:
        return data

    def response_end(
        self, exchange: Exchange, trailers: Trailers
    ) -> Data | Deferred[Data]:
        return b""


#: the hooks, in the order of the events they see.
HOOKS = (
    "request_head",
    "request_body",
    "request_end",
    "response_head",
    "response_body",
    "response_end",
)


def filter_hooks(filters: Sequence[Any], name: str) -> tuple[Any, ...]:
    """
    The bound C{name} hooks of those C{filters} that do something there (an
    L{HTTPFilter} subclass that did not override the hook is left out).
    """
    default = getattr(HTTPFilter, name)
    return tuple(
        getattr(one, name)
        for one in filters
        if getattr(type(one), name, None) is not default
    )
