"""The pool's queue while every backend is at max_connections, on a Clock:
attempts driven by hand, then whole HTTP and TCP fronts in memory."""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rproxy.attempts import (
    NO_BACKEND,
    QUEUE_FULL,
    QUEUE_TIMEOUT,
    AttemptState,
    BackendAttempt,
)
from rproxy.backends import AdminState, Backend, Pool
from rproxy.policy import PoolPolicy
from rproxy.queueing import BackendQueue
from rproxy.tcp import TCPProxyFactory
from rproxy.testing import (
    FakeEndpoints,
    HalfCloseTransport,
    HTTPHarness,
    captured_access,
    connect,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class QueueTests(SynchronousTestCase):
    """BackendAttempts of one pool whose backends have room for one each."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = [Backend("127.0.0.1", 9001, max_connections=1)]
        self.pool = Pool(
            "db",
            self.backends,
            now=self.clock.seconds,
            policy=PoolPolicy(queue_max=3, queue_timeout=5.0),
        )
        self.endpoints = FakeEndpoints()
        self.events: list[tuple[str, Any]] = []

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def attempt(self, name: str) -> BackendAttempt:
        attempt = BackendAttempt(
            self.pool,
            self.clock,
            self.endpoints,
            lambda backend: Factory.forProtocol(Protocol),
            connected=lambda backend, protocol: self.events.append((name, "connected")),
            gave_up=lambda status: self.events.append((name, status)),
        )
        attempt.start()
        return attempt

    def connected(self, name: str) -> BackendAttempt:
        attempt = self.attempt(name)
        self.endpoints.last.succeed()
        return attempt

    def test_waits_in_the_queue_while_every_backend_is_full(self) -> None:
        """With no backend room, an attempt joins the queue: no connect, no
        answer, the backend's count unchanged."""
        first = self.connected("a")
        second = self.attempt("b")
        self.assertIs(second.state, AttemptState.QUEUED)
        self.assertTrue(second.waiting)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.assertEqual(self.events, [("a", "connected")])
        self.assertEqual((len(self.pool.queue), self.backends[0].active), (1, 1))
        second.cancel()
        first.release()

    def test_room_made_serves_the_head_of_the_queue_first(self) -> None:
        """Waiters are served in the order they came, one per room made,
        once the reactor has finished what made the room."""
        first = self.connected("a")
        waiting = [self.attempt(name) for name in ("b", "c", "d")]
        first.release()
        self.assertEqual(len(self.endpoints.attempts), 1)  # not yet: next turn
        self.clock.advance(0)
        self.assertEqual(len(self.endpoints.attempts), 2)
        self.assertIs(waiting[0].state, AttemptState.CONNECTING)
        self.endpoints.last.succeed()
        waiting[0].release()
        self.clock.advance(0)
        self.endpoints.last.succeed()
        waiting[1].release()
        self.clock.advance(0)
        self.endpoints.last.succeed()
        waiting[2].release()
        self.assertEqual(
            [name for name, event in self.events if event == "connected"],
            ["a", "b", "c", "d"],
        )
        queue = self.pool.queue
        self.assertEqual(
            (len(queue), queue.queued_total, queue.served_total), (0, 3, 3)
        )

    def test_new_arrivals_wait_behind_the_queue(self) -> None:
        """Room made while others wait is theirs: a newcomer joins the
        tail even if it comes before their turn."""
        first = self.connected("a")
        queued = self.attempt("b")
        first.release()
        newcomer = self.attempt("c")
        self.assertIs(newcomer.state, AttemptState.QUEUED)
        self.clock.advance(0)
        self.assertIs(queued.state, AttemptState.CONNECTING)
        self.assertIs(newcomer.state, AttemptState.QUEUED)
        newcomer.cancel()
        queued.cancel()

    def test_wait_times_out_with_503(self) -> None:
        """After queue_timeout in the queue, the attempt gives up with 503
        and says the queue refused it."""
        first = self.connected("a")
        second = self.attempt("b")
        self.clock.advance(4.9)
        self.assertEqual(self.events, [("a", "connected")])
        self.clock.advance(0.1)
        self.assertEqual(self.events[-1], ("b", NO_BACKEND))
        self.assertEqual(
            (second.refused, second.state), (QUEUE_TIMEOUT, AttemptState.DONE)
        )
        self.assertEqual((len(self.pool.queue), self.pool.queue.timeouts_total), (0, 1))
        first.release()
        self.clock.advance(0)
        self.assertEqual(len(self.endpoints.attempts), 1)

    def test_full_queue_refuses_at_once(self) -> None:
        """One more than queue_max waiting gives up with 503 at once."""
        first = self.connected("a")
        waiting = [self.attempt(name) for name in ("b", "c", "d")]
        extra = self.attempt("e")
        self.assertEqual(self.events[-1], ("e", NO_BACKEND))
        self.assertEqual(extra.refused, QUEUE_FULL)
        self.assertEqual(self.pool.queue.full_total, 1)
        for attempt in waiting:
            attempt.cancel()
        first.release()

    def test_no_queue_with_queue_max_zero(self) -> None:
        """queue_max = 0: a full pool answers 503 at once, as before."""
        self.pool.policy = evolve(self.pool.policy, queue_max=0)
        first = self.connected("a")
        second = self.attempt("b")
        self.assertEqual(self.events[-1], ("b", NO_BACKEND))
        self.assertIsNone(second.refused)
        self.assertEqual(self.pool.queue.queued_total, 0)
        first.release()

    def test_no_wait_when_no_backend_is_up(self) -> None:
        """Backends down (not full) give 503 at once: nothing to wait for."""
        self.pool.mark_down(self.backends[0], "test")
        attempt = self.attempt("a")
        self.assertEqual(self.events, [("a", NO_BACKEND)])
        self.assertIsNone(attempt.refused)

    def test_client_gone_leaves_the_queue(self) -> None:
        """A cancelled waiter leaves the queue; the next one takes the room,
        and the gone one hears nothing."""
        first = self.connected("a")
        gone = self.attempt("b")
        staying = self.attempt("c")
        gone.cancel()
        self.assertEqual(len(self.pool.queue), 1)
        first.release()
        self.clock.advance(0)
        self.assertIs(staying.state, AttemptState.CONNECTING)
        self.assertIs(gone.state, AttemptState.DONE)
        self.assertNotIn("b", [name for name, _ in self.events])
        staying.cancel()

    def test_a_backend_coming_up_serves_the_queue(self) -> None:
        """Room is also made by a backend enabled (or up again)."""
        spare = Backend("127.0.0.1", 9002, max_connections=1)
        self.pool.add(spare)
        self.pool.set_admin(spare, AdminState.DISABLED, "test")
        first = self.connected("a")
        waiting = self.attempt("b")
        self.pool.set_admin(spare, AdminState.ENABLED, "test")
        self.clock.advance(0)
        self.assertIs(self.endpoints.last.backend, spare)
        waiting.cancel()
        first.release()

    def test_a_backend_passing_its_checks_again_serves_the_queue(self) -> None:
        """A backend that rises back up makes room too."""
        spare = Backend("127.0.0.1", 9002, max_connections=1)
        self.pool.add(spare)
        self.pool.mark_down(spare, "test")
        first = self.connected("a")
        waiting = self.attempt("b")
        self.pool.record_check(spare, True, "passed")
        self.pool.record_check(spare, True, "passed")
        self.clock.advance(0)
        self.assertIs(self.endpoints.last.backend, spare)
        waiting.cancel()
        first.release()

    def test_the_end_of_an_ejection_serves_the_queue(self) -> None:
        """A backend back from an ejection makes room."""
        from rproxy.outlier import OutlierDetector
        from rproxy.policy import OutlierPolicy

        spare = Backend("127.0.0.1", 9002, max_connections=1)
        self.pool.add(spare)
        self.pool.policy = evolve(
            self.pool.policy,
            queue_timeout=60.0,
            outlier=OutlierPolicy(consecutive_5xx=1, max_ejection=1.0),
        )
        detector = OutlierDetector(self.pool, self.clock)
        spare.responses[4] += 1
        detector.five_xx(spare)
        self.assertTrue(spare.ejected)
        first = self.connected("a")
        waiting = self.attempt("b")
        self.clock.advance(30.0)
        self.assertIs(self.endpoints.last.backend, spare)
        waiting.cancel()
        first.release()

    def test_a_reload_raising_max_connections_serves_the_queue(self) -> None:
        """update_pool giving a backend more room lets the queue in."""
        import tomllib

        from rproxy.config import parse_config
        from rproxy.service._pool_update import update_pool

        def config(limit: int) -> Any:
            text = f"""
[pools.db]
backends = [{{ address = "127.0.0.1:9001", max_connections = {limit} }}]
[[listeners]]
name = "l"
listen = "tcp:0"
pool = "db"
"""
            return parse_config(tomllib.loads(text), "c.toml").pool("db")

        first = self.connected("a")
        waiting = self.attempt("b")
        update_pool(self.pool, config(1), config(2), None)
        self.clock.advance(0)
        self.assertIs(waiting.state, AttemptState.CONNECTING)
        waiting.cancel()
        first.release()

    def test_requests_in_flight_include_the_queued_for_the_budget(self) -> None:
        """The retry budget counts waiters among the requests in flight."""
        self.pool.add(Backend("127.0.0.1", 9002, max_connections=1))
        self.pool.policy = evolve(self.pool.policy, retry_budget=0.5, min_retries=0)
        first, second = self.connected("a"), self.connected("b")
        waiting = self.attempt("c")
        # 2 holding a backend + 1 queued + the one asking: half of 4 is 2.
        self.assertTrue(self.pool.take_retry())
        self.assertTrue(self.pool.take_retry())
        self.assertFalse(self.pool.take_retry())
        for attempt in (waiting, first, second):
            attempt.cancel()

    def test_failed_connect_after_the_queue_tries_the_next(self) -> None:
        """A waiter served whose connect fails retries like any attempt,
        waiting again while the rest are full."""
        self.pool.add(Backend("127.0.0.1", 9002, max_connections=1))
        first, second = self.connected("a"), self.connected("b")
        waiting = self.attempt("c")
        first.release()
        self.clock.advance(0)
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertIs(waiting.state, AttemptState.QUEUED)
        second.release()
        self.clock.advance(0)
        self.assertIs(self.endpoints.last.backend, self.pool.backends[1])
        self.endpoints.last.succeed()
        waiting.release()
        self.assertEqual(self.events[-1], ("c", "connected"))


class BackendQueueTests(SynchronousTestCase):
    def test_turns_are_taken_once_however_often_kicked(self) -> None:
        """Kicks before the turn come to one turn, on the head's clock."""
        clock = Clock()
        queue = BackendQueue()
        turns: list[str] = []

        class Waiter:
            choosy = False

            def take_turn(self) -> bool:
                turns.append("turn")
                return False

        queue.join(Waiter(), clock)
        queue.kick()
        queue.kick()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(turns, ["turn"])

    def test_stop_cancels_turns(self) -> None:
        """stop() leaves nothing on the clock."""
        clock = Clock()
        queue = BackendQueue()

        class Waiter:
            choosy = False

            def take_turn(self) -> bool:
                raise AssertionError("no turn after stop")

        queue.join(Waiter(), clock)
        queue.kick()
        queue.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class HTTPQueueTests(SynchronousTestCase):
    """Requests to a pool whose one backend takes one request at a time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 8001, max_connections=1)
        pool = Pool(
            "web",
            [self.backend],
            now=self.clock.seconds,
            policy=PoolPolicy(queue_timeout=2.0),
        )
        self.pool = pool
        self.harness = HTTPHarness(pools=[pool], clock=self.clock)
        self.addCleanup(self.harness.close)

    def test_queued_request_gets_the_kept_connection_when_room_is_made(self) -> None:
        """The request waiting goes out on the connection the first one
        gave back, once that one's response has ended."""
        first = self.harness.request("GET", "/a")
        second = self.harness.request("GET", "/b")
        self.assertEqual(len(self.harness.endpoints.attempts), 1)
        self.assertEqual(second.received, b"")
        backend = self.harness.backend_responds(OK)
        self.assertEqual(first.response().status, 200)
        self.clock.advance(0)
        self.assertEqual(len(self.harness.endpoints.attempts), 1)
        self.assertIn(b"GET /b HTTP/1.1", backend.received)
        backend.respond(OK)
        self.assertEqual(second.response().status, 200)

    def test_queue_timeout_answers_503_naming_the_queue(self) -> None:
        """A request left waiting queue_timeout gets 503; its access event
        says the queue refused it."""
        self.harness.request("GET", "/a")
        second = self.harness.request("GET", "/b")
        self.clock.advance(2.0)
        self.assertEqual(second.response().status, 503)
        event = self.harness.access[-1]
        self.assertEqual((event["status"], event["refused_by"]), (503, QUEUE_TIMEOUT))
        self.harness.backend_responds(OK)

    def test_a_shorter_response_timeout_ends_the_wait_with_503(self) -> None:
        """The pool's response timeout runs while a request waits: when it
        comes first, the wait ends as a queue timeout (503), not a 408."""
        self.pool.policy = evolve(
            self.pool.policy, queue_timeout=100.0, response_timeout=10.0
        )
        first = self.harness.request("GET", "/a")
        self.harness.endpoints.last.succeed()
        waiting = self.harness.request("GET", "/b")
        self.clock.advance(10.0)
        self.assertEqual(waiting.response().status, 503)
        self.assertEqual(self.harness.access[-1]["refused_by"], QUEUE_TIMEOUT)
        self.assertEqual(self.pool.queue.timeouts_total, 1)
        self.assertEqual(first.response().status, 504)  # its backend, silent

    def test_full_queue_answers_503_naming_it(self) -> None:
        """One request more than queue_max waiting gets 503 at once."""
        self.pool.policy = evolve(self.pool.policy, queue_max=1)
        self.harness.request("GET", "/a")
        waiting = self.harness.request("GET", "/b")
        refused = self.harness.request("GET", "/c")
        self.assertEqual(refused.response().status, 503)
        self.assertEqual(self.harness.access[-1]["refused_by"], QUEUE_FULL)
        self.assertEqual(waiting.received, b"")
        self.harness.backend_responds(OK)
        self.clock.advance(0)
        self.harness.backend_responds(OK)
        self.assertEqual(waiting.response().status, 200)

    def test_http_and_tcp_fronts_share_the_pools_queue(self) -> None:
        """A TCP listener and an HTTP listener on one pool wait in one
        queue, in the order they came."""
        tcp = TCPProxyFactory(
            self.pool, self.clock, listener="raw", endpoint_for=self.harness.endpoints
        )
        self.harness.request("GET", "/a")
        kept = self.harness.endpoints.last
        raw = connect(
            tcp.buildProtocol(IPv4Address("TCP", "192.0.2.9", 4000)),
            HalfCloseTransport(),
        )
        http = self.harness.request("GET", "/b")
        self.assertEqual(len(self.pool.queue), 2)
        kept.respond(OK)
        self.clock.advance(0)
        self.assertEqual(len(self.pool.queue), 1)  # the TCP connection went first
        server = self.harness.endpoints.last.succeed()
        self.assertEqual(http.received, b"")
        raw.loseConnection()
        server.loseConnection()
        self.clock.advance(0)
        kept.respond(OK)  # on the connection /a gave back
        self.assertEqual(http.response().status, 200)

    def test_client_closing_while_queued_leaves_the_queue(self) -> None:
        """A client that goes away (a FIN or a lost connection) while its
        request waits takes it out of the queue at once."""
        self.harness.request("GET", "/a")
        half = self.harness.request("GET", "/b")
        lost = self.harness.request("GET", "/c")
        self.assertEqual(len(self.pool.queue), 2)
        half.protocol.readConnectionLost()
        self.assertTrue(half.closed)
        lost.transport.finish(Failure(ConnectionLost()))
        self.assertEqual(len(self.pool.queue), 0)
        self.assertEqual([e["status"] for e in self.harness.access], [499, 499])
        self.harness.backend_responds(OK)


class TCPQueueTests(SynchronousTestCase):
    """TCP connections to a pool whose one backend takes one at a time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 9001, max_connections=1)
        self.pool = Pool(
            "db",
            [self.backend],
            now=self.clock.seconds,
            policy=PoolPolicy(queue_timeout=3.0),
        )
        self.endpoints = FakeEndpoints()
        self.factory = TCPProxyFactory(
            self.pool, self.clock, listener="front", endpoint_for=self.endpoints
        )

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def client(self) -> HalfCloseTransport:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return connect(proto, HalfCloseTransport())

    def test_connection_waits_paused_then_gets_the_backend(self) -> None:
        """A second connection waits (paused) until the first closes, then
        is spliced to the backend."""
        first = self.client()
        server = self.endpoints.last.succeed()
        second = self.client()
        self.assertEqual(second.producerState, "paused")
        self.assertEqual(len(self.endpoints.attempts), 1)
        first.loseConnection()
        server.loseConnection()
        self.clock.advance(0)
        self.assertEqual(len(self.endpoints.attempts), 2)
        other = self.endpoints.last.succeed()
        self.assertEqual(second.producerState, "producing")
        second.loseConnection()
        other.loseConnection()

    def test_queue_timeout_closes_the_connection(self) -> None:
        """Left waiting queue_timeout, the connection is closed; its access
        event says why."""
        first = self.client()
        server = self.endpoints.last.succeed()
        with captured_access() as access:
            second = self.client()
            self.clock.advance(3.0)
        self.assertTrue(second.disconnecting)
        self.assertEqual(access[-1]["ended"], "queue timeout")
        first.loseConnection()
        server.loseConnection()

    def test_full_queue_closes_the_connection_at_once(self) -> None:
        """A connection finding queue_max waiting is closed at once."""
        self.pool.policy = evolve(self.pool.policy, queue_max=1)
        first = self.client()
        server = self.endpoints.last.succeed()
        waiting = self.client()
        with captured_access() as access:
            refused = self.client()
        self.assertTrue(refused.disconnecting)
        self.assertEqual(access[-1]["ended"], "queue full")
        waiting.finish(Failure(ConnectionLost()))
        first.loseConnection()
        server.loseConnection()

    def test_client_gone_while_queued_leaves_the_queue(self) -> None:
        """A client that closes while waiting leaves the queue."""
        first = self.client()
        server = self.endpoints.last.succeed()
        with captured_access() as access:
            second = self.client()
            second.finish(Failure(ConnectionLost()))
        self.assertEqual(len(self.pool.queue), 0)
        self.assertEqual(access[-1]["ended"], "client left while queued")
        first.loseConnection()
        server.loseConnection()
