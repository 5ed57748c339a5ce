"""Client endpoints for backends: the one place that turns an address (and,
for TLS backends, a connection creator) into a connectable Twisted endpoint."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from rproxy._fastwrite import send_now
from rproxy.proxyprotocol import encode, encode_local

#: makes the endpoint that connects to a backend; called with a second
#: argument, a preface to send first, only when there is one (so a
#: one-argument callable does for pools without C{send_proxy}).
EndpointFor = Callable[..., IStreamClientEndpoint]


def reactor_endpoints(
    reactor: Any, timeout: float | Callable[[], float], *, port: int | None = None
) -> EndpointFor:
    """
    The C{endpoint_for} of a running proxy, for traffic and health checks
    alike: for each backend, a L{client_endpoint} to its address (to
    C{port} on its host instead, if given: a health check's port), over the
    backend's TLS if it has any, sending the preface first if there is one.

    @param timeout: the seconds the endpoint itself allows a connect, or
        what gives them at each connect.  Traffic connects are timed out on
        the injected clock by the pool's policy
        (L{rproxy.attempts.BackendAttempt}); this is the backstop.
    """

    def endpoint_for(backend: Any, preface: bytes = b"") -> IStreamClientEndpoint:
        seconds = timeout() if callable(timeout) else timeout
        return client_endpoint(
            reactor,
            backend.host,
            port or backend.port,
            seconds,
            backend.tls,
            preface,
        )

    return endpoint_for


def backend_endpoint(
    endpoint_for: EndpointFor, backend: Any, preface: bytes
) -> IStreamClientEndpoint:
    """
    The endpoint C{endpoint_for} makes for C{backend}, sending C{preface}
    first if there is one.
    """
    if preface:
        return endpoint_for(backend, preface)
    return endpoint_for(backend)


def proxy_header_for(version: str | None, transport: Any) -> bytes:
    """
    The PROXY header of C{version} (None: none, C{b""}) for a client
    connection on C{transport}: its peer (the address a PROXY header it
    sent carried, if it did) as the source, the address it connected to as
    the destination.  Addresses that are not IP (a UNIX socket) give the
    form without addresses.
    """
    if version is None:
        return b""
    peer, host = transport.getPeer(), transport.getHost()
    try:
        return encode(version, (peer.host, peer.port), (host.host, host.port))
    except (AttributeError, ValueError):
        return encode_local(version)


def client_endpoint(
    reactor: Any,
    host: str,
    port: int,
    timeout: float,
    tls: IOpenSSLClientConnectionCreator | None = None,
    preface: bytes = b"",
) -> IStreamClientEndpoint:
    """
    An endpoint that connects to C{host}:C{port}, over TLS made by C{tls}
    if given.  A C{preface} (a PROXY protocol header) is sent first on each
    connection, before the TLS handshake.

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
    if preface:
        plain = PrefaceEndpoint(plain, preface)
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


@implementer(IStreamClientEndpoint)
class PrefaceEndpoint:
    """
    Another client endpoint whose connections each start with C{preface}
    (a PROXY protocol header), sent before the protocol hears of the
    connection: under TLS, before the handshake.  The protocol gets the
    real transport (a splice still sees the socket); what the connection
    receives reaches it through one small relay (L{_Preface}).
    """

    def __init__(self, wrapped: IStreamClientEndpoint, preface: bytes):
        self._wrapped = wrapped
        self.preface = preface

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        connecting = self._wrapped.connect(
            _PrefaceFactory(protocolFactory, self.preface)
        )

        def unwrap(relay: IProtocol) -> IProtocol:
            return cast(_Preface, relay).protocol

        return connecting.addCallback(unwrap)


class _PrefaceFactory(Factory):
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, preface: bytes):
        self.wrapped = wrapped
        self.preface = preface

    def buildProtocol(self, addr: Any) -> _Preface | None:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:
            return None
        return _Preface(protocol, self.preface)


class _Preface(Protocol):
    """
    Sends the preface, then passes every event on to C{protocol}, which
    writes to the transport directly.
    """

    def __init__(self, protocol: IProtocol, preface: bytes):
        self.protocol = protocol
        self.preface = preface
        wrapped: Any = protocol
        for interface in (
            IHalfCloseableProtocol,
            IFileDescriptorReceiver,
            IHandshakeListener,
        ):
            if interface.providedBy(wrapped):
                directlyProvides(self, interface)

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        # At once where possible: a splice started later must not overtake it.
        send_now(transport, self.preface)
        self.protocol.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.protocol.connectionLost(reason)

    def readConnectionLost(self) -> None:
        self.protocol.readConnectionLost()  # type: ignore[attr-defined]

    def writeConnectionLost(self) -> None:
        self.protocol.writeConnectionLost()  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        self.protocol.handshakeCompleted()  # type: ignore[attr-defined]
