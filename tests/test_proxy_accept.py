"""Accepting and sending PROXY headers, driven by hand: the accept front on
string transports and a Clock, the TCP and HTTP proxies on fake endpoints."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rproxy._endpoints import PrefaceEndpoint
from rproxy._tracking import ConnectionTracker
from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.policy import PoolPolicy
from rproxy.proxyprotocol import ProxyHeader, encode, encode_local, parse
from rproxy.proxyprotocol.accept import ProxyHeaderFactory, ProxyHeaderProtocol
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect
from tests.tls_records import client_hello

V1 = b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 443\r\n"
V2 = encode("v2", ("2001:db8::9", 51000), ("2001:db8::1", 443))


class Recorder(Protocol):
    """An inner protocol that records what it is given."""

    def __init__(self) -> None:
        self.received = b""
        self.peer: Any = None
        self.host: Any = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class AcceptTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = Factory.forProtocol(Recorder)
        self.connections = ConnectionTracker()
        self.factory = ProxyHeaderFactory(
            self.inner,
            ["192.0.2.0/24", "::1"],
            self.clock,
            connections=self.connections,
            timeout=3.0,
            listener="front",
        )
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def accept(
        self, peer: str = "192.0.2.7"
    ) -> tuple[ProxyHeaderProtocol, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", peer, 40000))
        transport = HalfCloseTransport(peer)
        return proto, connect(proto, transport)

    def logged(self) -> list[str]:
        return [
            str(e.get("reason"))
            for e in self.events
            if e.get("log_namespace") == "rproxy.proxyprotocol" and "reason" in e
        ]

    def test_v1_header_hands_the_connection_over_with_its_addresses(self) -> None:
        """After a v1 header, the inner protocol owns the transport, sees the
        carried addresses as peer and host, and gets the bytes after it."""
        proto, transport = self.accept()
        proto.dataReceived(V1 + b"hello")
        inner = proto.inner
        self.assertIsInstance(inner, Recorder)
        self.assertIs(transport.protocol, inner)
        self.assertEqual(inner.peer, IPv4Address("TCP", "203.0.113.9", 51000))
        self.assertEqual(inner.host, IPv4Address("TCP", "198.51.100.1", 443))
        self.assertEqual(transport.getPeer().host, "203.0.113.9")
        self.assertEqual(inner.received, b"hello")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.connections), 0)

    def test_v2_header_fed_byte_by_byte(self) -> None:
        """A v2 header arriving a byte at a time is read whole, then handed
        over with its IPv6 addresses."""
        proto, _ = self.accept()
        for index in range(len(V2)):
            self.assertIsNone(proto.inner)
            proto.dataReceived(V2[index : index + 1])
        self.assertEqual(proto.inner.peer, IPv6Address("TCP", "2001:db8::9", 51000))
        self.assertEqual(len(self.connections), 0)

    def test_untrusted_peer_is_closed_at_once(self) -> None:
        """A peer outside trusted_proxies is closed before anything is read,
        and the listener's protocol is never built."""
        proto, transport = self.accept("198.51.100.50")
        self.assertTrue(transport.disconnecting)
        proto.dataReceived(V1 + b"hello")
        self.assertIsNone(proto.inner)
        self.assertEqual(proto.ended, "untrusted")
        self.assertEqual(self.logged(), ["not in trusted_proxies"])

    def test_malformed_header_is_closed(self) -> None:
        """A header with a bad address closes the connection."""
        proto, transport = self.accept()
        proto.dataReceived(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(proto.inner)
        self.assertIn("bad PROXY header", self.logged()[0])

    def test_absent_header_is_refused_at_the_first_byte(self) -> None:
        """A client that starts with HTTP is closed on its first byte."""
        proto, transport = self.accept()
        proto.dataReceived(b"G")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(proto.ended, "bad header")

    def test_header_not_whole_in_time_is_closed(self) -> None:
        """Part of a header and then nothing: closed after the timeout."""
        proto, transport = self.accept()
        proto.dataReceived(V1[:10])
        self.clock.advance(2.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(proto.ended, "timeout")
        self.assertIn("no whole PROXY header in 3.0s", self.logged()[0])

    def test_local_and_unknown_keep_the_real_peer(self) -> None:
        """A v2 LOCAL or v1 UNKNOWN header hands over with the real peer."""
        for header in (encode_local("v2"), encode_local("v1")):
            proto, transport = self.accept()
            proto.dataReceived(header)
            self.assertEqual(proto.inner.peer.host, "192.0.2.7")
            transport.loseConnection()

    def test_shutdown_closes_a_connection_still_sending_its_header(self) -> None:
        """Draining the listener closes connections that have sent no
        whole header; it does not wait for them."""
        _, transport = self.accept()
        self.assertEqual(len(self.connections), 1)
        drained = self.connections.drain(10.0, self.clock)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.connections), 0)
        self.successResultOf(drained)

    def test_client_leaving_early_stops_the_timer(self) -> None:
        """A client that closes mid-header leaves no timer behind."""
        proto, transport = self.accept()
        proto.dataReceived(V1[:5])
        transport.loseConnection()
        self.assertEqual(len(self.connections), 0)


class ThroughProxiesTests(SynchronousTestCase):
    """The accept front in front of the real TCP and HTTP proxies."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints = FakeEndpoints()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def front(self, inner: Any) -> tuple[ProxyHeaderProtocol, HalfCloseTransport]:
        factory = ProxyHeaderFactory(
            inner, ["192.0.2.7"], self.clock, connections=inner.connections
        )
        proto = factory.buildProtocol(None)
        return proto, connect(proto, HalfCloseTransport("192.0.2.7"))

    def test_http_backend_sees_the_carried_address_in_x_forwarded_for(self) -> None:
        """The carried client address, not the sender's, goes into
        X-Forwarded-For."""
        pool = Pool("web", [Backend("127.0.0.1", 8001)], now=self.clock.seconds)
        factory = HTTPProxyFactory(
            Registry([pool]),
            self.clock,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
            endpoint_for=self.endpoints,
        )
        proto, client = self.front(factory)
        proto.dataReceived(V1 + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server = self.endpoints.last.succeed()
        self.assertIn(b"X-Forwarded-For: 203.0.113.9\r\n", server.value())
        self.assertEqual(self.endpoints.last.preface, b"")
        client.loseConnection()
        factory.keep_alive.close_all()

    def test_tcp_pool_sends_the_carried_addresses_on(self) -> None:
        """A send_proxy TCP pool behind an accepting listener announces the
        carried client and destination; bytes after the header follow it."""
        pool = Pool(
            "db",
            [Backend("127.0.0.1", 9001)],
            now=self.clock.seconds,
            policy=PoolPolicy(send_proxy="v1"),
        )
        factory = TCPProxyFactory(pool, self.clock, endpoint_for=self.endpoints)
        proto, client = self.front(factory)
        proto.dataReceived(V1 + b"early bytes")
        self.assertEqual(self.endpoints.last.preface, V1)
        server = self.endpoints.last.succeed()
        self.assertEqual(server.value(), b"early bytes")
        client.loseConnection()

    def test_sni_router_reads_the_hello_after_the_header(self) -> None:
        """Behind the header, an SNI listener reads the ClientHello from the
        bytes that followed it and routes by name; the pool's header names
        the carried client."""
        pool = Pool(
            "web",
            [Backend("127.0.0.1", 9443)],
            now=self.clock.seconds,
            policy=PoolPolicy(send_proxy="v2"),
        )
        factory = SNIProxyFactory(
            Registry([pool]),
            SNIRoutes.from_routes([("a.example", "web")]),
            self.clock,
            endpoint_for=self.endpoints,
        )
        proto, client = self.front(factory)
        hello = client_hello("a.example")
        proto.dataReceived(V1 + hello)
        header = parse(self.endpoints.last.preface)
        assert isinstance(header, ProxyHeader)
        self.assertEqual(header.source, ("203.0.113.9", 51000))
        server = self.endpoints.last.succeed()
        self.assertEqual(server.value(), hello)
        client.loseConnection()


class SendTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints = FakeEndpoints()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tcp_pool_without_send_proxy_sends_no_header(self) -> None:
        """Off by default: the endpoint is asked for no preface."""
        pool = Pool("db", [Backend("127.0.0.1", 9001)], now=self.clock.seconds)
        factory = TCPProxyFactory(pool, self.clock, endpoint_for=self.endpoints)
        proto = factory.buildProtocol(None)
        client = connect(proto, HalfCloseTransport())
        self.assertEqual(self.endpoints.last.preface, b"")
        self.endpoints.last.succeed()
        client.loseConnection()

    def test_tcp_pool_header_names_client_and_listener_address(self) -> None:
        """Source is the client's address, destination the listener's."""
        pool = Pool(
            "db",
            [Backend("127.0.0.1", 9001)],
            now=self.clock.seconds,
            policy=PoolPolicy(send_proxy="v2"),
        )
        factory = TCPProxyFactory(pool, self.clock, endpoint_for=self.endpoints)
        proto = factory.buildProtocol(None)
        client = connect(proto, HalfCloseTransport("192.0.2.7", 40000))
        header = parse(self.endpoints.last.preface)
        assert isinstance(header, ProxyHeader)
        self.assertEqual(header.version, 2)
        self.assertEqual(header.source, ("192.0.2.7", 40000))
        self.assertEqual(header.destination, ("10.0.0.1", 12345))
        self.endpoints.last.succeed()
        client.loseConnection()

    def http_factory(self) -> HTTPProxyFactory:
        pool = Pool(
            "web",
            [Backend("127.0.0.1", 8001)],
            now=self.clock.seconds,
            policy=PoolPolicy(send_proxy="v1"),
        )
        return HTTPProxyFactory(
            Registry([pool]),
            self.clock,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
            endpoint_for=self.endpoints,
        )

    def get(self, proto: Any) -> HalfCloseTransport | None:
        """One GET on C{proto}; the backend transport if a new one was made."""
        before = len(self.endpoints.attempts)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server = None
        if len(self.endpoints.attempts) > before:
            server = self.endpoints.last.succeed()
        upstream = proto.exchange.upstream
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return server

    def test_http_backend_connection_serves_only_its_client(self) -> None:
        """A backend connection that announced client A carries A's later
        requests, is never given to client B (who gets its own, with its own
        header), and closes when A leaves."""
        factory = self.http_factory()
        a = factory.buildProtocol(None)
        a_client = connect(a, HalfCloseTransport("192.0.2.1", 1001))
        b = factory.buildProtocol(None)
        b_client = connect(b, HalfCloseTransport("192.0.2.2", 1002))

        a_server = self.get(a)
        self.assertIsNotNone(a_server)
        self.assertTrue(
            self.endpoints.last.preface.startswith(b"PROXY TCP4 192.0.2.1 ")
        )
        b_server = self.get(b)
        self.assertIsNotNone(b_server)
        self.assertTrue(
            self.endpoints.last.preface.startswith(b"PROXY TCP4 192.0.2.2 ")
        )
        self.assertIsNone(self.get(a), "A's second request reuses A's connection")
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertEqual(
            factory.keep_alive.idle_count(factory.registry.get("web").backends[0]), 0
        )

        assert a_server is not None and b_server is not None
        a_client.loseConnection()
        self.assertTrue(a_server.disconnecting)
        self.assertFalse(b_server.disconnecting)
        b_client.loseConnection()
        self.assertTrue(b_server.disconnecting)

    def test_own_connection_expires_after_the_idle_timeout(self) -> None:
        """A client's kept connection older than the pool's idle timeout is
        closed, and a new one made."""
        factory = self.http_factory()
        a = factory.buildProtocol(None)
        a_client = connect(a, HalfCloseTransport("192.0.2.1", 1001))
        first = self.get(a)
        assert first is not None
        self.clock.advance(30.0)
        self.assertIsNotNone(self.get(a))
        self.assertTrue(first.disconnecting)
        a_client.loseConnection()


class PrefaceEndpointTests(SynchronousTestCase):
    def test_preface_goes_first_and_the_protocol_gets_the_real_transport(
        self,
    ) -> None:
        """The preface is written before the protocol's connectionMade, the
        protocol writes to the real transport, and events reach it."""
        endpoints = FakeEndpoints()
        backend = Backend("127.0.0.1", 9001)
        endpoint = PrefaceEndpoint(endpoints(backend), b"PROXY UNKNOWN\r\n")

        class Greeter(Recorder):
            def connectionMade(self) -> None:
                super().connectionMade()
                self.transport.write(b"hi")  # type: ignore[union-attr]

        connected = endpoint.connect(Factory.forProtocol(Greeter))
        transport = endpoints.last.succeed()
        protocol = self.successResultOf(connected)
        self.assertIsInstance(protocol, Greeter)
        self.assertIs(protocol.transport, transport)
        self.assertEqual(transport.value(), b"PROXY UNKNOWN\r\nhi")
        endpoints.last.protocol.dataReceived(b"back")
        self.assertEqual(protocol.received, b"back")
