"""Defects external test suites found in the HTTP proxy (issue 11), each shown
over real sockets on 127.0.0.1: rproxy's HTTP listener and its backends (raw
Twisted protocols that answer exactly the bytes a test gives them, or a
twisted.web site) in this process, clients as Twisted protocols, every wait
bounded and timed on the reactor's clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: not an HTTP response at all.
GARBAGE = b"garbage\r\n\r\n"
#: a backend that closes the connection instead of answering.
RESET = None


class ScriptedBackend(Protocol):
    """
    Answers each request head it reads with the next of its factory's
    C{answers} (the last one again once they run out): bytes to write, or
    C{RESET} to drop the connection.  It never closes on its own.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.factory.open.add(self)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        factory: ScriptedFactory = self.factory  # type: ignore[assignment]
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            answers = factory.answers
            answer = answers[min(factory.requests, len(answers) - 1)]
            factory.requests += 1
            if answer is RESET:
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            self.transport.write(answer)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.open.discard(self)  # type: ignore[attr-defined]
        self.lost.callback(None)


class ScriptedFactory(Factory):
    """Builds L{ScriptedBackend}s and counts the requests they read."""

    protocol = ScriptedBackend
    noisy = False

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.requests = 0
        self.open: set[ScriptedBackend] = set()

    def close_all(self) -> Deferred[Any]:
        """Drop every connection still open; fires once all are lost."""
        lost = [backend.lost for backend in self.open]
        for backend in list(self.open):
            backend.transport.abortConnection()  # type: ignore[union-attr]
        return DeferredList(lost)


class Echo(Resource):
    """A backend that answers GET with its path and POST with the body."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello " + request.path

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return request.content.read()


class Client(Protocol):
    """
    Sends C{payload}, then C{step} bytes every C{interval} seconds of the
    reactor's clock until C{trickle} bytes have gone, stopping as soon as the
    proxy answers; collects the answer until the connection closes.

    @ivar done: fires with (everything received, when the connection closed
        by the reactor's clock).
    @ivar answered_at: when the first byte of the answer came.
    @ivar last_sent_at: when the last byte went out.
    """

    def __init__(
        self,
        payload: bytes,
        *,
        trickle: int = 0,
        step: int = 1,
        interval: float = 0.25,
    ) -> None:
        self.payload = payload
        self.left = trickle
        self.step = step
        self.interval = interval
        self.received: list[bytes] = []
        self.answered_at: float | None = None
        self.last_sent_at = 0.0
        self.done: Deferred[tuple[bytes, float]] = Deferred()
        self._next: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        self.last_sent_at = reactor.seconds()
        if self.left:
            self._next = reactor.callLater(self.interval, self._send)

    def _send(self) -> None:
        self._next = None
        size = min(self.step, self.left)
        self.left -= size
        self.transport.write(b"x" * size)  # type: ignore[union-attr]
        self.last_sent_at = reactor.seconds()
        if self.left:
            self._next = reactor.callLater(self.interval, self._send)

    def _stop_sending(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def dataReceived(self, data: bytes) -> None:
        if self.answered_at is None:
            self.answered_at = reactor.seconds()
        self._stop_sending()
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_sending()
        self.done.callback((b"".join(self.received), reactor.seconds()))


def post_head(length: int) -> bytes:
    return (
        b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


GET = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


class _ProxyCase(TestCase):
    """Starts backends and an rproxy HTTP listener on 127.0.0.1."""

    # Well above the second the fixed code needs, far below the 60 s
    # response timeout the old code waited for.
    timeout = 20

    def backend(self, factory: Factory, name: str) -> Backend:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if isinstance(factory, ScriptedFactory):
            self.addCleanup(factory.close_all)
        return Backend("127.0.0.1", port.getHost().port, name=name)

    def listen(self, pool: Pool, **settings: Any) -> HTTPProxyFactory:
        factory = HTTPProxyFactory(
            Registry([pool]),
            reactor,
            HTTPSettings(
                listener="front", router=Router([Route(pool=pool.name)]), **settings
            ),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.keep_alive.close_all)
        self.port = port.getHost().port
        self.addCleanup(factory.connections.drain, 5.0, reactor)
        return factory

    @inlineCallbacks
    def connect(self, client: Client) -> Any:
        """Connect C{client} to the listener."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        yield connectProtocol(endpoint, client)
        self.addCleanup(self._abort, client)
        return client

    def _abort(self, client: Client) -> Deferred[Any] | None:
        if client.done.called:
            return None
        client.transport.abortConnection()  # type: ignore[union-attr]
        return client.done

    @inlineCallbacks
    def exchange(self, client: Client, within: float) -> Any:
        """
        Connect C{client} and wait, at most C{within} seconds, for the proxy
        to answer and close: (what came, seconds from connecting).
        """
        started = reactor.seconds()
        yield self.connect(client)
        data, ended = yield client.done.addTimeout(within, reactor)
        return data, ended - started


class BrokenResponseTests(_ProxyCase):
    """A backend's malformed response gets the client a 502, at once."""

    @inlineCallbacks
    def test_bare_lf_response_head_is_502_within_a_second(self) -> Any:
        """
        A response head with bare LF line ends, from a backend that keeps the
        connection open, is refused at once: 502 in well under a second, not
        after the backend closes or the response timeout.
        """
        backend = ScriptedFactory([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"])
        pool = Pool("web", [self.backend(backend, "lf")])
        self.listen(pool)
        data, elapsed = yield self.exchange(Client(GET), within=5.0)
        self.assertTrue(data.startswith(b"HTTP/1.1 502 "), data)
        self.assertLess(elapsed, 1.0)
        self.assertEqual(backend.requests, 1)

    @inlineCallbacks
    def test_malformed_first_chunk_with_the_head_is_502(self) -> Any:
        """
        A chunked response whose first chunk size is not hex, in the same
        write as its head, gets the client a 502 (nothing had been sent to
        it yet), not a connection reset with nothing.
        """
        backend = ScriptedFactory(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
        )
        pool = Pool("web", [self.backend(backend, "zz")])
        self.listen(pool)
        data, _ = yield self.exchange(Client(GET), within=5.0)
        self.assertTrue(data.startswith(b"HTTP/1.1 502 "), data)
        self.assertEqual(backend.requests, 1)


class SlowBodyTests(_ProxyCase):
    """
    Request bodies that stall or trickle (slowhttptest -B) are answered 408
    and closed; a body that comes steadily above the minimum rate is not.
    """

    timeout = 25

    #: seconds between two reads of a body, and bytes per second it must
    #: average (after the proxy's grace of a few seconds).
    BODY_TIMEOUT = 1.0
    MIN_RATE = 100.0

    def setUp(self) -> None:
        site = Site(Echo())
        site.noisy = False
        self.pool = Pool("web", [self.backend(site, "echo")])
        self.factory = self.listen(
            self.pool,
            request_body_timeout=self.BODY_TIMEOUT,
            request_body_min_rate=self.MIN_RATE,
        )

    def assert_cut(self, client: Client, data: bytes) -> None:
        """C{client} got a 408 and was closed before its body was all sent."""
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        self.assertIn(b"Connection: close\r\n", data)
        self.assertGreater(client.left, 0)

    @inlineCallbacks
    def test_stalled_body_is_408_after_the_body_timeout(self) -> Any:
        """
        A body that stops after a few bytes is answered 408 and closed once
        the body timeout has passed since its last byte, and counted as a
        body timeout.
        """
        client = Client(post_head(100000) + b"abc")
        data, _ = yield self.exchange(client, within=10.0)
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        assert client.answered_at is not None
        waited = client.answered_at - client.last_sent_at
        # The connection's timer looks at most once per shortest timeout.
        self.assertGreaterEqual(waited, self.BODY_TIMEOUT)
        self.assertLess(waited, 2 * self.BODY_TIMEOUT + 1.0)
        stats = self.factory.stats
        self.assertEqual(
            (stats.request_body_timeouts, stats.request_body_too_slow), (1, 0)
        )
        self.assertEqual(stats.requests[3], 1)  # one 4xx

    @inlineCallbacks
    def test_trickled_body_is_cut_and_steady_body_is_not(self) -> Any:
        """
        Of two bodies sent at once, one byte every 0.25 s (4 B/s, each gap
        well within the body timeout) is answered 408 once the grace has
        passed, and counted as too slow; one at twice the minimum rate
        arrives whole, though it takes longer than that.
        """
        slow = Client(post_head(100000), trickle=100000, step=1, interval=0.25)
        steady_size = 1400
        steady = Client(
            post_head(steady_size), trickle=steady_size, step=20, interval=0.1
        )
        started = reactor.seconds()
        yield self.connect(slow)
        yield self.connect(steady)
        (slow_data, slow_end), (steady_data, steady_end) = yield DeferredList(
            [c.done.addTimeout(15.0, reactor) for c in (slow, steady)],
            fireOnOneErrback=True,
            consumeErrors=True,
        ).addCallback(lambda results: [value for _, value in results])
        self.assert_cut(slow, slow_data)
        # Cut after the proxy's grace of five seconds, not long after.
        self.assertGreaterEqual(slow_end - started, 5.0)
        self.assertLess(slow_end - started, 10.0)
        head, _, body = steady_data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), steady_data)
        self.assertEqual(body, b"x" * steady_size)
        self.assertGreater(steady_end, slow_end)
        stats = self.factory.stats
        self.assertEqual(
            (stats.request_body_timeouts, stats.request_body_too_slow), (0, 1)
        )

    @inlineCallbacks
    def test_fifty_trickled_bodies_are_cut_while_others_are_served(self) -> Any:
        """
        Fifty clients trickling their bodies at once are all answered 408
        and closed; a GET on the same listener meanwhile is answered at
        once, before any of them is cut.
        """
        clients = [
            Client(post_head(100000), trickle=100000, step=1, interval=0.25)
            for _ in range(50)
        ]
        started = reactor.seconds()
        yield DeferredList([self.connect(c) for c in clients], fireOnOneErrback=True)
        data, elapsed = yield self.exchange(Client(GET), within=3.0)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertLess(elapsed, 1.0)
        # Accepted before the GET (one listening socket), open after it.
        self.assertEqual(len(self.factory.connections), 50)
        answered = reactor.seconds()
        results = yield DeferredList(
            [c.done.addTimeout(15.0, reactor) for c in clients],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        ends = []
        for client, (_, (client_data, ended)) in zip(clients, results, strict=True):
            self.assert_cut(client, client_data)
            ends.append(ended)
        self.assertLess(answered, min(ends))
        self.assertLess(max(ends) - started, 12.0)
        stats = self.factory.stats
        self.assertEqual(
            (stats.request_body_timeouts, stats.request_body_too_slow), (0, 50)
        )
        self.assertEqual(len(self.factory.connections), 0)


class PanicThresholdTests(_ProxyCase):
    """
    Passive health never takes a pool's last backend out; of two, the bad
    one goes and the good one serves.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @inlineCallbacks
    def statuses(self, count: int) -> Any:
        """C{count} GETs in turn, each on its own connection: their statuses
        and bodies."""
        results = []
        for _ in range(count):
            data, _ = yield self.exchange(Client(GET), within=5.0)
            head, _, body = data.partition(b"\r\n\r\n")
            results.append((int(head.split(b" ")[1]), body))
        return results

    def warnings_about(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("backend") == name and e.get("log_level") is LogLevel.warn
        ]

    @inlineCallbacks
    def test_lone_backend_stays_in_after_three_failures(self) -> Any:
        """
        A lone backend that answers garbage, resets, then garbage again is
        still sent every following request (no 503), and the run of
        failures is logged naming it.
        """
        script: list[bytes | None] = [GARBAGE, RESET, GARBAGE, GOOD]
        factory = ScriptedFactory(script)
        backend = self.backend(factory, "lone")
        self.listen(Pool("web", [backend]))
        results = yield self.statuses(8)
        self.assertEqual([s for s, _ in results], [502] * 3 + [200] * 5)
        self.assertEqual([b for _, b in results[3:]], [b"ok"] * 5)
        self.assertEqual(factory.requests, 8)
        self.assertEqual(backend.failures_total, 3)
        self.assertTrue(backend.is_up)
        self.assertTrue(self.warnings_about("lone"), self.events)

    @inlineCallbacks
    def test_bad_backend_of_two_is_taken_out(self) -> Any:
        """
        Of two backends, the one that answers only garbage is taken out
        after three failures (logged naming it); the other serves
        everything after.
        """
        bad = ScriptedFactory([GARBAGE])
        good = ScriptedFactory([GOOD])
        bad_backend = self.backend(bad, "bad")
        good_backend = self.backend(good, "good")
        self.listen(Pool("web", [bad_backend, good_backend]))
        results = yield self.statuses(12)
        statuses = [s for s, _ in results]
        self.assertEqual(statuses.count(502), 3, statuses)
        last_bad = max(i for i, s in enumerate(statuses) if s == 502)
        self.assertEqual(statuses[last_bad + 1 :], [200] * (11 - last_bad))
        self.assertEqual(bad.requests, 3)
        self.assertEqual(good.requests, 9)
        self.assertFalse(bad_backend.is_up)
        self.assertTrue(good_backend.is_up)
        self.assertTrue(self.warnings_about("bad"), self.events)
