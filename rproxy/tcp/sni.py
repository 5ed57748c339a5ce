"""SNI passthrough: a tcp listener that sends each TLS connection to the pool
its ClientHello's server name routes to, without terminating TLS.

L{SNIRoutes} is the decision: an exact name, then a one-label wildcard, then
the default pool.  L{SNIProxyFactory} reads each client's ClientHello (with
L{rproxy.tls.clienthello.read_server_name}), then hands the connection to the
L{TCPFrontProtocol} of the chosen pool, which sends the ClientHello to the
backend ahead of the rest of the stream: connect retries, passive health,
the idle timeout, half-close, splice(2) and access events are the TCP
proxy's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy._endpoints import EndpointFor
from rproxy._fds import FdBudget
from rproxy._tracking import ConnectionTracker, TrackedListener
from rproxy.backends import Registry
from rproxy.interfaces import IListenerFactory, ListenerDescription
from rproxy.proxyprotocol.preface import PrefaceReader
from rproxy.stats import ListenerStats
from rproxy.tcp import (
    TCPFrontProtocol,
    TCPProxyFactory,
    _host_of,
    emit_access,
)
from rproxy.tls.clienthello import read_server_name

log = Logger(namespace="rproxy.tcp.sni")


@frozen
class SNIRoutes:
    """
    Which pool serves a TLS server name: the route of that exact name, else
    that of a wildcard C{*.parent} when the name is one label more than
    C{parent} (C{*.example.com} covers C{a.example.com}, not C{example.com}
    nor C{a.b.example.com}), else C{default}.

    @ivar exact: pool names by lowercase server name.
    @ivar wildcards: pool names by the C{parent} of a C{*.parent} route.
    @ivar default: the pool for names no route covers and for clients that
        send no name; None to close those connections.
    """

    exact: Mapping[str, str]
    wildcards: Mapping[str, str]
    default: str | None = None

    @classmethod
    def from_routes(
        cls, routes: Iterable[tuple[str, str]], default: str | None = None
    ) -> SNIRoutes:
        """
        The routes of (server name or C{*.parent}, pool name) pairs, as in a
        listener's C{sni_routes}; the first route of a name wins.
        """
        exact: dict[str, str] = {}
        wildcards: dict[str, str] = {}
        for name, pool in routes:
            name = name.lower()
            if name.startswith("*."):
                wildcards.setdefault(name[2:], pool)
            else:
                exact.setdefault(name, pool)
        return cls(exact, wildcards, default)

    def pool_for(self, server_name: str | None) -> str | None:
        """
        The name of the pool for C{server_name} (None: the client sent none),
        or None if no pool serves it.
        """
        if server_name is not None:
            name = server_name.lower()
            pool = self.exact.get(name)
            if pool is not None:
                return pool
            label, _, parent = name.partition(".")
            pool = self.wildcards.get(parent) if label and parent else None
            if pool is not None:
                return pool
        return self.default


@implementer(IListenerFactory)
class SNIProxyFactory(TrackedListener, Factory):
    """
    Accepts TLS client connections and relays each one, still encrypted, to
    a backend of the pool its server name (SNI) routes to.

    A client has C{client_hello_timeout} seconds to send its whole
    ClientHello, of at most 64 KiB; bytes that are not a TLS ClientHello
    close the connection at once, and so does a name no route (and no
    default pool) accepts.  Each is logged with the client's address and the
    reason.  Once the pool is chosen, the connection is the TCP proxy's
    (L{TCPFrontProtocol}), with that pool's policy (timeouts, tries, PROXY
    header).

    @param registry: the pools, looked up by name for each connection.
    @param routes: which pool serves which server name.
    @param reactor: as for L{TCPProxyFactory}.
    @param listener: the name used in log and access events.
    @param client_hello_timeout: seconds a client has to send its ClientHello.
    @param endpoint_for: as for L{TCPProxyFactory}.
    @param splice: as for L{TCPProxyFactory}.
    @param fds: as for L{TCPProxyFactory}.
    @ivar connections: the listener's open connections, from accept to
        close, whatever their pool.
    @ivar stats: the listener's connection counters, whatever the pool.
    """

    noisy = False

    def __init__(
        self,
        registry: Registry,
        routes: SNIRoutes,
        reactor: Any,
        *,
        listener: str = "tcp",
        client_hello_timeout: float = 5.0,
        endpoint_for: EndpointFor | None = None,
        splice: bool = True,
        fds: FdBudget | None = None,
    ):
        self.registry = registry
        self.routes = routes
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.listener = listener
        self.client_hello_timeout = client_hello_timeout
        self.endpoint_for = endpoint_for
        self.splice = splice
        self.fds = fds
        self.connections = ConnectionTracker()
        self.stats = ListenerStats()
        self._proxies: dict[str, TCPProxyFactory] = {}

    def buildProtocol(self, addr: IAddress | None) -> SNIFrontProtocol:
        return SNIFrontProtocol(self)

    def proxy_for(self, pool_name: str) -> TCPProxyFactory | None:
        """
        The TCP proxy to pool C{pool_name}, or None if there is no such pool.
        """
        if pool_name not in self.registry:
            return None
        pool = self.registry.get(pool_name)
        proxy = self._proxies.get(pool_name)
        if proxy is None or proxy.pool is not pool:
            proxy = TCPProxyFactory(
                pool,
                self.reactor,
                listener=self.listener,
                endpoint_for=self.endpoint_for,
                splice=self.splice,
                fds=self.fds,
            )
            # Connections of every pool drain with this listener, and count
            # in its stats.
            proxy.connections = self.connections
            proxy.stats = self.stats
            self._proxies[pool_name] = proxy
        return proxy

    def describe(self) -> ListenerDescription:
        routes = self.routes
        named = [*routes.exact.values(), *routes.wildcards.values()]
        if routes.default is not None:
            named.append(routes.default)
        return ListenerDescription("sni", routes.default, tuple(dict.fromkeys(named)))


@implementer(IHalfCloseableProtocol)
class SNIFrontProtocol(PrefaceReader):
    """
    One client connection: reads its ClientHello, then hands the connection
    to the L{TCPFrontProtocol} of the pool it routes to, and passes that
    protocol every later event of the transport.

    @ivar front: the TCP proxy protocol, once the connection is handed over.
    """

    preface = "ClientHello"
    timeout_ended = "client hello timeout"
    malformed_ended = "bad client hello"
    front: TCPFrontProtocol | None = None

    def __init__(self, factory: SNIProxyFactory):
        super().__init__(log)
        self.factory = factory
        self.clock = factory.clock
        self.accepted = 0.0

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.factory.connections.add(self)
        self.client = _host_of(self.transport.getPeer())
        self.accepted = self.clock.seconds()
        self._await_preface(self.clock, self.factory.client_hello_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self.front is not None:
            self.front.dataReceived(data)
            return
        if self.ended:
            return
        hello = self._read(data, read_server_name)
        if hello is not None:
            self._route(hello.server_name)

    def _route(self, server_name: str | None) -> None:
        pool_name = self.factory.routes.pool_for(server_name)
        asked = "no server name" if server_name is None else repr(server_name)
        if pool_name is None:
            self._refuse("no route", f"no route for {asked} and no default pool")
            return
        proxy = self.factory.proxy_for(pool_name)
        if proxy is None:
            self._refuse("no route", f"{asked} routes to {pool_name!r}, no such pool")
            return
        assert self.transport is not None
        log.debug(
            "{client} asks for {server_name}: pool {pool}",
            client=self.client,
            server_name=asked,
            pool=pool_name,
        )
        front = proxy.buildProtocol(self.transport.getPeer())
        front.preface = bytes(self._received)
        self._received = bytearray()
        self.front = front
        front.makeConnection(self.transport)
        # The connection's duration counts from accept, not from hand-over.
        front.started = self.accepted
        # After the front joined the tracker, which so never looks empty.
        self.factory.connections.discard(self)

    def readConnectionLost(self) -> None:
        if self.front is not None:
            self.front.readConnectionLost()
        else:
            self._refuse(
                "client closed",
                f"client closed its side after {len(self._received)} bytes, "
                "before a whole ClientHello",
            )

    def writeConnectionLost(self) -> None:
        if self.front is not None:
            self.front.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.front is not None:
            self.front.connectionLost(reason)
            return
        self._stop_deadline()
        if not self.ended:
            self.ended = "client left"
            log.debug(
                "{client} left before a whole ClientHello ({received} bytes)",
                client=self.client,
                received=len(self._received),
            )
        emit_access(
            client=self.client,
            listener=self.factory.listener,
            pool="-",
            backend="-",
            bytes_in=0,
            bytes_out=0,
            duration=self.clock.seconds() - self.accepted,
            ended=self.ended,
        )
        self.factory.stats.connections_closed += 1
        self.factory.connections.discard(self)

    def shut_down(self, abort: bool) -> None:
        """
        Before the hand-over: a client that has sent nothing is closed at
        once; one part-way through its ClientHello may finish it (within
        the ClientHello timeout) and is then proxied, until the grace period
        ends.
        """
        if self.front is None and (abort or not self._received):
            self._refuse("shutdown", "the listener is shutting down")
