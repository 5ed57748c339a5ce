"""The HTTP front protocol driven by hand: string transports, fake endpoints,
a Clock."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.error import TimeoutError as TCPTimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.h1 import H1Connection
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.policy import PoolPolicy
from rproxy.testing import (
    Attempt,
    FakeEndpoints,
    HalfCloseTransport,
    captured_access,
    connect,
)

BAD_REQUESTS = [
    pytest.param(b"GET /\r\n\r\n", 400, id="http-0.9"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, id="http-2"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        id="differing-content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        id="chunked-not-last",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, id="obs-fold"
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", 400, id="bare-lf"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        431,
        id="too-many-headers",
    ),
    pytest.param(
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, id="long-target"
    ),
    pytest.param(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501, id="connect"),
]


class _ServerCase(SynchronousTestCase):
    """One pool of one backend behind fake endpoints, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 8001)
        self.pool = Pool(
            "web",
            [self.backend],
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=5.0, response_timeout=30.0),
        )
        self.endpoints = FakeEndpoints()
        self.factory = HTTPProxyFactory(
            Registry([self.pool]),
            self.clock,
            HTTPSettings(
                listener="front",
                router=Router(
                    [Route(pool="web", host="a"), Route(pool="web", host="b")]
                ),
                request_head_timeout=10.0,
                keep_alive_timeout=60.0,
            ),
            endpoint_for=self.endpoints,
        )

    def tearDown(self) -> None:
        self.factory.keep_alive.close_all()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def client(self) -> tuple[H1Connection, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return proto, connect(proto, HalfCloseTransport())

    def exchange(self, proto: H1Connection, request: bytes) -> HalfCloseTransport:
        proto.dataReceived(request)
        server = self.endpoints.last.succeed()
        return server


class ServerTests(_ServerCase):
    def test_bad_requests_get_their_status_and_reach_no_backend(self) -> None:
        """Every malformed request is answered and closed, never forwarded."""
        for raw, status in [(p.values[0], p.values[1]) for p in BAD_REQUESTS]:
            proto, transport = self.client()
            proto.dataReceived(raw)
            self.assertTrue(
                transport.value().startswith(b"HTTP/1.1 %d " % status),
                (raw, transport.value()),
            )
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])

    def test_unknown_host_is_404(self) -> None:
        """A request no route matches gets a 404."""
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))

    def test_a_slow_head_gets_408(self) -> None:
        """A head not complete within the head timeout is answered 408."""
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost:")
        self.clock.advance(10)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)

    def test_a_silent_connection_is_closed_without_an_answer(self) -> None:
        """A connection that sends nothing is closed after the head timeout."""
        _, transport = self.client()
        self.clock.advance(10)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_response_timeout_is_504(self) -> None:
        """A backend that does not answer in time gets the client a 504."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(server.value().startswith(b"GET / HTTP/1.1\r\n"))
        self.clock.advance(30)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 504 "))
        self.assertTrue(server.aborted)
        self.assertEqual(self.backend.active, 0)

    def test_keep_alive_then_idle_timeout(self) -> None:
        """After a response the connection waits keep_alive seconds for the
        next request; a new request then has the head timeout."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 1)
        self.clock.advance(59)
        proto.dataReceived(b"GET / HT")
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.value().endswith(b"408 Request Timeout\n"))
        server.loseConnection()

    def test_stale_pooled_connection_is_retried(self) -> None:
        """A GET on a reused connection the backend had closed is sent again
        on a new connection, and the backend is not blamed."""
        proto, transport = self.client()
        self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        first = self.endpoints.last.protocol
        first.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        proto.dataReceived(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.endpoints.attempts), 1)  # reused
        first.transport.finish(Failure(ConnectionDone()))
        self.assertEqual(len(self.endpoints.attempts), 2)
        second = self.endpoints.last.succeed()
        self.assertTrue(second.value().startswith(b"GET /again HTTP/1.1\r\n"))
        self.assertEqual(self.backend.failures_total, 0)
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        second.loseConnection()
        transport.loseConnection()

    def test_refused_connect_tries_the_next_backend(self) -> None:
        """A refused connect is retried elsewhere before any answer."""
        self.pool.add(Backend("127.0.0.1", 8002))
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.endpoints.last.succeed()
        self.endpoints.last.protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertEqual(self.backend.failures_total, 1)


class ConnectFailureStatusTests(_ServerCase):
    """What the client gets when no connect to a backend succeeded."""

    def request(self) -> HalfCloseTransport:
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        return transport

    def test_connect_timeout_is_504(self) -> None:
        """A connect that does not complete within the connect timeout gets
        the client a 504, as nginx answers, and is cancelled."""
        transport = self.request()
        self.clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertTrue(self.endpoints.last.cancelled)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 504 "))
        self.assertEqual(self.backend.failures_total, 1)

    def test_endpoint_timeout_is_504(self) -> None:
        """An endpoint's own connect timeout is a timeout too."""
        transport = self.request()
        self.endpoints.last.fail(TCPTimeoutError())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 504 "))

    def test_refused_is_502(self) -> None:
        """A refused connect gets the client a 502."""
        transport = self.request()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))

    def test_the_last_failure_decides(self) -> None:
        """After a timeout then a refusal the answer is 502; after a refusal
        then a timeout, 504."""
        self.pool.add(Backend("127.0.0.1", 8002))
        for first, second, status in (
            (TCPTimeoutError(), ConnectionRefusedError(), 502),
            (ConnectionRefusedError(), TCPTimeoutError(), 504),
        ):
            transport = self.request()
            self.endpoints.last.fail(first)
            self.endpoints.last.fail(second)
            self.assertTrue(
                transport.value().startswith(b"HTTP/1.1 %d " % status),
                transport.value(),
            )

    def test_no_healthy_backend_is_503(self) -> None:
        """With every backend down nothing is tried and the answer is 503."""
        self.pool.mark_down(self.backend, "test")
        transport = self.request()
        self.assertEqual(self.endpoints.attempts, [])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))


class PassiveHealthTests(_ServerCase):
    """HTTP failures count against a backend: after the pool's fall of
    them in a row it is marked down and traffic goes elsewhere."""

    def setUp(self) -> None:
        super().setUp()
        self.other = Backend("127.0.0.1", 8002)
        self.pool.add(self.other)

    def eject(self, misbehave: Callable[[Attempt], None]) -> None:
        """
        Send requests, each on its own connection, the first backend
        misbehaving as C{misbehave} makes it and the other answering, until
        the first is marked down; then check the next one goes to the other.
        """
        bad, good = self.backend, self.other
        for _ in range(2 * self.pool.fall):
            if not bad.healthy:
                break
            proto, transport = self.client()
            proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            attempt = self.endpoints.last
            attempt.succeed()
            if attempt.backend is bad:
                misbehave(attempt)
                self.assertTrue(transport.disconnecting)
            else:
                attempt.protocol.dataReceived(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
                transport.loseConnection()
        self.assertFalse(bad.healthy)
        self.assertEqual(bad.failures_total, self.pool.fall)
        self.assertEqual(good.failures_total, 0)
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIs(self.endpoints.last.backend, good)
        transport.loseConnection()

    def test_garbage_responses_mark_a_backend_down(self) -> None:
        """A backend answering something that is not HTTP is ejected."""

        def garbage(attempt: Attempt) -> None:
            attempt.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")

        self.eject(garbage)

    def test_resets_mid_response_mark_a_backend_down(self) -> None:
        """A backend resetting its connection mid-response is ejected."""

        def reset(attempt: Attempt) -> None:
            attempt.protocol.dataReceived(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"
            )
            assert attempt.transport is not None
            attempt.transport.finish(Failure(ConnectionLost()))

        self.eject(reset)

    def test_response_timeouts_mark_a_backend_down(self) -> None:
        """A backend that does not answer in time (504) is ejected."""

        def silent(attempt: Attempt) -> None:
            self.clock.advance(30)

        self.eject(silent)


class UpgradeAndContinueTests(_ServerCase):
    """Interim and switching responses."""

    def setUp(self) -> None:
        super().setUp()
        self.factory.settings = attrs.evolve(
            self.factory.settings, tunnel_timeout=100.0
        )

    def test_101_turns_the_pair_into_a_tunnel(self) -> None:
        """After a 101, bytes flow raw both ways, even right after the head."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nearly",
        )
        sent = server.value()
        self.assertIn(b"\r\nUpgrade: websocket\r\n", sent)
        self.assertIn(b"\r\nConnection: upgrade\r\n", sent)
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nfirst frame"
        )
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        )
        self.assertTrue(transport.value().endswith(b"\r\n\r\nfirst frame"))
        self.assertTrue(server.value().endswith(b"\r\n\r\nearly"))
        proto.dataReceived(b"\x81\x05hello")
        self.assertTrue(server.value().endswith(b"early\x81\x05hello"))
        upstream.dataReceived(b"\x81\x02hi")
        self.assertTrue(transport.value().endswith(b"\x81\x02hi"))
        self.clock.advance(99)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.aborted and server.aborted)
        self.assertEqual(self.backend.active, 0)

    def test_101_before_a_chunked_body_ended_waits_for_the_body(self) -> None:
        """A 101 that arrives mid-body does not cut the body short: the rest
        is re-chunked as announced, then the tunnel opens, with what the
        backend sent meanwhile held until then."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        )
        self.assertTrue(server.value().endswith(b"\r\n\r\n3\r\nhel\r\n"))
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\nNEW"
        )
        upstream.dataReceived(b"MORE")
        self.assertEqual(server.producerState, "paused")  # no more read
        proto.dataReceived(b"lo\r\n0\r\n\r\nRAW")
        self.assertTrue(
            server.value().endswith(b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\nRAW"),
            server.value(),
        )
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        )
        self.assertTrue(transport.value().endswith(b"\r\n\r\nNEWMORE"))
        self.assertEqual(server.producerState, "producing")
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(b"after")
        self.assertTrue(server.value().endswith(b"RAWafter"))
        server.loseConnection()
        self.assertTrue(transport.disconnecting)

    def test_101_mid_body_leaves_the_client_reading(self) -> None:
        """A client paused by a full backend connection when the 101 comes
        reads again once its body is through and the tunnel is open."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhe",
        )
        self.assertIs(server.producer, proto)  # it pauses the client
        server.producer.pauseProducing()  # the backend connection is full
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        self.assertEqual(transport.producerState, "paused")
        server.producer.resumeProducing()  # ... and drains
        proto.dataReceived(b"lloRAW")
        self.assertTrue(server.value().endswith(b"\r\n\r\nhelloRAW"))
        self.assertEqual(transport.producerState, "producing")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertIs(server.producer, transport)
        self.assertIs(transport.producer, server)
        transport.loseConnection()

    def test_a_stalled_body_after_a_101_is_408(self) -> None:
        """A client that stops sending its body after the backend switched
        gets 408 and the backend connection is dropped without blame."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhe",
        )
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        self.clock.advance(30)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(server.aborted)
        self.assertEqual(self.backend.failures_total, 0)
        self.assertEqual(self.backend.active, 0)

    def test_backend_closing_before_the_body_is_through_is_502(self) -> None:
        """A backend that switches and closes before the request body was
        all sent gets the client a 502."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhe",
        )
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        server.finish(Failure(ConnectionDone()))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.active, 0)

    def test_a_declined_upgrade_with_a_body_keeps_the_connection(self) -> None:
        """An Upgrade request with a body answered normally is an ordinary
        exchange: the body is forwarded and both connections are kept."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhello",
        )
        self.assertTrue(server.value().endswith(b"\r\n\r\nhello"))
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 1)
        proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"GET /next HTTP/1.1\r\n", server.value())
        upstream.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertIn(b"HTTP/1.1 204 No Content\r\n", transport.value())
        server.loseConnection()
        transport.loseConnection()

    def test_an_unrequested_101_is_a_bad_gateway(self) -> None:
        """A backend that switches protocols unasked gets the client a 502."""
        proto, transport = self.client()
        self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))

    def test_expect_100_continue_is_passed_through(self) -> None:
        """The backend's 100 Continue reaches the client before the body."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
        self.assertIn(b"\r\nExpect: 100-continue\r\n", server.value())
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        proto.dataReceived(b"body")
        self.assertTrue(server.value().endswith(b"\r\n\r\nbody"))
        upstream.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 201 Created\r\n", transport.value())
        server.loseConnection()
        transport.loseConnection()


class ConnectionHandlingTests(_ServerCase):
    """Which side closes when, and HTTP/1.0."""

    def test_client_leaving_mid_response_closes_the_backend(self) -> None:
        """A client gone mid-response drops the backend connection too."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
        )
        transport.finish(Failure(ConnectionDone()))
        self.assertTrue(server.aborted)
        self.assertEqual(self.backend.active, 0)
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 0)

    def test_backend_connection_close_keeps_the_client(self) -> None:
        """A backend's Connection: close ends that backend connection only."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        self.assertFalse(transport.disconnecting)
        self.assertNotIn(b"Connection: close", transport.value())
        self.assertTrue(server.disconnecting)
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 0)
        transport.loseConnection()
        self.clock.advance(0)

    def test_http10_keep_alive_is_honoured(self) -> None:
        """An HTTP/1.0 client asking for keep-alive gets it, and says so."""
        proto, transport = self.client()
        server = self.exchange(
            proto, b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
        )
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertIn(b"\r\nConnection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)
        transport.loseConnection()
        server.loseConnection()

    def test_http10_gets_a_close_delimited_body_for_chunked(self) -> None:
        """HTTP/1.0 has no chunked coding: the payload is sent plain and the
        connection closed."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        value = transport.value()
        self.assertNotIn(b"Transfer-Encoding", value)
        self.assertIn(b"\r\nConnection: close\r\n", value)
        self.assertTrue(value.endswith(b"\r\n\r\nabc"))
        self.assertTrue(transport.disconnecting)
        server.loseConnection()

    def test_trailers_pass_only_when_asked_for(self) -> None:
        """Response trailers reach a client that sent TE: trailers."""
        for te, expected in (
            (b"TE: trailers\r\n", b"0\r\nX-Sum: 7\r\n\r\n"),
            (b"", b"0\r\n\r\n"),
        ):
            proto, transport = self.client()
            server = self.exchange(
                proto,
                b"GET / HTTP/1.1\r\nHost: a\r\n" + te + b"Connection: close\r\n\r\n",
            )
            self.endpoints.last.protocol.dataReceived(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"1\r\nx\r\n0\r\nX-Sum: 7\r\n\r\n"
            )
            self.assertTrue(transport.value().endswith(b"1\r\nx\r\n" + expected))
            server.loseConnection()

    def test_one_chunk_per_backend_read(self) -> None:
        """The chunks of one read from the backend go out as one chunk; a
        chunk split across reads goes out in two."""
        proto, transport = self.client()
        server = self.exchange(
            proto, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        backend = self.endpoints.last.protocol
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n4\r\nfg"
        )
        backend.dataReceived(b"hi\r\n0\r\n\r\n")
        body = transport.value().split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, b"7\r\nabcdefg\r\n2\r\nhi\r\n0\r\n\r\n")
        server.loseConnection()


class HalfCloseTests(_ServerCase):
    """A client that shuts its write side (FIN) after sending."""

    GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def test_provides_the_half_close_interface(self) -> None:
        """The front protocol is told about a FIN instead of losing the
        connection."""
        proto, transport = self.client()
        self.assertTrue(verifyObject(IHalfCloseableProtocol, proto))
        transport.loseConnection()

    def test_a_request_sent_before_the_fin_is_answered(self) -> None:
        """The response still comes, says it closes, and then the connection
        closes; the backend connection is kept for others."""
        with captured_access() as events:
            proto, transport = self.client()
            server = self.exchange(proto, self.GET)
            proto.readConnectionLost()
            self.assertFalse(transport.disconnecting)
            self.assertFalse(server.disconnecting)
            self.endpoints.last.protocol.dataReceived(self.OK)
        value = transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", value)
        self.assertTrue(value.endswith(b"\r\n\r\nok"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["status"] for e in events], [200])
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 1)

    def test_pipelined_requests_before_the_fin_are_answered_in_order(
        self,
    ) -> None:
        """Every request received before the FIN gets its response, in
        order; only the last says it closes."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        proto.readConnectionLost()
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        self.assertNotIn(b"Connection: close", transport.value())
        self.assertFalse(transport.disconnecting)
        self.assertIn(b"GET /two HTTP/1.1\r\n", server.value())
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        value = transport.value()
        self.assertLess(value.index(b"one"), value.index(b"two"))
        self.assertEqual(value.count(b"Connection: close"), 1)
        self.assertTrue(value.endswith(b"\r\nConnection: close\r\n\r\ntwo"))
        self.assertTrue(transport.disconnecting)
        server.loseConnection()

    def test_an_unfinished_pipelined_head_is_given_up_after_the_rest(
        self,
    ) -> None:
        """A head cut short by the FIN behind a whole request: the whole one
        is answered, the cut one gets no answer and a 400 in the log."""
        with captured_access() as events:
            proto, transport = self.client()
            server = self.exchange(
                proto,
                b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /tw",
            )
            proto.readConnectionLost()
            self.endpoints.last.protocol.dataReceived(self.OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["status"] for e in events], [200, 400])
        self.assertEqual(len(self.endpoints.attempts), 1)
        server.loseConnection()

    def test_a_fin_mid_head_is_400_in_the_log_and_no_answer(self) -> None:
        """A client that stops half-way through a head gave up: nothing is
        sent, the connection closes, and the log says 400 as nginx's does."""
        with captured_access() as events:
            proto, transport = self.client()
            proto.dataReceived(b"GET / HTTP/1.1\r\nHo")
            proto.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["status"] for e in events], [400])
        self.assertEqual(self.endpoints.attempts, [])

    def test_a_fin_between_requests_closes_quietly(self) -> None:
        """A FIN on an idle kept-alive connection closes it, logging
        nothing more."""
        with captured_access() as events:
            proto, transport = self.client()
            self.exchange(proto, self.GET)
            self.endpoints.last.protocol.dataReceived(self.OK)
            self.assertFalse(transport.disconnecting)
            proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["status"] for e in events], [200])

    def test_a_fin_mid_body_is_499_and_drops_the_backend(self) -> None:
        """A client that stops half-way through its body gave up: nothing
        is sent, the backend connection is dropped, the log says 499."""
        with captured_access() as events:
            proto, transport = self.client()
            server = self.exchange(
                proto, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
            )
            proto.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertTrue(server.aborted)
        self.assertEqual(self.backend.active, 0)
        self.assertEqual(self.backend.failures_total, 0)
        self.assertEqual([e["status"] for e in events], [499])

    def test_a_fin_mid_body_while_connecting_cancels_the_connect(self) -> None:
        """A body known to be short when the FIN comes is given up before
        any backend is reached."""
        with captured_access() as events:
            proto, transport = self.client()
            proto.dataReceived(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
            )
            proto.readConnectionLost()
        self.assertTrue(self.endpoints.last.cancelled)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.active, 0)
        self.assertEqual([e["status"] for e in events], [499])

    def test_a_whole_body_buffered_while_connecting_is_sent(self) -> None:
        """A chunked body complete before the FIN but still buffered while
        the backend is connected is sent, and the response relayed."""
        proto, transport = self.client()
        proto.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        proto.readConnectionLost()
        server = self.endpoints.last.succeed()
        self.assertTrue(server.value().endswith(b"3\r\nabc\r\n0\r\n\r\n"))
        self.endpoints.last.protocol.dataReceived(self.OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertTrue(transport.disconnecting)

    def test_a_short_body_buffered_while_connecting_is_499(self) -> None:
        """A chunked body cut short by a FIN while the backend is being
        connected is given up at once (the body is decoded as it arrives),
        and the connect is cancelled."""
        with captured_access() as events:
            proto, transport = self.client()
            proto.dataReceived(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                b"\r\n3\r\nab"
            )
            proto.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertTrue(self.endpoints.last.cancelled)
        self.assertEqual(self.backend.active, 0)
        self.assertEqual([e["status"] for e in events], [499])

    def test_a_fin_in_a_tunnel_is_passed_to_the_backend(self) -> None:
        """After a 101 a client's FIN half-closes the backend connection;
        the backend's bytes still reach the client until it closes."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
        )
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        proto.readConnectionLost()
        self.assertTrue(server.write_closed)
        self.assertFalse(server.disconnecting)
        self.assertFalse(transport.disconnecting)
        upstream.dataReceived(b"last words")
        self.assertTrue(transport.value().endswith(b"last words"))
        server.loseConnection()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.active, 0)

    def test_a_fin_before_the_101_is_passed_on_when_the_tunnel_opens(
        self,
    ) -> None:
        """A client that sent its FIN while waiting for the 101 has it passed
        to the backend once the tunnel opens, after its early bytes."""
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nearly",
        )
        proto.readConnectionLost()
        self.assertFalse(server.write_closed)
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertTrue(server.value().endswith(b"\r\n\r\nearly"))
        self.assertTrue(server.write_closed)
        self.assertFalse(transport.disconnecting)
        server.loseConnection()
        self.assertTrue(transport.disconnecting)


class ReviewRegressionTests(_ServerCase):
    """Each test pins a bug found in review."""

    def test_early_response_timer_does_not_leak_into_the_next_request(self) -> None:
        """A response that starts before the upload ends leaves no timer
        behind to 504 the next request."""
        proto, transport = self.client()
        server = self.exchange(
            proto, b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab"
        )
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        proto.dataReceived(b"cd")
        upstream.dataReceived(b"ok")
        proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.clock.advance(25)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertNotIn(b"504", transport.value())
        self.assertEqual(self.backend.failures_total, 0)
        server.loseConnection()
        transport.loseConnection()

    def test_a_head_split_before_its_last_lf_is_read(self) -> None:
        """A head that arrives as '...\\r\\n\\r' then '\\n' is complete."""
        proto, transport = self.client()
        proto.dataReceived(b"GET /split HTTP/1.1\r\nHost: a\r\n\r")
        self.assertEqual(self.endpoints.attempts, [])
        proto.dataReceived(b"\n")
        self.assertEqual(len(self.endpoints.attempts), 1)
        transport.loseConnection()

    def test_framing_is_canonical_and_request_trailers_are_dropped(self) -> None:
        """The backend gets one Content-Length or Transfer-Encoding field,
        whatever the client wrote, and no client trailers."""
        proto, transport = self.client()
        server = self.exchange(
            proto, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nbody"
        )
        self.assertEqual(server.value().count(b"Content-Length"), 1)
        self.assertIn(b"\r\nContent-Length: 4\r\n", server.value())
        transport.loseConnection()
        proto, transport = self.client()
        server = self.exchange(
            proto,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\nx\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
        )
        self.assertTrue(server.value().endswith(b"1\r\nx\r\n0\r\n\r\n"))
        self.assertNotIn(b"6.6.6.6", server.value())
        transport.loseConnection()

    def test_backend_reset_in_a_close_delimited_body_is_not_a_complete_response(
        self,
    ) -> None:
        """A reset while reading until close cuts the client off instead of
        ending the chunked body cleanly."""
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npartial")
        server.finish(Failure(ConnectionLost()))
        self.assertTrue(transport.aborted)
        self.assertNotIn(b"0\r\n\r\n", transport.value())

    def test_a_stalled_upload_gets_408_and_frees_the_backend(self) -> None:
        """A client that stops sending its body is cut off after the
        response timeout (with no minimum body rate to cut it sooner)."""
        self.factory.settings = attrs.evolve(
            self.factory.settings, request_body_min_rate=0
        )
        proto, transport = self.client()
        server = self.exchange(
            proto, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
        )
        self.clock.advance(29)
        proto.dataReceived(b"de")
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(server.aborted)
        self.assertEqual(self.backend.active, 0)

    def test_interim_responses_are_bounded(self) -> None:
        """One 100 Continue is passed on; a backend looping 1xx gets 502."""
        proto, transport = self.client()
        self.exchange(
            proto,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
        upstream = self.endpoints.last.protocol
        upstream.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" * 9)
        value = transport.value()
        self.assertEqual(value.count(b"100 Continue"), 1)
        self.assertIn(b"HTTP/1.1 502 ", value)

    def test_an_abort_mid_response_is_still_logged(self) -> None:
        """Exchanges cut off after their response started get an access
        event."""
        with captured_access() as events:
            proto, transport = self.client()
            server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.endpoints.last.protocol.dataReceived(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"
            )
            server.finish(Failure(ConnectionLost()))
        self.assertTrue(transport.aborted)
        self.assertEqual([(e["status"], e["bytes_out"]) for e in events], [(200, 4)])


class ShutdownAndReloadTests(_ServerCase):
    """
    Graceful shutdown of keep-alive connections, and settings replaced on a
    running listener.
    """

    def test_shutdown_closes_idle_keep_alive_clients_at_once(self) -> None:
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertFalse(transport.disconnecting)
        drained = self.factory.connections.drain(10.0, self.clock)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(drained), None)
        server.loseConnection()

    def test_shutdown_lets_a_request_in_flight_finish_then_closes(self) -> None:
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        drained = self.factory.connections.drain(10.0, self.clock)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(5)
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        server.loseConnection()

    def test_shutdown_drops_a_request_still_running_after_the_grace(self) -> None:
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        drained = self.factory.connections.drain(10.0, self.clock)
        self.clock.advance(10)
        self.assertTrue(transport.aborted)
        self.assertTrue(server.aborted)
        proto.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)
        self.assertEqual(self.backend.active, 0)

    def test_new_settings_apply_from_the_next_request_on(self) -> None:
        """
        Settings replaced while a request is in flight leave it alone; the
        connection's next request follows the new routes.
        """
        other = Backend("127.0.0.1", 9001)
        self.factory.registry = Registry([self.pool, Pool("other", [other])])
        proto, transport = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.factory.settings = attrs.evolve(
            self.factory.settings, router=Router([Route(pool="other", host="a")])
        )
        self.clock.advance(29)  # the old response timeout still applies
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.backend.connections_total, 1)
        proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.endpoints.attempts[-1].backend, other)
        self.endpoints.last.succeed()
        self.endpoints.last.protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(other.connections_total, 1)
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 2)
        server.loseConnection()
        transport.loseConnection()

    def test_a_connection_that_announced_a_client_is_never_shared(self) -> None:
        """
        A backend connection opened with a PROXY header stays with its
        client even if the pool stops sending headers (a reload) while the
        request is in flight.
        """
        self.pool.policy = attrs.evolve(self.pool.policy, send_proxy="v1")
        proto, _ = self.client()
        server = self.exchange(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(
            self.endpoints.last.preface.startswith(b"PROXY TCP4 192.0.2.7 ")
        )
        self.pool.policy = attrs.evolve(self.pool.policy, send_proxy=None)
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.factory.keep_alive.idle_count(self.backend), 0)
        other, _ = self.client()
        other.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.endpoints.last.succeed().loseConnection()
        server.loseConnection()
        for front in (proto, other):
            front.shut_down(abort=True)
