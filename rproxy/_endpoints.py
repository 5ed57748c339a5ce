"""Client endpoints for backends: the one place that turns an address (and,
for TLS backends, a connection creator) into a connectable Twisted endpoint."""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


def client_endpoint(
    reactor: Any,
    host: str,
    port: int,
    timeout: float,
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> IStreamClientEndpoint:
    """
    An endpoint that connects to C{host}:C{port}, over TLS made by C{tls}
    if given.

    IP literals connect directly; a hostname is resolved at each connect
    (with Twisted's happy-eyeballs L{HostnameEndpoint}).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        plain: IStreamClientEndpoint = HostnameEndpoint(
            reactor, host, port, timeout=timeout
        )
    else:
        endpoint = TCP4ClientEndpoint if ip.version == 4 else TCP6ClientEndpoint
        plain = endpoint(reactor, host, port, timeout=timeout)
    if tls is None:
        return plain
    return HandshakeEndpoint(plain, tls)


@implementer(IStreamClientEndpoint)
class HandshakeEndpoint:
    """
    TLS over another client endpoint, connected only once the handshake is
    done: the protocol's C{connectionMade} and the C{connect} result come
    after the server's certificate was verified, and a failed handshake
    (an untrusted certificate, a wrong name, a plain-text server) fails the
    connect, so callers treat it like a refused connection and try the next
    backend.  Cancelling the connect aborts the connection at any stage.
    """

    def __init__(
        self, wrapped: IStreamClientEndpoint, creator: IOpenSSLClientConnectionCreator
    ):
        self._wrapped = wrapped
        self._creator = creator

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        gate = _GateFactory(protocolFactory)
        tls_factory = TLSMemoryBIOFactory(self._creator, True, gate)
        connecting = self._wrapped.connect(tls_factory)

        def cancel(_: Deferred[IProtocol]) -> None:
            connecting.cancel()
            if gate.gate is not None and gate.gate.transport is not None:
                gate.gate.transport.abortConnection()  # type: ignore[attr-defined]

        ready: Deferred[IProtocol] = Deferred(cancel)
        gate.ready = ready

        def failed(failure: Failure) -> None:
            if not ready.called:
                ready.errback(failure)

        connecting.addErrback(failed)
        return ready


class _GateFactory(Factory):
    noisy = False

    def __init__(self, wrapped: IProtocolFactory):
        self.wrapped = wrapped
        self.ready: Deferred[IProtocol] | None = None
        self.gate: _Gate | None = None

    def buildProtocol(self, addr: Any) -> _Gate | None:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:
            return None
        self.gate = _Gate(protocol, self)
        return self.gate


@implementer(IHandshakeListener)
class _Gate(Protocol):
    """
    Stands in for the real protocol until the TLS handshake is done, then
    steps aside: the TLS layer talks to the real protocol directly.
    """

    def __init__(self, protocol: IProtocol, factory: _GateFactory):
        self.protocol = protocol
        self.factory = factory

    def handshakeCompleted(self) -> None:
        tls = cast(TLSMemoryBIOProtocol, self.transport)
        tls.wrappedProtocol = self.protocol
        self.protocol.makeConnection(tls)
        ready = self.factory.ready
        if ready is not None and not ready.called:
            ready.callback(self.protocol)
        if IHandshakeListener.providedBy(self.protocol):
            self.protocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        # Only before the handshake completes, which sends no application
        # data: nothing to pass on.
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ready = self.factory.ready
        if ready is not None and not ready.called:
            ready.errback(reason)
