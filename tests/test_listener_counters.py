"""What TCP and SNI listeners count for the admin interface: connections
accepted (once each, across an SNI hand-over) and bytes moved, driven by hand
with fake endpoints and string transports."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.backends import Backend, Pool, Registry
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect
from tests.tls_records import client_hello

CLIENT = IPv4Address("TCP", "192.0.2.7", 4000)


def accepted(factory: TCPProxyFactory | SNIProxyFactory) -> int:
    return factory.stats.connections_closed + len(factory.connections)


class TCPCounterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 9001)
        self.endpoints = FakeEndpoints()
        self.factory = TCPProxyFactory(
            Pool("db", [self.backend], now=self.clock.seconds),
            self.clock,
            endpoint_for=self.endpoints,
        )

    def test_connections_and_bytes_are_counted_when_they_end(self) -> None:
        """
        Two connections: accepted counts both while open; their bytes join
        the listener's totals as each ends.
        """
        stats = self.factory.stats
        pairs = []
        for payload in (b"abc", b"defgh"):
            proto = self.factory.buildProtocol(CLIENT)
            client = connect(proto, HalfCloseTransport())
            server = self.endpoints.last.succeed()
            proto.dataReceived(payload)
            assert proto.peer is not None
            proto.peer.dataReceived(b"x" * 10)
            pairs.append((client, server))
        self.assertEqual((accepted(self.factory), stats.connections_closed), (2, 0))
        self.assertEqual((stats.bytes_in, stats.bytes_out), (0, 0))
        self.assertEqual((self.backend.bytes_in, self.backend.bytes_out), (8, 20))
        for client, server in pairs:
            client.loseConnection()
            server.loseConnection()
        self.assertEqual((accepted(self.factory), stats.connections_closed), (2, 2))
        self.assertEqual((stats.bytes_in, stats.bytes_out), (8, 20))
        self.assertEqual(stats.requests, [0] * 6)

    def test_no_backend_still_counts_the_connection(self) -> None:
        """A client closed for want of a backend is still a connection."""
        self.factory.pool.remove(self.backend.name)
        proto = self.factory.buildProtocol(CLIENT)
        connect(proto, HalfCloseTransport())
        self.assertEqual(accepted(self.factory), 1)
        self.assertEqual(self.factory.stats.connections_closed, 1)


class SNICounterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 9001)
        self.endpoints = FakeEndpoints()
        self.factory = SNIProxyFactory(
            Registry([Pool("db", [self.backend], now=self.clock.seconds)]),
            SNIRoutes.from_routes([("db.example.com", "db")]),
            self.clock,
            endpoint_for=self.endpoints,
        )

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handed_over_connection_counts_once(self) -> None:
        """
        A connection routed to a pool is counted once, by the listener, with
        its ClientHello among the bytes in.
        """
        hello = client_hello("db.example.com")
        proto = self.factory.buildProtocol(CLIENT)
        client = connect(proto, HalfCloseTransport())
        proto.dataReceived(hello)
        server = self.endpoints.last.succeed()
        self.assertEqual(accepted(self.factory), 1)
        client.loseConnection()
        server.loseConnection()
        stats = self.factory.stats
        self.assertEqual((accepted(self.factory), stats.connections_closed), (1, 1))
        self.assertEqual(stats.bytes_in, len(hello))

    def test_refused_connection_counts_once(self) -> None:
        """A name no route serves: closed before any pool, counted once."""
        proto = self.factory.buildProtocol(CLIENT)
        connect(proto, HalfCloseTransport())
        proto.dataReceived(client_hello("other.example.org"))
        self.assertEqual(accepted(self.factory), 1)
        self.assertEqual(self.factory.stats.connections_closed, 1)
