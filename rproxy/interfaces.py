"""The seams embedders plug into: balancers, health checks, the registry,
routers, HTTP filters, and the listener factories the service and the
admin interface drive.

Implementations declare ``@implementer(...)`` and the tests call
``verifyObject`` on them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory
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
        The request head arrived (it is C{exchange.request}, to change in
        place).  The listener's filters see it before routing, so what they
        change is routed; the route's see it after.  The target sent
        upstream is C{exchange.target} (a route may have stripped a
        prefix): set it to send another.
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
        removed (also a 101's, which can only be changed: a Deferred or a
        L{LocalReply} for it is a filter failure).  A filter that changes
        the body's length sets C{head.content_length = None} and
        C{head.body = "close"}, and removes any C{Content-Length} field.
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


@frozen
class ListenerDescription:
    """
    What a listener serves, for the log and the admin status.

    @ivar protocol: the kind of front: C{"http"}, C{"tcp"} or C{"sni"}.
    @ivar pool: the pool that traffic no route claims goes to (a tcp
        listener's only pool, an SNI listener's default pool, an HTTP
        listener's catch-all route), or None when there is none.
    @ivar pools: every pool the listener may send traffic to, in the order
        its routes name them (the default last), each once.
    """

    protocol: str
    pool: str | None = None
    pools: tuple[str, ...] = ()


class IListenerFactory(IProtocolFactory):
    """
    The protocol factory behind one listening port: the HTTP, TCP or SNI
    front.  The listener service (L{rproxy.service._listeners}) and the
    admin interface use only this, whatever the kind.

    The port stays open across a config reload: L{reconfigure} says which
    factory serves the new connections, and the open connections and the
    counters carry over to it.
    """

    connections = Attribute(
        "The listener's open connections (a ConnectionTracker), from accept "
        "to close. A reload may give a replacement factory the one in use."
    )
    stats = Attribute(
        "The listener's counters (a ListenerStats). A reload may give a "
        "replacement factory the one in use, so they survive it."
    )

    def reconfigure(replacement: IListenerFactory) -> IListenerFactory:
        """
        A reload made C{replacement} from the new config: return the
        factory that serves new connections from now on.  Either this one,
        with C{replacement}'s settings (a front whose open connections read
        their settings from their factory, as HTTP's do at each request),
        or C{replacement} itself, having been given this one's
        C{connections} and C{stats}.
        """

    def forget(backends: Collection[Backend]) -> None:
        """
        C{backends} left their pools, or how to reach them changed: drop
        any idle connection to them kept for reuse.  Requests under way
        finish.
        """

    def drain(grace: float) -> Deferred[None]:
        """
        Shut down gracefully: every connection is asked to finish (an idle
        one closes at once, a busy one when its request or stream is done),
        those still open after C{grace} seconds are dropped, then idle
        backend connections kept for reuse are closed.

        @return: a Deferred that fires once no connection is open.
        """

    def abort() -> None:
        """
        Drop every open connection now, and close idle backend connections.
        """

    def describe() -> ListenerDescription:
        """
        What this listener serves now, for the log and the admin status.
        """
