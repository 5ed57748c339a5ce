"""SNI passthrough over real sockets on 127.0.0.1: TLS clients reach the pool
their server name routes to and complete TLS with that backend's own
certificate; the proxy never decrypts.

The proxy is a L{ProxyService} built from a TOML config in this process;
certificates come from a C{trustme} CA; backends are Twisted TLS servers
that greet with their name and echo, plus one plain TCP backend for raw
byte-exactness checks.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import trustme
from cryptography import x509
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from rproxy import tcp
from rproxy._fastwrite import send_now
from rproxy.config import parse_config
from rproxy.service import ProxyService
from rproxy.tcp import TCPFrontProtocol
from tests.integration.helpers import Exchange, greeter_factory
from tests.tls_records import openssl_client_hello

PAYLOAD = os.urandom(1 << 20)


class Abandoned(Protocol):
    """Sends some bytes and waits, until the peer closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


@implementer(IOpenSSLContextFactory)
class ServerContext:
    """A Twisted context factory serving a C{trustme} certificate."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        cert.configure_cert(self.context)

    def getContext(self) -> SSL.Context:
        return self.context


class TLSPassthroughTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.backends = {
            "db": greeter_factory("db"),
            "web": greeter_factory("web"),
            "raw": greeter_factory("raw"),
        }
        ports = {
            "db": self.listen_tls("db", "db.example.com"),
            "web": self.listen_tls("web", "www.example.com"),
            "raw": self.listen("raw"),
        }
        pools = "".join(
            f'[pools.{name}]\nbackends = ["127.0.0.1:{port}"]\n'
            f'[pools.{name}.health]\ncheck = "none"\n'
            for name, port in ports.items()
        )
        text = f"""
[timeouts]
client_hello = 0.3
{pools}
[[listeners]]
name = "front"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
sni_routes = {{ "db.example.com" = "db", "*.example.com" = "web", \
"raw.test" = "raw" }}
"""
        config = parse_config(tomllib.loads(text), "test.toml")
        self.service = ProxyService(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        listener = self.service.listeners["front"]
        assert listener.port is not None
        self.proxy_port = listener.port.getHost().port
        self.factory = listener.factory
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def listen(self, name: str) -> int:
        port = reactor.listenTCP(0, self.backends[name], interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def listen_tls(self, name: str, server_name: str) -> int:
        cert = self.ca.issue_cert(server_name, common_name=server_name)
        port = reactor.listenSSL(
            0, self.backends[name], ServerContext(cert), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def connect_tls(self, server_name: str) -> Deferred[Exchange]:
        """A TLS client asking for C{server_name}, trusting only the CA."""
        trust = Certificate.loadPEM(self.ca.cert_pem.bytes())
        options = optionsForClientTLS(server_name, trustRoot=trust)
        plain = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        client = Exchange(b"ping", half_close=False)
        connecting = wrapClientTLS(options, plain).connect(
            Factory.forProtocol(lambda: client)
        )
        return connecting.addCallback(lambda _: client)

    def connect_raw(self, protocol: Protocol) -> Deferred[Any]:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        return endpoint.connect(Factory.forProtocol(lambda: protocol))

    def fronts(self) -> list[Any]:
        return list(self.factory.connections._open)

    @inlineCallbacks
    def test_each_name_reaches_its_pool_with_its_own_certificate(self) -> Any:
        """SNI picks the pool; the client verifies that backend's certificate."""
        for server_name, pool, certified in [
            ("db.example.com", "db", "db.example.com"),
            ("www.example.com", "web", "www.example.com"),
        ]:
            client = yield self.connect_tls(server_name)
            greeting = f"{pool}\n".encode()
            yield client.received_at_least(len(greeting) + 4)
            self.assertEqual(b"".join(client.received), greeting + b"ping")
            peer = client.transport.getPeerCertificate()  # type: ignore[union-attr]
            cert = peer.to_cryptography()
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
            self.assertEqual(names, [certified])
            common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            self.assertEqual([a.value for a in common], [certified])
            client.transport.loseConnection()  # type: ignore[union-attr]
            yield client.done
        self.assertEqual(
            [self.backends[name].connections for name in ("db", "web")],  # type: ignore[attr-defined]
            [1, 1],
        )

    @inlineCallbacks
    def test_unrouted_name_is_closed_without_a_backend(self) -> Any:
        """No route and no default pool: the handshake ends, no backend sees it."""
        client = yield self.connect_tls("other.org")
        reply = yield client.done
        self.assertEqual(reply, b"")
        self.assertEqual(
            sum(b.connections for b in self.backends.values()),  # type: ignore[attr-defined]
            0,
        )
        self.assertIn(
            "no route for 'other.org' and no default pool",
            [e.get("reason") for e in self.events],
        )

    @inlineCallbacks
    def test_truncated_client_hello_is_closed_after_the_timeout(self) -> Any:
        """20 bytes of a real ClientHello, socket kept open: closed at 0.3 s."""
        hello = openssl_client_hello(b"db.example.com")
        client = Abandoned(hello[:20])
        started = reactor.seconds()
        yield self.connect_raw(client)
        yield client.lost
        self.assertGreaterEqual(reactor.seconds() - started, 0.25)
        self.assertIn(
            "no whole ClientHello in 0.3s (20 bytes received)",
            [e.get("reason") for e in self.events],
        )
        self.assertEqual(self.backends["db"].connections, 0)  # type: ignore[attr-defined]

    @inlineCallbacks
    def relay_raw(self) -> Any:
        """
        A ClientHello for raw.test and a mebibyte right behind it, echoed
        byte for byte by a plain backend; returns whether the pair was
        spliced once all had arrived.
        """
        hello = openssl_client_hello(b"raw.test")
        client = Exchange(hello + PAYLOAD, half_close=False)
        yield self.connect_raw(client)
        expected = b"raw\n" + hello + PAYLOAD
        yield client.received_at_least(len(expected))
        (front,) = self.fronts()
        self.assertIsInstance(front, TCPFrontProtocol)
        spliced = front._splicer is not None
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        reply = yield client.done
        self.assertEqual(reply, expected)
        self.assertEqual(front.bytes_in, len(hello) + len(PAYLOAD))
        return spliced

    @inlineCallbacks
    def test_hello_and_stream_are_byte_exact_when_spliced(self) -> Any:
        """The hello leaves at once, then splice(2) carries the rest in order."""
        sent: list[bool] = []

        def recording_send_now(transport: Any, data: bytes) -> bool:
            sent.append(send_now(transport, data))
            return sent[-1]

        self.patch(tcp, "send_now", recording_send_now)
        spliced = yield self.relay_raw()
        self.assertEqual(sent, [True])
        self.assertEqual(spliced, hasattr(os, "splice"))

    @inlineCallbacks
    def test_hello_and_stream_are_byte_exact_through_python(self) -> Any:
        """A hello still in the transport's buffer: relayed through Python."""

        def buffered(transport: Any, data: bytes) -> bool:
            transport.write(data)
            return False

        self.patch(tcp, "send_now", buffered)
        spliced = yield self.relay_raw()
        self.assertFalse(spliced)
