"""Tests for rproxy._endpoints: which endpoint an address gets, and TLS
endpoints whose connect succeeds only once the handshake is done.

Most tests connect through a L{MemoryReactorClock} and complete the TCP
connection by hand, running the TLS server in memory with
C{twisted.test.iosim}; one runs over real loopback sockets.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trustme
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    inlineCallbacks,
)
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IHandshakeListener,
    IHostResolution,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, SynchronousResolver
from twisted.protocols import tls as twisted_tls
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from rproxy._endpoints import (
    HandshakeEndpoint,
    PrefaceEndpoint,
    client_endpoint,
    reactor_endpoints,
)
from rproxy.backends import Backend
from rproxy.tls import ServerCertificate, ServerTLS, backend_tls

CA = trustme.CA()
OTHER_CA = trustme.CA()
BACKEND_LEAF = CA.issue_cert("backend.internal")
BACKEND = ServerCertificate.from_pem(
    BACKEND_LEAF.private_key_and_cert_chain_pem.bytes(), None, "backend.pem"
)


class App(Protocol):
    """
    The application protocol: records what it is told, writes C{greeting}
    when connected.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.made = False
        #: the peer certificate the transport had when connectionMade ran.
        self.certificate_at_made: Any = None
        self.received = b""
        self.lost: Failure | None = None
        self.events: list[str] = []

    def connectionMade(self) -> None:
        self.made = True
        self.events.append("made")
        self.certificate_at_made = self.transport.getPeerCertificate()  # type: ignore[union-attr]
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


@implementer(IHandshakeListener)
class ListeningApp(App):
    """
    An application protocol that wants to hear about the handshake too.
    """

    def handshakeCompleted(self) -> None:
        self.events.append("handshake")


@implementer(IHandshakeListener)
class ServerApp(Protocol):
    """
    The server's application: writes C{greeting} on connection (held by
    TLS until the handshake is done) or C{after_handshake} when the
    handshake completes; records what it receives.
    """

    def __init__(self, greeting: bytes = b"", after_handshake: bytes = b"") -> None:
        self.greeting = greeting
        self.after_handshake = after_handshake
        self.received = b""
        self.handshake_done = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        if self.after_handshake:
            self.transport.write(self.after_handshake)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class PlainServer(Protocol):
    """
    A server that does not speak TLS: it answers anything with an HTTP
    error and closes, as a plain-text backend would.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class AbortRecordingTransport(iosim.FakeTransport):
    """
    A FakeTransport that records abortConnection.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def tls12_server(certificate: ServerCertificate) -> ssl.CertificateOptions:
    """
    A TLS server limited to TLS 1.2: its Finished comes last, so data it
    sends at once travels with it.
    """
    return ssl.CertificateOptions(
        privateKey=certificate.key,  # type: ignore[arg-type]
        certificate=certificate.certificate,  # type: ignore[arg-type]
        lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2,
    )


class _MemoryCase(SynchronousTestCase):
    """
    Connects through a MemoryReactorClock; L{accept} completes the TCP
    connection to an in-memory server.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # TLSMemoryBIOFactory batches application writes on the global
        # reactor unless given a clock; HandshakeEndpoint gives none, so
        # point the default (a hook meant for tests) at this reactor.
        self.patch(twisted_tls, "_get_default_clock", lambda: self.reactor)
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        self.ca_file = str(directory / "ca.pem")
        self.other_ca_file = str(directory / "other-ca.pem")
        CA.cert_pem.write_to_path(self.ca_file)
        OTHER_CA.cert_pem.write_to_path(self.other_ca_file)
        self.client_io: AbortRecordingTransport | None = None

    def connect(
        self, app: App, server_name: str = "backend.internal", ca: str | None = None
    ) -> Deferred[Any]:
        """
        Connect C{app} over TLS verified against C{server_name}, trusting
        C{ca} (the CA's file by default).
        """
        creator = backend_tls(server_name, ca=ca or self.ca_file)
        endpoint = client_endpoint(self.reactor, "127.0.0.1", 8443, 5.0, creator)
        self.assertIsInstance(endpoint, HandshakeEndpoint)
        return endpoint.connect(Factory.forProtocol(lambda: app))

    def accept(
        self, server: Protocol | None = None, creator: Any = None
    ) -> tuple[iosim.IOPump, Protocol]:
        """
        Complete the pending TCP connection to a TLS server made by
        C{creator} (BACKEND's certificate by default) whose application is
        C{server}; nothing is pumped yet.  With C{creator} False the server
        is C{server} itself, without TLS.
        """
        host, port, factory, timeout, _ = self.reactor.tcpClients.pop()
        self.assertEqual((host, port, timeout), ("127.0.0.1", 8443, 5.0))
        client = factory.buildProtocol(IPv4Address("TCP", host, port))
        app = server if server is not None else ServerApp()
        if creator is False:
            server_protocol: Protocol = app
        else:
            server_protocol = TLSMemoryBIOFactory(
                creator or ServerTLS([BACKEND]),
                False,
                Factory.forProtocol(lambda: app),
                clock=self.reactor,
            ).buildProtocol(None)
        self.client_io = AbortRecordingTransport(client, isServer=False)
        pump = iosim.connect(
            server_protocol,
            iosim.makeFakeServer(server_protocol),
            client,
            self.client_io,
            greet=False,
            clock=self.reactor,
        )
        return pump, app


class HandshakeEndpointTests(_MemoryCase):
    def test_connect_fires_only_after_the_handshake(self) -> None:
        """The TCP connection alone does not complete the connect; once it
        does, the protocol was connected after the handshake, with the
        server's certificate known."""
        app = App()
        connecting = self.connect(app)
        pump, _ = self.accept()
        self.assertNoResult(connecting)
        self.assertFalse(app.made)
        while not connecting.called:
            self.assertFalse(app.made)
            self.assertTrue(pump.pump(), "the pump stopped before the handshake")
        self.assertIs(self.successResultOf(connecting), app)
        self.assertTrue(app.made)
        self.assertIsNotNone(app.certificate_at_made)
        self.assertEqual(app.certificate_at_made.to_cryptography(), BACKEND.certificate)
        self.assertIsInstance(app.transport, TLSMemoryBIOProtocol)

    def test_protocol_can_write_from_connection_made(self) -> None:
        """What the protocol writes in connectionMade is encrypted and
        reaches the server."""
        app = App(greeting=b"hello backend")
        connecting = self.connect(app)
        pump, server = self.accept()
        pump.flush()
        self.successResultOf(connecting)
        self.assertEqual(server.received, b"hello backend")  # type: ignore[attr-defined]

    def test_server_data_sent_right_after_the_handshake_arrives(self) -> None:
        """A server that speaks first (written before its handshake ends,
        or as it ends, over TLS 1.3 and 1.2) is heard by the protocol."""
        cases: Sequence[tuple[str, Any, ServerApp]] = [
            ("1.3 greeting", None, ServerApp(greeting=b"220 ready")),
            ("1.3 at handshake", None, ServerApp(after_handshake=b"220 ready")),
            ("1.2 greeting", tls12_server(BACKEND), ServerApp(greeting=b"220 ready")),
            (
                "1.2 at handshake",
                tls12_server(BACKEND),
                ServerApp(after_handshake=b"220 ready"),
            ),
        ]
        for name, creator, server in cases:
            app = App()
            connecting = self.connect(app)
            pump, _ = self.accept(server, creator)
            pump.flush()
            self.assertIs(self.successResultOf(connecting), app, name)
            self.assertEqual(app.received, b"220 ready", name)

    def test_handshake_listener_hears_of_the_handshake_after_connection(
        self,
    ) -> None:
        """A protocol that listens for the handshake is told, after its
        connectionMade."""
        app = ListeningApp()
        connecting = self.connect(app)
        pump, _ = self.accept()
        pump.flush()
        self.successResultOf(connecting)
        self.assertEqual(app.events, ["made", "handshake"])

    def test_close_after_the_handshake_reaches_the_protocol(self) -> None:
        """Once connected, the connection's end is the protocol's."""
        app = App()
        connecting = self.connect(app)
        pump, server = self.accept()
        pump.flush()
        self.successResultOf(connecting)
        server.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
        self.assertIsNotNone(app.lost)

    def test_wrong_name_fails_the_connect(self) -> None:
        """A trusted certificate for another name fails the connect with
        the verification error; the protocol is never connected."""
        app = App()
        connecting = self.connect(app, server_name="other.internal")
        pump, _ = self.accept()
        pump.flush()
        self.failureResultOf(connecting, VerificationError)
        self.assertFalse(app.made)
        self.assertIsNone(app.lost)

    def test_untrusted_ca_fails_the_connect(self) -> None:
        """A certificate from a CA not trusted fails the connect with the
        TLS error; the protocol is never connected."""
        app = App()
        connecting = self.connect(app, ca=self.other_ca_file)
        pump, _ = self.accept()
        pump.flush()
        self.failureResultOf(connecting, SSL.Error)
        self.assertFalse(app.made)

    def test_plain_text_server_fails_the_connect(self) -> None:
        """A server that does not speak TLS fails the connect."""
        app = App()
        connecting = self.connect(app)
        pump, _ = self.accept(PlainServer(), creator=False)
        pump.flush()
        self.failureResultOf(connecting, SSL.Error)
        self.assertFalse(app.made)

    def test_server_closing_during_the_handshake_fails_the_connect(self) -> None:
        """A server that closes before the handshake ends fails the connect
        with the connection's loss."""
        app = App()
        connecting = self.connect(app)
        pump, server = self.accept(Protocol(), creator=False)
        server.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
        self.failureResultOf(connecting, ConnectionDone, ConnectionLost)
        self.assertFalse(app.made)

    def test_refused_tcp_connect_fails_the_connect(self) -> None:
        """A refused TCP connection fails the connect with its error."""
        connecting = self.connect(App())
        iosim.ConnectionCompleter(self.reactor).failOnce(
            Failure(ConnectionRefusedError())
        )
        self.failureResultOf(connecting, ConnectionRefusedError)

    def test_cancel_before_the_tcp_connection_stops_connecting(self) -> None:
        """Cancelling while TCP connects cancels that connect."""
        app = App()
        connecting = self.connect(app)
        connector = self.reactor.connectors[0]
        connecting.cancel()
        self.assertTrue(connector.stoppedConnecting)  # type: ignore[attr-defined]
        self.failureResultOf(connecting, CancelledError, ConnectingCancelledError)
        self.assertFalse(app.made)

    def test_cancel_during_the_handshake_aborts_the_connection(self) -> None:
        """Cancelling after the TCP connection, with the handshake under
        way, aborts the connection; the protocol is never connected and the
        connection's later end changes nothing."""
        app = App()
        connecting = self.connect(app)
        pump, server = self.accept()
        pump.pump()  # the ClientHello reaches the server, which answers
        self.assertNoResult(connecting)
        connecting.cancel()
        self.failureResultOf(connecting, CancelledError)
        assert self.client_io is not None
        self.assertTrue(self.client_io.aborted)
        pump.flush()
        self.assertFalse(app.made)
        self.assertIsNone(app.lost)
        self.assertIsNotNone(server.lost)  # type: ignore[attr-defined]

    def test_cancel_after_the_connect_changes_nothing(self) -> None:
        """A connect that has succeeded is not undone by cancel."""
        app = App()
        connecting = self.connect(app)
        pump, _ = self.accept()
        pump.flush()
        connecting.cancel()
        self.assertIs(self.successResultOf(connecting), app)
        assert self.client_io is not None
        self.assertFalse(self.client_io.aborted)
        self.assertFalse(self.client_io.disconnecting)


class RecordingResolver(SynchronousResolver):
    """
    Resolves every name to 127.0.0.1, recording the names asked.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def resolveHostName(
        self, receiver: IResolutionReceiver, name: str, *args: Any, **kwargs: Any
    ) -> IHostResolution:
        self.names.append(name)
        return super().resolveHostName(receiver, name, *args, **kwargs)


class ClientEndpointTests(SynchronousTestCase):
    """client_endpoint picks the endpoint for an address."""

    def test_ipv4_literal_connects_directly(self) -> None:
        """An IPv4 address gets a TCP4 endpoint to it, with the timeout."""
        reactor = MemoryReactorClock()
        endpoint = client_endpoint(reactor, "192.0.2.10", 8080, 2.5)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(
            [(*c[:2], c[3]) for c in reactor.tcpClients], [("192.0.2.10", 8080, 2.5)]
        )

    def test_ipv6_literal_connects_directly(self) -> None:
        """An IPv6 address gets a TCP6 endpoint to it, with the timeout."""
        reactor = MemoryReactorClock()
        endpoint = client_endpoint(reactor, "2001:db8::5", 8080, 2.5)
        self.assertIsInstance(endpoint, TCP6ClientEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(
            [(*c[:2], c[3]) for c in reactor.tcpClients],
            [("2001:db8::5", 8080, 2.5)],
        )

    def test_hostname_is_resolved_at_each_connect(self) -> None:
        """A hostname gets a HostnameEndpoint that resolves it per connect."""
        reactor = MemoryReactorClock()
        resolver = RecordingResolver()
        reactor.installNameResolver(resolver)
        endpoint = client_endpoint(reactor, "backend.internal", 8080, 2.5)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(resolver.names, ["backend.internal", "backend.internal"])
        self.assertEqual(
            [c[:2] for c in reactor.tcpClients],
            [("127.0.0.1", 8080), ("127.0.0.1", 8080)],
        )
        for call in reactor.getDelayedCalls():
            call.cancel()

    def test_tls_wraps_each_kind(self) -> None:
        """With tls every kind of address gets a HandshakeEndpoint."""
        creator: IOpenSSLClientConnectionCreator = backend_tls(
            "backend.internal", verify=False
        )
        for host in ("192.0.2.10", "2001:db8::5", "backend.internal"):
            endpoint = client_endpoint(MemoryReactorClock(), host, 443, 1.0, creator)
            self.assertIsInstance(endpoint, HandshakeEndpoint, host)


class ReactorEndpointsTests(SynchronousTestCase):
    """reactor_endpoints: the one endpoint_for of traffic and checks."""

    def test_connects_to_each_backend_with_the_timeout_of_the_moment(
        self,
    ) -> None:
        """Each connect goes to the backend's address; a callable timeout is
        read at each connect."""
        reactor = MemoryReactorClock()
        timeouts = [3.0, 7.0]
        endpoint_for = reactor_endpoints(reactor, lambda: timeouts.pop(0))
        endpoint_for(Backend("192.0.2.10", 8080)).connect(Factory.forProtocol(Protocol))
        endpoint_for(Backend("2001:db8::5", 81)).connect(Factory.forProtocol(Protocol))
        self.assertEqual(
            [(*c[:2], c[3]) for c in reactor.tcpClients],
            [("192.0.2.10", 8080, 3.0), ("2001:db8::5", 81, 7.0)],
        )

    def test_a_check_port_replaces_the_traffic_port(self) -> None:
        """With port, the backend's host is connected to on that port."""
        reactor = MemoryReactorClock()
        endpoint_for = reactor_endpoints(reactor, 1.0, port=9000)
        endpoint_for(Backend("192.0.2.10", 8080)).connect(Factory.forProtocol(Protocol))
        self.assertEqual(
            [(*c[:2], c[3]) for c in reactor.tcpClients], [("192.0.2.10", 9000, 1.0)]
        )

    def test_preface_and_tls_of_the_backend(self) -> None:
        """A preface wraps the endpoint in PrefaceEndpoint, a backend's TLS
        in HandshakeEndpoint."""
        reactor = MemoryReactorClock()
        endpoint_for = reactor_endpoints(reactor, 1.0)
        plain = endpoint_for(Backend("192.0.2.10", 80), b"PROXY UNKNOWN\r\n")
        self.assertIsInstance(plain, PrefaceEndpoint)
        creator = backend_tls("backend.internal", verify=False)
        secure = endpoint_for(Backend("192.0.2.10", 443, tls=creator))
        self.assertIsInstance(secure, HandshakeEndpoint)


class LoopbackTests(TestCase):
    """Over real sockets on 127.0.0.1."""

    timeout = 10

    @inlineCallbacks
    def test_handshake_then_data_both_ways(self) -> Any:
        """Against a Twisted TLS server the connect fires with the protocol
        connected over a finished handshake, and data flows both ways."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        ca_file = str(directory / "ca.pem")
        CA.cert_pem.write_to_path(ca_file)
        server_creator: IOpenSSLServerConnectionCreator = ServerTLS([BACKEND])
        servers: list[ServerApp] = []

        class Echo(ServerApp):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data.upper())  # type: ignore[union-attr]

        def build() -> Protocol:
            servers.append(Echo(greeting=b"hi "))
            return servers[-1]

        port = yield TCP4ServerEndpoint(
            global_reactor, 0, interface="127.0.0.1"
        ).listen(TLSMemoryBIOFactory(server_creator, False, Factory.forProtocol(build)))
        self.addCleanup(port.stopListening)

        received: Deferred[bytes] = Deferred()
        lost: Deferred[None] = Deferred()

        class Client(App):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                if self.received.endswith(b"PING") and not received.called:
                    received.callback(self.received)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                super().connectionLost(reason)
                lost.callback(None)

        app = Client(greeting=b"ping")
        endpoint = client_endpoint(
            global_reactor,
            "127.0.0.1",
            port.getHost().port,
            5.0,
            backend_tls("backend.internal", ca=ca_file),
        )
        connected = yield endpoint.connect(Factory.forProtocol(lambda: app))
        self.assertIs(connected, app)
        self.assertIsNotNone(app.certificate_at_made)
        self.assertEqual((yield received), b"hi PING")
        app.transport.loseConnection()  # type: ignore[union-attr]
        yield lost
        for server in servers:
            if server.transport is not None:
                server.transport.loseConnection()  # type: ignore[union-attr]
