"""An HTTP listener's settings and the factory that serves its clients."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from zope.interface import implementer

from rproxy._endpoints import EndpointFor, reactor_endpoints
from rproxy._tracking import ConnectionTracker
from rproxy.backends import Backend
from rproxy.http.filters._chain import FilterChain
from rproxy.http.filters.headers import ResponseHeaders
from rproxy.http.framing import Limits
from rproxy.http.h1 import H1Connection
from rproxy.http.h2.settings import H2Settings
from rproxy.http.h2.stats import H2Stats
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.keepalive import KeepAlivePool
from rproxy.http.routing import Route
from rproxy.interfaces import (
    IListenerFactory,
    IRegistry,
    IRouter,
    ListenerDescription,
)
from rproxy.stats import ListenerStats


def _chain(filters: FilterChain | Sequence[Any]) -> FilterChain:
    return filters if isinstance(filters, FilterChain) else FilterChain(filters)


@frozen
class HTTPSettings:
    """
    How one HTTP listener behaves.

    @ivar filters: the listener's filters (L{rproxy.http.filters}), in
        request order; each route's own follow them.
    @ivar remove_response_headers: lowercased names of backend response
        headers not to pass on (e.g. C{b"server"}); a shorthand for a
        L{ResponseHeaders} filter, the listener's first.
    @ivar add_response_headers: (name, value) fields added to
        responses that have no field of that name (e.g. HSTS); part of the
        same filter.
    @ivar scheme: C{b"https"} on a TLS listener: what X-Forwarded-Proto and
        Forwarded say.
    @ivar request_body_timeout: seconds a client may leave between two
        reads of its request body (else 408).
    @ivar request_body_min_rate: bytes per second a request body must
        average once its first seconds have passed (else 408); 0 for no
        minimum.
    @ivar http2: how the listener speaks HTTP/2 (L{H2Settings}), or
        C{None}: HTTP/1.1 only.
    """

    listener: str
    router: IRouter
    policy: ForwardingPolicy = field(factory=ForwardingPolicy)
    limits: Limits = field(factory=Limits)
    remove_response_headers: frozenset[bytes] = frozenset()
    add_response_headers: tuple[tuple[bytes, bytes], ...] = ()
    scheme: bytes = b"http"
    filters: FilterChain = field(factory=FilterChain, converter=_chain)
    request_head_timeout: float = 10.0
    request_body_timeout: float = 30.0
    request_body_min_rate: float = 500.0
    keep_alive_timeout: float = 60.0
    #: how long an exchange may wait while no pool is chosen yet (filters
    #: deciding); once it has one, the pool's policy says.
    response_timeout: float = 60.0
    tunnel_timeout: float = 3600.0
    http2: H2Settings | None = None
    #: the shortest of the listener's own timeouts: the longest a
    #: connection's timer may wait before it looks again (an exchange whose
    #: pool has a shorter one wakes it sooner).
    shortest_timeout: float = field(init=False)
    #: no filter anywhere: neither the listener nor any of its routes has
    #: one (so requests skip looking for them).
    plain: bool = field(init=False)
    #: per route (by id), the route and its chain: the listener's filters,
    #: then the route's (see L{chain_for}).
    chains: dict[int, tuple[Route, FilterChain]] = field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.remove_response_headers or self.add_response_headers:
            built_in = ResponseHeaders(
                self.remove_response_headers, self.add_response_headers
            )
            object.__setattr__(self, "filters", FilterChain([built_in]) + self.filters)
        object.__setattr__(self, "chains", {})
        shortest = min(
            self.request_head_timeout,
            self.keep_alive_timeout,
            self.response_timeout,
            self.request_body_timeout,
        )
        object.__setattr__(self, "shortest_timeout", shortest)
        routes = getattr(self.router, "routes", None)
        for route in routes or ():
            self.chain_for(route)  # worked out once, not at the first request
        object.__setattr__(
            self,
            "plain",
            not self.filters
            and routes is not None
            and not any(chain for _, chain in self.chains.values()),
        )

    def chain_for(self, route: Route) -> FilterChain:
        """
        The filters of a request that took C{route}: the listener's, then
        the route's.
        """
        found = self.chains.get(id(route))
        if found is not None and found[0] is route:
            return found[1]
        all_filters = getattr(route, "all_filters", None)
        own = all_filters() if all_filters is not None else ()
        chain = self.filters + FilterChain(own) if own else self.filters
        self.chains[id(route)] = (route, chain)
        return chain


@implementer(IListenerFactory)
class HTTPProxyFactory(Factory):
    """
    Accepts HTTP/1.1 (and, as C{settings.http2} says, HTTP/2) clients and
    proxies their requests to the pools of
    C{registry} that C{settings.router} chooses.

    C{settings} may be replaced at any time (a reload does): each request
    follows the settings of the moment it began.

    @param reactor: provides L{IReactorTime} and, unless C{endpoint_for} is
        given, L{IReactorTCP}.
    @param keep_alive: the idle backend connections to reuse; one is made if
        not given.
    @ivar stats: the listener's request and connection counters.
    """

    noisy = False

    def __init__(
        self,
        registry: IRegistry,
        reactor: Any,
        settings: HTTPSettings,
        *,
        endpoint_for: EndpointFor | None = None,
        keep_alive: KeepAlivePool | None = None,
    ):
        self.registry = registry
        self.clock = reactor
        self.settings = settings
        self.keep_alive = keep_alive or KeepAlivePool(reactor)
        self.connections = ConnectionTracker()
        self.stats = ListenerStats()
        #: the listener's HTTP/2 connections, streams and floods.
        self.h2_stats = H2Stats()
        if endpoint_for is None:
            endpoint_for = reactor_endpoints(reactor, self._longest_connect)
        self.endpoint_for = endpoint_for

    def _longest_connect(self) -> float:
        # The endpoint's own backstop: each request's attempt times its
        # connect out by its pool's policy.
        return max((pool.policy.connect_timeout for pool in self.registry), default=5.0)

    def buildProtocol(self, addr: IAddress | None) -> H1Connection:  # type: ignore[override]
        return H1Connection(self)

    # IListenerFactory ----------------------------------------------------

    def reconfigure(self, replacement: IListenerFactory) -> IListenerFactory:
        """
        Another HTTP factory's settings apply here, at each connection's
        next request (its keep-alive pool stays); another kind of front
        takes over the connections and counters.
        """
        if isinstance(replacement, HTTPProxyFactory):
            self.settings = replacement.settings
            return self
        replacement.connections = self.connections
        replacement.stats = self.stats
        return replacement

    def forget(self, backends: Collection[Backend]) -> None:
        for backend in backends:
            self.keep_alive.discard(backend)

    def drain(self, grace: float) -> Deferred[None]:
        draining = self.connections.drain(grace, self.clock)
        return draining.addCallback(lambda _: self.keep_alive.close_all())

    def abort(self) -> None:
        self.connections.abort()
        self.keep_alive.close_all()

    def describe(self) -> ListenerDescription:
        """
        The pools of the router's routes (a router that does not list its
        C{routes} names none), and the pool of the route that takes what
        no other does (no host, no path prefix).
        """
        routes = getattr(self.settings.router, "routes", ())
        default = next(
            (r.pool for r in routes if r.host is None and r.path_prefix is None),
            None,
        )
        return ListenerDescription(
            "http", default, tuple(dict.fromkeys(r.pool for r in routes))
        )
