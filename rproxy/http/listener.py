"""An HTTP listener's settings and the factory that serves its clients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory

from rproxy._endpoints import EndpointFor, client_endpoint
from rproxy._tracking import ConnectionTracker
from rproxy.backends import Backend
from rproxy.http.framing import Limits
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.keepalive import KeepAlivePool
from rproxy.http.local import Answer
from rproxy.http.server import HTTPFrontProtocol
from rproxy.interfaces import IRegistry, IRouter
from rproxy.stats import ListenerStats


@frozen
class HTTPSettings:
    """
    How one HTTP listener behaves.

    @ivar remove_response_headers: lowercased names of backend response
        headers not to pass on (e.g. C{b"server"}).
    @ivar add_response_headers: (name, value) fields added to
        responses that have no field of that name (e.g. HSTS).
    @ivar scheme: C{b"https"} on a TLS listener: what X-Forwarded-Proto and
        Forwarded say.
    @ivar answer: asked first with each request head; a whole response to
        send (and close) instead of proxying, or None to proxy it.  See
        L{rproxy.http.local}.
    """

    listener: str
    router: IRouter
    policy: ForwardingPolicy = field(factory=ForwardingPolicy)
    limits: Limits = field(factory=Limits)
    remove_response_headers: frozenset[bytes] = frozenset()
    add_response_headers: tuple[tuple[bytes, bytes], ...] = ()
    scheme: bytes = b"http"
    answer: Answer | None = None
    request_head_timeout: float = 10.0
    keep_alive_timeout: float = 60.0
    connect_timeout: float = 5.0
    response_timeout: float = 60.0
    tunnel_timeout: float = 3600.0
    #: per pool name, (connect, response) timeouts overriding the two above.
    pool_timeouts: Mapping[str, tuple[float, float]] = field(factory=dict)
    #: per pool name, (max idle connections per backend, idle timeout) of
    #: the backend keep-alive pool; the pool's own defaults otherwise.
    pool_keep_alive: Mapping[str, tuple[int, float]] = field(factory=dict)
    #: the shortest of the head, keep-alive and response timeouts: the
    #: longest a connection's timer may wait before it looks again.
    shortest_timeout: float = field(init=False)
    #: the longest connect timeout of any pool: the connecting endpoint's
    #: own limit (each request applies its pool's).
    longest_connect: float = field(init=False)

    def __attrs_post_init__(self) -> None:
        responses = [response for _, response in self.pool_timeouts.values()]
        shortest = min(
            self.request_head_timeout,
            self.keep_alive_timeout,
            self.response_timeout,
            *responses,
        )
        object.__setattr__(self, "shortest_timeout", shortest)
        connects = [connect for connect, _ in self.pool_timeouts.values()]
        object.__setattr__(
            self, "longest_connect", max([self.connect_timeout, *connects])
        )

    def keep_alive_for(self, pool: str) -> tuple[int | None, float | None]:
        """
        The backend keep-alive limits (max idle per backend, idle timeout)
        for C{pool}, C{None} for the keep-alive pool's defaults.
        """
        return self.pool_keep_alive.get(pool, _NO_KEEP_ALIVE_OVERRIDE)

    def timeouts_for(self, pool: str) -> tuple[float, float]:
        """
        The connect and response timeouts for requests to C{pool}.
        """
        return self.pool_timeouts.get(
            pool, (self.connect_timeout, self.response_timeout)
        )


_NO_KEEP_ALIVE_OVERRIDE: tuple[int | None, float | None] = (None, None)


class HTTPProxyFactory(Factory):
    """
    Accepts HTTP/1.1 clients and proxies their requests to the pools of
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
        if endpoint_for is None:

            def endpoint_for(
                backend: Backend, preface: bytes = b""
            ) -> IStreamClientEndpoint:
                return client_endpoint(
                    reactor,
                    backend.host,
                    backend.port,
                    self.settings.longest_connect,
                    backend.tls,
                    preface,
                )

        self.endpoint_for = endpoint_for

    def buildProtocol(self, addr: IAddress | None) -> HTTPFrontProtocol:
        return HTTPFrontProtocol(self)
