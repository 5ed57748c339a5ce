"""What the HTTP front counts for the admin interface (per listener and per
backend), and how draining meets backend keep-alive; driven by hand with
string transports, fake endpoints and a Clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.balancing import RoundRobin
from rproxy.http.h1 import H1Connection
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.stats import LATENCY_BUCKETS
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class _Case(SynchronousTestCase):
    """Two backends round-robin behind fake endpoints, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.b0 = Backend("127.0.0.1", 8001, name="b0")
        self.b1 = Backend("127.0.0.1", 8002, name="b1")
        self.pool = Pool(
            "web", [self.b0, self.b1], RoundRobin(), now=self.clock.seconds
        )
        self.endpoints = FakeEndpoints()
        self.factory = HTTPProxyFactory(
            Registry([self.pool]),
            self.clock,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
            endpoint_for=self.endpoints,
        )

    def tearDown(self) -> None:
        self.factory.keep_alive.close_all()

    def client(self) -> tuple[H1Connection, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return proto, connect(proto, HalfCloseTransport())


class CounterTests(_Case):
    def test_a_response_counts_for_the_listener_and_the_backend(self) -> None:
        """
        One proxied 200: the listener counts a 2xx request and the body
        bytes, the backend a 2xx response, its bytes and its latency.
        """
        proto, transport = self.client()
        proto.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        )
        server = self.endpoints.last.succeed()
        self.clock.advance(0.03)
        server.protocol.dataReceived(OK)  # type: ignore[union-attr]
        stats = self.factory.stats
        self.assertEqual(stats.requests, [0, 1, 0, 0, 0, 0])
        self.assertEqual((stats.bytes_in, stats.bytes_out), (3, 5))
        self.assertEqual(self.b0.responses, [0, 1, 0, 0, 0, 0])
        self.assertEqual((self.b0.bytes_in, self.b0.bytes_out), (3, 5))
        self.assertEqual(self.b0.latency.count, 1)
        self.assertAlmostEqual(self.b0.latency.sum, 0.03)
        # 0.03 s lies in the (0.025, 0.05] bucket.
        index = LATENCY_BUCKETS.index(0.05)
        self.assertEqual(self.b0.latency.counts[index], 1)
        self.assertEqual(self.b1.responses, [0] * 6)
        # Still open: counted as closed only when it closes.
        self.assertEqual(
            (stats.connections_closed, len(self.factory.connections)), (0, 1)
        )
        transport.loseConnection()
        self.assertEqual(
            (stats.connections_closed, len(self.factory.connections)), (1, 0)
        )

    def test_backend_errors_count_by_class(self) -> None:
        """A backend's 404 and 503 count as its 4xx and 5xx."""
        for head in (b"HTTP/1.1 404 No\r\n", b"HTTP/1.1 503 Busy\r\n"):
            proto, transport = self.client()
            proto.dataReceived(GET)
            server = self.endpoints.last.succeed()
            server.protocol.dataReceived(head + b"Content-Length: 0\r\n\r\n")  # type: ignore[union-attr]
            transport.loseConnection()
        self.assertEqual(self.factory.stats.requests, [0, 0, 0, 1, 1, 0])
        self.assertEqual(self.b0.responses, [0, 0, 0, 1, 0, 0])
        self.assertEqual(self.b1.responses, [0, 0, 0, 0, 1, 0])

    def test_no_response_from_the_backend_counts_as_none(self) -> None:
        """
        A refused connect to each backend: the client gets a 502 (a 5xx
        for the listener), and the last backend tried counts a request with
        no response.
        """
        proto, transport = self.client()
        proto.dataReceived(GET)
        self.endpoints.last.fail(ConnectionRefusedError())
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(self.factory.stats.requests, [0, 0, 0, 0, 1, 0])
        self.assertEqual(self.b1.responses, [0, 0, 0, 0, 0, 1])
        self.assertEqual(self.b0.responses, [0] * 6)
        self.assertEqual((self.b0.failures_total, self.b1.failures_total), (1, 1))
        self.assertEqual(self.b1.latency.count, 0)

    def test_local_answers_count_for_the_listener_only(self) -> None:
        """A malformed request's 400 is the listener's; no backend counts it."""
        proto, _ = self.client()
        proto.dataReceived(b"GET /\r\n\r\n")
        self.assertEqual(self.factory.stats.requests, [0, 0, 0, 1, 0, 0])
        self.assertEqual(self.b0.responses, [0] * 6)
        self.assertEqual(self.factory.stats.connections_closed, 1)

    def test_client_leaving_before_the_response_counts_no_response(self) -> None:
        """
        A client that leaves while its request is with the backend: a 499
        (4xx) for the listener, no response for the backend.
        """
        proto, transport = self.client()
        proto.dataReceived(GET)
        self.endpoints.last.succeed()
        transport.loseConnection()
        self.assertEqual(self.factory.stats.requests, [0, 0, 0, 1, 0, 0])
        self.assertEqual(self.b0.responses, [0, 0, 0, 0, 0, 1])
        self.assertEqual(self.b0.active, 0)


class DrainKeepAliveTests(_Case):
    """Draining and disabling with backend keep-alive connections."""

    def test_idle_kept_alive_connection_holds_no_active(self) -> None:
        """
        After a keep-alive response the backend connection waits in the
        pool, but the backend has no active request, so draining it
        disables it at once.
        """
        proto, _transport = self.client()
        proto.dataReceived(GET)
        self.endpoints.last.succeed().protocol.dataReceived(OK)  # type: ignore[union-attr]
        self.assertEqual(self.factory.keep_alive.idle_count(self.b0), 1)
        self.assertEqual(self.b0.active, 0)
        self.pool.set_admin(self.b0, AdminState.DRAINING, "test")
        self.assertIs(self.b0.state, BackendState.DISABLED)

    def test_draining_backend_is_disabled_and_its_connection_closed(self) -> None:
        """
        Drained while a request is in flight: the backend stays draining
        until the response ends, then is disabled, and the backend
        connection is closed instead of kept for reuse.
        """
        proto, _transport = self.client()
        proto.dataReceived(GET)
        server = self.endpoints.last.succeed()
        self.pool.set_admin(self.b0, AdminState.DRAINING, "test")
        self.assertIs(self.b0.state, BackendState.DRAINING)
        server.protocol.dataReceived(OK)  # type: ignore[union-attr]
        self.assertIs(self.b0.state, BackendState.DISABLED)
        self.assertEqual(self.b0.reason, "drained")
        self.assertEqual(self.factory.keep_alive.idle_count(self.b0), 0)
        self.assertTrue(server.disconnecting)
        # The client's own keep-alive connection goes on, to the other backend.
        proto.dataReceived(GET)
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertIs(self.endpoints.last.backend, self.b1)

    def test_disabled_backends_idle_connection_is_not_reused(self) -> None:
        """
        A backend disabled while a connection to it idles in the keep-alive
        pool gets no new request on it; once enabled again, it does.
        """
        proto, _ = self.client()
        proto.dataReceived(GET)
        first = self.endpoints.last.succeed()
        first.protocol.dataReceived(OK)  # type: ignore[union-attr]
        self.pool.set_admin(self.b0, AdminState.DISABLED, "test")
        proto.dataReceived(GET)
        second = self.endpoints.last.succeed()
        second.protocol.dataReceived(OK)  # type: ignore[union-attr]
        proto.dataReceived(GET)  # b1's kept-alive connection, reused
        second.protocol.dataReceived(OK)  # type: ignore[union-attr]
        self.assertEqual(
            [a.backend.name for a in self.endpoints.attempts], ["b0", "b1"]
        )
        self.assertEqual(first.value().count(b"GET /x"), 1)
        self.assertEqual(second.value().count(b"GET /x"), 2)
        self.assertEqual(self.b0.responses, [0, 1, 0, 0, 0, 0])
        self.assertEqual(self.b1.responses, [0, 2, 0, 0, 0, 0])
        self.pool.set_admin(self.b0, AdminState.ENABLED, "test")
        for _ in range(2):  # round robin: b0 within two picks
            proto.dataReceived(GET)
            (second if self.b1.active else first).protocol.dataReceived(OK)  # type: ignore[union-attr]
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertEqual(first.value().count(b"GET /x"), 2)
        self.assertEqual(second.value().count(b"GET /x"), 3)
