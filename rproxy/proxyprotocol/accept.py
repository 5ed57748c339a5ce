"""Accepting the PROXY protocol: a listener's front that reads each
connection's PROXY header, then hands the connection to the listener's own
protocol as if the client in the header had connected.

L{ProxyHeaderFactory} goes outermost, in front of TLS (the header comes
before the handshake on the wire).  Its L{ProxyHeaderProtocol} only reads
until the header is whole; the hand-over then makes the listener's protocol
(a TLS protocol, or the TCP, SNI or HTTP front) the transport's own, so
every later byte goes straight to it, with no wrapper in between (the TCP
proxy's splice(2) keeps working on the transport's socket).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._tracking import ConnectionTracker
from rproxy.http.headers import ForwardingPolicy
from rproxy.proxyprotocol import (
    HostPort,
    ProxyHeader,
    parse,
)
from rproxy.proxyprotocol.preface import PrefaceReader
from rproxy.stats import ListenerStats

__all__ = ["ProxyHeaderFactory", "ProxyHeaderProtocol", "carry_addresses"]

log = Logger(namespace="rproxy.proxyprotocol")


def _address(host_port: HostPort) -> IPv4Address | IPv6Address:
    host, port = host_port
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def carry_addresses(transport: Any, source: IAddress, destination: IAddress) -> None:
    """
    Make C{transport} report C{source} as its peer and C{destination} as its
    own address, from now on, to everything that asks it (and to a TLS
    protocol over it, which asks it): the client address of X-Forwarded-For,
    hashing, access events and PROXY headers sent on is C{getPeer()}'s.

    This is the one place where rproxy overrides a transport's addresses: it
    sets the two methods on this transport instance only.
    """
    transport.getPeer = lambda: source
    transport.getHost = lambda: destination


class ProxyHeaderFactory(Factory):
    """
    Accepts connections that must start with a PROXY protocol header (v1 or
    v2) from a peer in C{trusted}, and hands each one to a protocol of
    C{wrapped}, with the header's addresses as the connection's.

    A peer outside C{trusted} is closed at once, without reading; so is a
    header that is malformed or absent (the first bytes that cannot begin
    one), or not whole within C{timeout} seconds.  Each is logged.  A LOCAL
    or UNKNOWN header keeps the real peer's address.

    @param wrapped: the listener's factory (with TLS, the TLS factory).
    @param trusted: addresses and networks allowed to send a header.
    @param clock: provides L{IReactorTime}.
    @param connections: the listener's open connections; a connection
        still sending its header counts, and a shutdown closes it.
    @param listener: the name used in log events.
    @param stats: the listener's counters: a connection closed before its
        hand-over counts as closed there.
    """

    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        trusted: Sequence[str],
        clock: Any,
        *,
        connections: ConnectionTracker,
        timeout: float = 5.0,
        listener: str = "",
        stats: ListenerStats | None = None,
    ):
        self.wrapped = wrapped
        self.stats = stats
        self.trust = ForwardingPolicy(trusted=tuple(trusted))
        self.clock = clock
        self.connections = connections
        self.timeout = timeout
        self.listener = listener

    def startFactory(self) -> None:
        self.wrapped.doStart()

    def stopFactory(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderProtocol:
        return ProxyHeaderProtocol(self)


class ProxyHeaderProtocol(PrefaceReader):
    """
    One connection until its PROXY header is read; see L{ProxyHeaderFactory}.

    @ivar header: the header, once read.
    @ivar inner: the listener's protocol, once the connection is handed over.
    @ivar client: the peer that sent the header (a proxy).
    """

    preface = "PROXY header"
    timeout_ended = "timeout"
    malformed_ended = "bad header"
    header: ProxyHeader | None = None
    inner: Any = None

    def __init__(self, factory: ProxyHeaderFactory):
        super().__init__(log)
        self.factory = factory

    def connectionMade(self) -> None:
        assert self.transport is not None
        factory = self.factory
        peer = self.transport.getPeer()
        self.client = str(getattr(peer, "host", ""))
        # A unix socket's peer is on this host: as trusted as the file's
        # permissions make it.
        if not isinstance(peer, UNIXAddress) and not factory.trust.is_trusted(
            self.client
        ):
            self._refuse("untrusted", "not in trusted_proxies")
            return
        factory.connections.add(self)
        self._await_preface(factory.clock, factory.timeout)

    def dataReceived(self, data: bytes) -> None:
        if self.ended:
            return
        header = self._read(data, parse)
        if header is not None:
            self._hand_over(header)

    def _malformed(self, error: ValueError) -> str:
        return f"bad PROXY header: {error}"

    def _hand_over(self, header: ProxyHeader) -> None:
        self.header = header
        transport = self.transport
        assert transport is not None
        rest = bytes(self._received[header.length :])
        self._received = bytearray()
        if header.source is not None and header.destination is not None:
            carry_addresses(
                transport, _address(header.source), _address(header.destination)
            )
        log.debug(
            "{peer} on listener {listener} sent a v{version} {command} header "
            "for {client}",
            peer=self.client,
            listener=self.factory.listener,
            version=header.version,
            command=header.command,
            client=header.source[0] if header.source else "itself",
        )
        inner = self.factory.wrapped.buildProtocol(transport.getPeer())
        if inner is None:
            self._refuse("refused", "the listener refused the connection")
            return
        self.inner = inner
        # From here on the transport delivers to the inner protocol itself.
        transport.protocol = inner  # type: ignore[attr-defined]
        inner.makeConnection(transport)
        # After the inner protocol joined the tracker (if it did).
        self.factory.connections.discard(self)
        if rest:
            inner.dataReceived(rest)

    def shut_down(self, abort: bool) -> None:
        """
        A connection still sending its header has nothing to finish.
        """
        self._refuse("shutdown", "shutting down")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        self.ended = self.ended or "closed"
        stats = self.factory.stats
        if stats is not None and self in self.factory.connections:
            # It counted as open; now it counts as closed (the listener's
            # total is the two added up).
            stats.connections_closed += 1
        self.factory.connections.discard(self)
