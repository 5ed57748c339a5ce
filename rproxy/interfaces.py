"""The seams embedders plug into: balancers, health checks, the registry,
routers and HTTP filters.

Implementations declare ``@implementer(...)`` and the tests call
``verifyObject`` on them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from rproxy.backends import Backend, Pool


class IBalancer(Interface):
    """
    A strategy that chooses the backend for a new connection or request.

    A balancer never does I/O and never changes a backend's state; it may
    keep its own bookkeeping (a round-robin cursor, a hash ring).
    """

    def pick(
        pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        """
        Return one of ``pool.candidates(exclude)``, or ``None`` when there
        is none.

        @param key: what the connection hashes on (the client IP, a header
            value), used by hashing strategies and ignored by the others.
        @param exclude: backends already tried for this connection.
        """


class IHealthCheck(Interface):
    """
    One active probe of one backend, such as a TCP connect or an HTTP GET.
    """

    name = Attribute("A short word naming the kind of check, e.g. 'tcp'.")

    def check(backend: Backend) -> Deferred[None]:
        """
        Probe C{backend} once.

        @return: a Deferred that fires with None when the backend passes and
            fails (with an exception whose text says why) when it does not.
            The caller applies the timeout and cancels the Deferred on expiry.
        """


class IRegistry(Interface):
    """
    The named pools that every listener of one process shares.
    """

    def get(name: str) -> Pool:
        """
        Return the pool called C{name}.

        @raise KeyError: if there is none.
        """

    def __iter__() -> Iterator[Pool]:
        """
        Iterate over the pools, in the order they were added.
        """


if TYPE_CHECKING:
    from rproxy.http.routing import Match


class IRouter(Interface):
    """
    Chooses the pool for an HTTP request from its C{Host} and target.

    Called once per request on the hot path; never does I/O.
    """

    def route(host: bytes | None, target: bytes) -> Match | None:
        """
        Route one request.

        @param host: the C{Host} header value as received (any case, maybe
            with a C{":port"}), or None when the request has none.
        @param target: the request target in origin-form
            (C{b"/path?query"}).
        @return: the matching route, its pool and the target to send
            upstream (rewritten if the route strips its prefix), or None
            when no route matches.
        """


if TYPE_CHECKING:
    from rproxy._fastwrite import Data
    from rproxy.http.exchange import Exchange
    from rproxy.http.filters import Step, Trailers
    from rproxy.http.framing import RequestHead, ResponseHead


class IHTTPFilter(Interface):
    """
    One step between an HTTP request and its response.  See
    L{rproxy.http.filters} for what hooks may return (a L{LocalReply}
    answers locally, a Deferred suspends the exchange).
    """

    name = Attribute("A short name for logs (the config's name for it).")

    def request_head(exchange: Exchange, head: RequestHead) -> Step:
        """
        The request head arrived (it is C{exchange.request}; change it in
        place to change what is routed and sent).
        """

    def request_body(exchange: Exchange, data: bytes) -> bytes | Deferred[bytes]:
        """
        Request body bytes (decoded from chunked): return what to send on.
        """

    def request_end(exchange: Exchange) -> bytes | Deferred[bytes]:
        """
        The request body ended: return bytes to send before the end.
        """

    def response_head(exchange: Exchange, head: ResponseHead) -> Step:
        """
        The backend's final response head, its hop-by-hop fields already
        removed.  A filter that changes the body's length sets
        C{head.content_length = None} and C{head.body = "close"}, and removes
        any C{Content-Length} field.
        """

    def response_body(exchange: Exchange, data: Data) -> Data | Deferred[Data]:
        """
        Response body bytes (a view of a received buffer: copy what you keep
        past the call): return what to send on.
        """

    def response_end(exchange: Exchange, trailers: Trailers) -> Data | Deferred[Data]:
        """
        The response ended; C{trailers} (a list the filter may change) are
        the trailer fields.  Return bytes to send before the end.
        """
