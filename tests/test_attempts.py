"""The backend attempt machine driven by hand: fake endpoints and a Clock."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from attrs import evolve
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rproxy.attempts import (
    BAD_GATEWAY,
    CONNECT_TIMED_OUT,
    NO_BACKEND,
    AttemptState,
    BackendAttempt,
)
from rproxy.backends import Backend, Pool
from rproxy.balancing import RoundRobin
from rproxy.interfaces import IBalancer
from rproxy.policy import PoolPolicy
from rproxy.testing import FakeEndpoints, HalfCloseTransport


@implementer(IBalancer)
class RecordingBalancer(RoundRobin):
    """Round-robin that records the key and the exclusions of each pick."""

    def __init__(self) -> None:
        super().__init__()
        self.picks: list[tuple[str | None, list[Backend]]] = []

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        self.picks.append((key, list(exclude)))
        return super().pick(pool, key, exclude)


def client_transport() -> StringTransport:
    return StringTransport(
        hostAddress=IPv4Address("TCP", "198.51.100.1", 443),
        peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
    )


class BackendAttemptTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = [Backend("127.0.0.1", 9001 + i) for i in range(3)]
        self.balancer = RecordingBalancer()
        self.pool = Pool(
            "db",
            self.backends,
            self.balancer,
            fall=5,
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=2.0, connect_tries=3),
        )
        self.endpoints = FakeEndpoints()
        self.connected: list[tuple[Backend, Any]] = []
        self.gave_up: list[int] = []

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def attempt(self, **kwargs: Any) -> BackendAttempt:
        return BackendAttempt(
            self.pool,
            self.clock,
            self.endpoints,
            lambda backend: Factory.forProtocol(Protocol),
            connected=lambda backend, protocol: self.connected.append(
                (backend, protocol)
            ),
            gave_up=self.gave_up.append,
            **kwargs,
        )

    def active(self) -> list[int]:
        return [b.active for b in self.backends]

    def test_connects_to_the_picked_backend_and_holds_it_until_released(
        self,
    ) -> None:
        """The picked backend is acquired while connecting and connected,
        and given back by release()."""
        attempt = self.attempt()
        attempt.start()
        first = self.endpoints.last
        self.assertIs(first.backend, self.backends[0])
        self.assertTrue(attempt.connecting)
        self.assertEqual(self.active(), [1, 0, 0])
        first.succeed()
        self.assertEqual(self.connected, [(self.backends[0], first.protocol)])
        self.assertIs(attempt.state, AttemptState.CONNECTED)
        self.assertFalse(attempt.reused)
        attempt.release()
        attempt.release()
        self.assertEqual(self.active(), [0, 0, 0])
        self.assertEqual(self.backends[0].connections_total, 1)

    def test_picks_with_the_callers_key_excluding_backends_tried(self) -> None:
        """The hash key comes from the caller; retries exclude the tried."""
        self.attempt(key="10.1.2.3").start()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.endpoints.last.succeed()
        self.assertEqual(
            self.balancer.picks,
            [("10.1.2.3", []), ("10.1.2.3", [self.backends[0]])],
        )

    def test_refused_connect_is_reported_logged_and_the_next_tried(self) -> None:
        """A failed connect releases the backend, counts against it with
        the described reason, logs one event and tries the next backend."""
        attempt = self.attempt()
        attempt.start()
        with capturedLogs() as events:
            self.endpoints.last.fail(ConnectionRefusedError())
        bad = self.backends[0]
        self.assertEqual((bad.failures_total, bad.fails, bad.active), (1, 1, 0))
        (event,) = [e for e in events if e["log_namespace"] == "rproxy.attempts"]
        self.assertEqual(
            event["log_format"], "connect to {backend} in pool {pool} failed: {reason}"
        )
        self.assertEqual(
            (event["backend"], event["pool"], event["reason"]),
            (bad.name, "db", "ConnectionRefusedError"),
        )
        self.assertEqual(len(self.endpoints.attempts), 2)
        second = self.endpoints.last.backend
        self.assertIsNot(second, bad)
        self.assertIs(attempt.backend, second)
        self.assertEqual((bad.active, second.active), (0, 1))
        self.endpoints.last.succeed()
        attempt.release()

    def test_connect_times_out_by_the_policy_on_the_clock(self) -> None:
        """A connect slower than policy.connect_timeout is cancelled,
        reported as timed out and the next backend tried."""
        attempt = self.attempt()
        attempt.start()
        first = self.endpoints.last
        self.clock.advance(1.9)
        self.assertFalse(first.cancelled)
        self.clock.advance(0.1)
        self.assertTrue(first.cancelled)
        self.assertEqual(self.backends[0].fails, 1)
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.endpoints.last.succeed()
        attempt.release()

    def test_gives_up_after_connect_tries_with_502(self) -> None:
        """After policy.connect_tries refused connects: 502, nothing held."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=2)
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(self.gave_up, [BAD_GATEWAY])
        self.assertEqual((attempt.status, attempt.state), (502, AttemptState.DONE))
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertEqual(self.active(), [0, 0, 0])
        self.assertEqual(self.connected, [])

    def test_gives_up_with_504_when_the_last_connect_timed_out(self) -> None:
        """A refused connect then one that timed out: 504."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=2)
        self.attempt().start()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.clock.advance(2.0)
        self.assertEqual(self.gave_up, [CONNECT_TIMED_OUT])

    def test_gives_up_with_503_when_no_backend_is_up(self) -> None:
        """Nothing to try: 503 at once, without a connect."""
        for backend in self.backends:
            self.pool.mark_down(backend, "test")
        attempt = self.attempt()
        attempt.start()
        self.assertEqual(self.gave_up, [NO_BACKEND])
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual(attempt.tried, [])

    def test_gives_up_when_every_backend_was_tried(self) -> None:
        """Fewer backends than tries: giving up once each was tried."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=5)
        self.attempt().start()
        for _ in self.backends:
            self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoints.attempts), 3)
        self.assertEqual(self.gave_up, [BAD_GATEWAY])

    def test_the_policy_of_the_start_holds_for_the_whole_attempt(self) -> None:
        """A reload replacing the pool's policy mid-attempt changes neither
        the tries nor the timeout of an attempt under way."""
        attempt = self.attempt()
        attempt.start()
        self.pool.policy = PoolPolicy(connect_timeout=30.0, connect_tries=1)
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.clock.advance(2.0)
        self.assertTrue(self.endpoints.attempts[1].cancelled)
        self.assertEqual(len(self.endpoints.attempts), 3)
        self.assertEqual(attempt.policy.connect_timeout, 2.0)
        self.endpoints.last.succeed()
        attempt.release()

    def test_sends_the_proxy_header_of_the_policy(self) -> None:
        """With send_proxy, each connect sends a PROXY header carrying the
        client's addresses."""
        self.pool.policy = evolve(self.pool.policy, send_proxy="v1")
        attempt = self.attempt(client=client_transport())
        attempt.start()
        header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"
        self.assertEqual(attempt.preface, header)
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual([a.preface for a in self.endpoints.attempts], [header] * 2)
        self.endpoints.last.succeed()
        attempt.release()

    def test_no_proxy_header_without_send_proxy(self) -> None:
        """Without send_proxy the endpoint gets no preface."""
        attempt = self.attempt(client=client_transport())
        attempt.start()
        self.assertEqual((attempt.preface, self.endpoints.last.preface), (b"", b""))
        attempt.cancel()

    def test_reuse_hook_gives_a_kept_connection_without_connecting(self) -> None:
        """A connection the reuse hook gives is used as if just connected:
        the backend is held, nothing connects."""
        kept = object()
        asked: list[Backend] = []

        def reuse(backend: Backend) -> object | None:
            asked.append(backend)
            return kept

        attempt = self.attempt(reuse=reuse)
        attempt.start()
        self.assertEqual(asked, [self.backends[0]])
        self.assertEqual(self.connected, [(self.backends[0], kept)])
        self.assertTrue(attempt.reused)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual(self.active(), [1, 0, 0])
        attempt.release()
        self.assertEqual(self.active(), [0, 0, 0])

    def test_reuse_hook_without_a_connection_connects(self) -> None:
        """When the hook has nothing, the picked backend is connected to."""
        attempt = self.attempt(reuse=lambda backend: None)
        attempt.start()
        self.assertIs(self.endpoints.last.backend, self.backends[0])
        self.endpoints.last.succeed()
        self.assertFalse(attempt.reused)
        attempt.release()

    def test_retry_after_connected_blames_and_tries_the_next(self) -> None:
        """A connection that failed before an answer: reported with the
        caller's reason, released, and the next backend tried."""
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.succeed()
        attempt.retry("connection closed before a response")
        first = self.backends[0]
        self.assertEqual((first.failures_total, first.active), (1, 0))
        second = self.endpoints.last.backend
        self.assertIsNot(second, first)
        self.assertEqual(second.active, 1)
        self.assertEqual(attempt.tried, [first, second])
        self.endpoints.last.succeed()
        self.assertEqual(len(self.connected), 2)
        attempt.release()
        self.assertEqual(self.active(), [0, 0, 0])

    def test_retry_forgetting_a_stale_kept_connection(self) -> None:
        """A stale reused connection is not the backend's fault: nothing is
        reported and the backend may be picked again, without using a try."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=1)
        offers = [object(), None]
        attempt = self.attempt(reuse=lambda backend: offers.pop(0))
        attempt.start()
        self.assertTrue(attempt.reused)
        attempt.retry("kept connection closed", forget=True)
        self.assertEqual(self.backends[0].failures_total, 0)
        self.assertEqual(self.balancer.picks[-1], (None, []))
        self.assertEqual(attempt.tried, [self.backends[1]])
        self.assertEqual(self.endpoints.last.backend, self.backends[1])
        self.endpoints.last.succeed()
        self.assertFalse(attempt.reused)
        attempt.release()

    def test_retry_with_nothing_left_gives_up_with_502(self) -> None:
        """A retry after the last try gives up as a bad gateway."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=1)
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.succeed()
        attempt.retry("reset")
        self.assertEqual(self.gave_up, [BAD_GATEWAY])
        self.assertEqual(self.active(), [0, 0, 0])

    def test_failed_reports_and_releases_without_retrying(self) -> None:
        """failed(): blamed and released, nothing else tried."""
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.succeed()
        attempt.failed("no response in time")
        self.assertEqual(self.backends[0].failures_total, 1)
        self.assertEqual(self.backends[0].reason, "initial state")
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.assertEqual((self.active(), self.gave_up), ([0, 0, 0], []))
        self.assertIs(attempt.state, AttemptState.DONE)

    def test_failed_after_release_reports_only(self) -> None:
        """A failure found once the connection was given back (a response
        cut short) is still reported, without a second release."""
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.succeed()
        self.pool.acquire(self.backends[0])  # another exchange holds it
        attempt.release()
        attempt.failed("response cut short")
        self.assertEqual(self.backends[0].failures_total, 1)
        self.assertEqual(self.active(), [1, 0, 0])
        self.pool.release(self.backends[0])

    def test_failed_after_giving_up_is_a_bug(self) -> None:
        """Nothing was connected: there is no connection to fail."""
        self.pool.policy = evolve(self.pool.policy, connect_tries=1)
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertRaises(RuntimeError, attempt.failed, "x")
        self.assertEqual(self.backends[0].failures_total, 1)

    def test_retry_needs_a_connection(self) -> None:
        """retry() while still connecting is a bug in the caller."""
        attempt = self.attempt()
        attempt.start()
        self.assertRaises(RuntimeError, attempt.retry, "x")
        self.assertRaises(RuntimeError, attempt.start)
        attempt.cancel()

    def test_succeeded_ends_the_backends_run_of_failures(self) -> None:
        """succeeded() reports success for the connected backend."""
        self.backends[0].fails = 2
        attempt = self.attempt()
        attempt.start()
        self.endpoints.last.succeed()
        attempt.succeeded()
        self.assertEqual(self.backends[0].fails, 0)
        attempt.release()

    def test_cancel_mid_connect_cancels_and_releases(self) -> None:
        """The client went away: the connect is cancelled, the backend
        released, nothing reported, logged or called back."""
        attempt = self.attempt()
        attempt.start()
        with capturedLogs() as events:
            attempt.cancel()
        self.assertTrue(self.endpoints.last.cancelled)
        self.assertEqual(self.active(), [0, 0, 0])
        self.assertEqual(self.backends[0].failures_total, 0)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.assertEqual((self.connected, self.gave_up), ([], []))
        self.assertEqual([e for e in events if e["log_level"].name != "debug"], [])

    def test_a_connection_arriving_after_cancel_is_aborted(self) -> None:
        """A connect that completes as it is cancelled is aborted at once."""
        transport = HalfCloseTransport()

        @implementer(IStreamClientEndpoint)
        class Racing:
            def connect(self, factory: Factory) -> Deferred[Any]:
                protocol = factory.buildProtocol(None)

                def arrive(d: Deferred[Any]) -> None:
                    transport.protocol = protocol
                    protocol.makeConnection(transport)
                    d.callback(protocol)

                return Deferred(arrive)

        attempt = BackendAttempt(
            self.pool,
            self.clock,
            lambda backend: Racing(),
            lambda backend: Factory.forProtocol(Protocol),
            connected=lambda backend, protocol: self.connected.append(
                (backend, protocol)
            ),
            gave_up=self.gave_up.append,
        )
        attempt.start()
        attempt.cancel()
        self.assertTrue(transport.aborted)
        self.assertEqual(self.connected, [])
        self.assertEqual(self.active(), [0, 0, 0])

    def test_a_bug_in_the_caller_drops_the_client(self) -> None:
        """An exception from the connected callback is logged, the backend
        released and the client aborted."""
        client = HalfCloseTransport()

        def broken(backend: Backend, protocol: Any) -> None:
            raise ZeroDivisionError()

        attempt = BackendAttempt(
            self.pool,
            self.clock,
            self.endpoints,
            lambda backend: Factory.forProtocol(Protocol),
            connected=broken,
            gave_up=self.gave_up.append,
            client=client,
        )
        attempt.start()
        with capturedLogs() as events:
            self.endpoints.last.succeed()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(any("log_failure" in e for e in events))
        self.assertTrue(client.aborted)
        self.assertEqual(self.active(), [0, 0, 0])
