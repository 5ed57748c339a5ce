"""TCP passthrough driven by hand: fake endpoints, string transports, a Clock."""

from __future__ import annotations

from attrs import evolve
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rproxy.backends import AdminState, Backend, Pool
from rproxy.policy import PoolPolicy
from rproxy.tcp import TCPFrontProtocol, TCPProxyFactory
from rproxy.testing import FakeEndpoints, HalfCloseTransport, captured_access, connect


class TCPProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = [Backend("127.0.0.1", 9001 + i) for i in range(3)]
        self.pool = Pool(
            "db",
            self.backends,
            fall=2,
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=5.0, idle_timeout=60.0),
        )
        self.endpoints = FakeEndpoints()
        self.factory = TCPProxyFactory(
            self.pool, self.clock, listener="front", endpoint_for=self.endpoints
        )

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def client(self) -> tuple[TCPFrontProtocol, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return proto, connect(proto, HalfCloseTransport())

    def spliced(
        self,
    ) -> tuple[TCPFrontProtocol, HalfCloseTransport, HalfCloseTransport]:
        proto, client = self.client()
        server = self.endpoints.last.succeed()
        return proto, client, server

    def close_both(
        self, client: HalfCloseTransport, server: HalfCloseTransport
    ) -> None:
        client.loseConnection()
        server.loseConnection()

    def test_pauses_client_until_backend_connects(self) -> None:
        """The client is not read from until a backend connection is up."""
        _, client = self.client()
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(len(self.endpoints.attempts), 1)
        server = self.endpoints.last.succeed()
        self.assertEqual(client.producerState, "producing")
        self.close_both(client, server)

    def test_each_side_is_the_other_sides_producer(self) -> None:
        """Backpressure: each transport is registered as the other's producer."""
        _, client, server = self.spliced()
        self.assertIs(client.producer, server)
        self.assertIs(server.producer, client)
        self.assertTrue(client.streaming and server.streaming)
        self.close_both(client, server)

    def test_relays_bytes_both_ways_and_counts_them(self) -> None:
        """Bytes flow client->backend and back, counted on connection and backend."""
        proto, client, server = self.spliced()
        proto.dataReceived(b"hello")
        self.assertEqual(server.value(), b"hello")
        assert proto.peer is not None
        proto.peer.dataReceived(b"world!")
        self.assertEqual(client.value(), b"world!")
        self.assertEqual((proto.bytes_in, proto.bytes_out), (5, 6))
        backend = self.endpoints.last.backend
        self.assertEqual((backend.bytes_in, backend.bytes_out), (5, 6))
        self.assertEqual(backend.active, 1)
        self.close_both(client, server)
        self.assertEqual(backend.active, 0)
        self.assertEqual(backend.connections_total, 1)

    def test_retries_next_backend_when_connect_refused(self) -> None:
        """A refused connect moves on to another backend; the client sees nothing."""
        _, client = self.client()
        first = self.endpoints.last
        first.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoints.attempts), 2)
        second = self.endpoints.last
        self.assertIsNot(second.backend, first.backend)
        self.assertEqual(first.backend.failures_total, 1)
        self.assertEqual(first.backend.active, 0)
        self.assertFalse(client.disconnecting)
        server = second.succeed()
        self.assertEqual(client.producerState, "producing")
        self.close_both(client, server)

    def test_closes_client_after_connect_tries(self) -> None:
        """After connect_tries failed connects the client is closed."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=2)
        with captured_access() as access:
            _, client = self.client()
            self.endpoints.last.fail(ConnectionRefusedError())
            self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertTrue(client.disconnecting)
        self.assertEqual(len(access), 1)
        self.assertEqual(access[0]["ended"], "connect failed")
        self.assertEqual(access[0]["backend"], "-")

    def test_connect_timeout_tries_next_backend(self) -> None:
        """A connect that takes longer than connect_timeout is cancelled."""
        _, client = self.client()
        first = self.endpoints.last
        self.clock.advance(4.9)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.clock.advance(0.1)
        self.assertTrue(first.cancelled)
        self.assertEqual(len(self.endpoints.attempts), 2)
        server = self.endpoints.last.succeed()
        self.close_both(client, server)

    def test_closes_client_at_once_when_no_backend_is_up(self) -> None:
        """With every backend down the client is closed without a connect."""
        for backend in self.backends:
            self.pool.mark_down(backend, "test")
        with captured_access() as access:
            _, client = self.client()
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual(access[0]["ended"], "no backend")

    def test_full_backend_is_skipped(self) -> None:
        """A backend at max_connections gets no new connection."""
        self.backends[0].max_connections = 1
        self.backends[0].active = 1
        clients = [self.client()[1] for _ in range(4)]
        chosen = [a.backend for a in self.endpoints.attempts]
        self.assertNotIn(self.backends[0], chosen)
        for client in clients:
            client.finish(Failure(ConnectionLost()))

    def test_disabled_backend_gets_no_connection(self) -> None:
        """An operator-disabled backend is not connected to."""
        self.pool.set_admin(self.backends[1], AdminState.DISABLED, "test")
        clients = [self.client()[1] for _ in range(4)]
        self.assertNotIn(self.backends[1], [a.backend for a in self.endpoints.attempts])
        for client in clients:
            client.finish(Failure(ConnectionLost()))

    def test_connect_failures_mark_backend_down(self) -> None:
        """fall consecutive connect failures from real traffic mark it down
        (with no panic threshold: it is the only enabled backend)."""
        self.pool.policy = evolve(self.pool.policy, panic_threshold=0.0)
        bad = self.backends[0]
        for other in self.backends[1:]:
            self.pool.set_admin(other, AdminState.DISABLED, "test")
        _, client = self.client()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertTrue(client.disconnecting)
        self.assertTrue(bad.healthy)
        self.client()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertFalse(bad.healthy)
        self.assertEqual(len(self.endpoints.attempts), 2)

    def test_client_half_close_reaches_backend(self) -> None:
        """The client shutting its write side shuts the backend's write side."""
        proto, client, server = self.spliced()
        proto.readConnectionLost()
        self.assertTrue(server.write_closed)
        self.assertFalse(server.disconnecting)
        self.assertFalse(client.disconnecting)
        assert proto.peer is not None
        proto.peer.dataReceived(b"late reply")
        self.assertEqual(client.value(), b"late reply")
        self.close_both(client, server)

    def test_backend_half_close_reaches_client(self) -> None:
        """The backend shutting its write side shuts the client's write side."""
        proto, client, server = self.spliced()
        assert proto.peer is not None
        proto.peer.readConnectionLost()
        self.assertTrue(client.write_closed)
        self.assertFalse(client.disconnecting)
        proto.dataReceived(b"more")
        self.assertEqual(server.value(), b"more")
        self.close_both(client, server)

    def test_both_half_closes_close_both_sides(self) -> None:
        """Once both sides have finished sending, both connections close."""
        proto, client, server = self.spliced()
        with captured_access() as access:
            proto.readConnectionLost()
            assert proto.peer is not None
            proto.peer.readConnectionLost()
        self.assertTrue(client.disconnecting and server.disconnecting)
        self.assertEqual(access[0]["ended"], "closed")

    def test_backend_reset_resets_client(self) -> None:
        """A backend connection that breaks is passed on as a reset, so a
        truncated response never looks complete."""
        _, client, server = self.spliced()
        server.finish(Failure(ConnectionLost()))
        self.assertTrue(client.aborted)
        self.assertEqual(self.endpoints.last.backend.active, 0)

    def test_client_reset_resets_backend(self) -> None:
        """A client connection that breaks resets the backend connection."""
        _, client, server = self.spliced()
        with captured_access() as access:
            client.finish(Failure(ConnectionLost()))
        self.assertTrue(server.aborted)
        self.assertEqual(access[0]["ended"], "client reset")

    def test_clean_close_is_passed_on_as_a_close(self) -> None:
        """A clean close of one side closes the other after its buffer."""
        _, client, server = self.spliced()
        client.finish(Failure(ConnectionDone()))
        self.assertTrue(server.disconnecting)
        self.assertFalse(server.aborted)

    def test_dropping_a_connecting_client_cancels_the_connect(self) -> None:
        """Shutdown's abort while a backend connect is under way cancels it
        and releases the backend."""
        _, client = self.client()
        attempt = self.endpoints.last
        self.factory.connections.drain(0, self.clock)
        self.clock.advance(0)
        self.assertTrue(attempt.cancelled)
        self.assertTrue(client.aborted)
        self.assertEqual(attempt.backend.active, 0)
        self.assertEqual(attempt.backend.failures_total, 0)
        self.assertEqual(len(self.endpoints.attempts), 1)

    def test_client_leaving_while_connecting_cancels_connect(self) -> None:
        """A client that goes away before the backend answers cancels the connect."""
        _, client = self.client()
        attempt = self.endpoints.last
        client.finish(Failure(ConnectionLost()))
        self.assertTrue(attempt.cancelled)
        self.assertEqual(attempt.backend.active, 0)
        self.assertEqual(attempt.backend.failures_total, 0)
        self.assertEqual(len(self.endpoints.attempts), 1)

    def test_idle_timeout_closes_a_silent_pair(self) -> None:
        """No bytes either way for idle_timeout seconds aborts both sides."""
        _, client, server = self.spliced()
        with captured_access() as access:
            self.clock.advance(60)
        self.assertTrue(client.aborted and server.aborted)
        self.assertEqual(access[0]["ended"], "idle timeout")

    def test_traffic_defers_the_idle_timeout(self) -> None:
        """Bytes in either direction restart the idle clock."""
        proto, client, _ = self.spliced()
        self.clock.advance(40)
        proto.dataReceived(b"x")
        self.clock.advance(40)
        assert proto.peer is not None
        proto.peer.dataReceived(b"y")
        self.clock.advance(59)
        self.assertFalse(client.disconnecting)
        self.clock.advance(1)
        self.assertTrue(client.aborted)

    def test_each_connection_keeps_the_policy_it_was_accepted_under(self) -> None:
        """A replaced pool policy (a reload) applies to new connections; one
        already open keeps its idle timeout."""
        _, old_client, old_server = self.spliced()
        self.pool.policy = evolve(self.pool.policy, idle_timeout=10.0)
        _, new_client, new_server = self.spliced()
        self.clock.advance(10)
        self.assertTrue(new_client.aborted and new_server.aborted)
        self.assertFalse(old_client.disconnecting)
        self.clock.advance(50)
        self.assertTrue(old_client.aborted and old_server.aborted)

    def test_access_event_has_stable_keys(self) -> None:
        """One access event per connection with client, pool, backend, bytes."""
        proto, client, server = self.spliced()
        proto.dataReceived(b"abc")
        self.clock.advance(2)
        with captured_access() as access:
            self.close_both(client, server)
        self.assertEqual(len(access), 1)
        event = access[0]
        self.assertEqual(event["client"], "192.0.2.7")
        self.assertEqual(event["listener"], "front")
        self.assertEqual(event["pool"], "db")
        self.assertEqual(event["backend"], self.endpoints.last.backend.name)
        self.assertEqual((event["bytes_in"], event["bytes_out"]), (3, 0))
        self.assertEqual(event["duration"], 2)

    def test_shutdown_waits_then_aborts(self) -> None:
        """Draining the listener drops connections still open after the grace."""
        _, client, _ = self.spliced()
        done = self.factory.connections.drain(10.0, self.clock)
        self.assertNoResult(done)
        self.clock.advance(10)
        self.assertTrue(client.aborted)
        self.successResultOf(done)
