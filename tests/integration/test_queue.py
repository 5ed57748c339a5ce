"""The pool's queue over real sockets on 127.0.0.1: a twisted.web backend in
process that takes one request at a time (max_connections = 1) and answers
when the test says, clients in threads (http.client)."""

from __future__ import annotations

import http.client
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.policy import PoolPolicy


class Held(Resource):
    """Holds each request until released (or answers at once once told
    to), and records the paths in the order they arrived."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.held: list[Request] = []
        self.answer_at_once = False
        self._arrivals: list[tuple[int, Deferred[None]]] = []

    def arrived(self, count: int) -> Deferred[None]:
        """Fires once C{count} requests have arrived."""
        d: Deferred[None] = Deferred()
        self._arrivals.append((count, d))
        self._notify()
        return d

    def _notify(self) -> None:
        for entry in list(self._arrivals):
            if len(self.paths) >= entry[0]:
                self._arrivals.remove(entry)
                entry[1].callback(None)

    def render_GET(self, request: Request) -> Any:
        self.paths.append(request.path.decode())
        self._notify()
        if self.answer_at_once:
            return b"ok " + request.path
        self.held.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        """Answer every request held, from now on at once."""
        self.answer_at_once = True
        held, self.held = self.held, []
        for request in held:
            request.write(b"ok " + request.path)
            request.finish()


class QueueTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.resource = Held()
        site = Site(self.resource)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = Backend("127.0.0.1", port.getHost().port, max_connections=1)
        self.pool = Pool("web", [backend], policy=PoolPolicy(queue_timeout=0.5))
        self.factory = HTTPProxyFactory(
            Registry([self.pool]),
            reactor,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
        )
        proxy = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(proxy.stopListening)
        self.addCleanup(self.factory.keep_alive.close_all)
        self.port = proxy.getHost().port
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)
        self.addCleanup(self.resource.release)

    def get(self, path: str) -> Deferred[tuple[int, bytes]]:
        """GET C{path} through the proxy on a new connection, in a thread."""

        def run() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        return deferToThread(run)

    @inlineCallbacks
    def queued(self, count: int) -> Any:
        """Wait (a bounded number of short polls) until C{count} wait in
        the pool's queue."""
        for _ in range(400):
            if len(self.pool.queue) >= count:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"never {count} queued: {len(self.pool.queue)}")

    @inlineCallbacks
    def test_full_backend_queues_then_503_after_queue_timeout(self) -> Any:
        """With the backend's one request in flight, the next waits in the
        queue (the backend never sees it) and gets 503 after queue_timeout;
        the first is answered when the backend answers."""
        first = self.get("/first")
        yield self.resource.arrived(1)
        status, _ = yield self.get("/second")
        self.assertEqual(status, 503)
        self.assertEqual(self.resource.paths, ["/first"])
        self.assertEqual(self.pool.queue.timeouts_total, 1)
        self.resource.release()
        status, body = yield first
        self.assertEqual((status, body), (200, b"ok /first"))

    @inlineCallbacks
    def test_queued_requests_are_served_in_order_when_the_backend_frees(
        self,
    ) -> Any:
        """Requests queued behind a full backend reach it in the order they
        came, each once the one before has ended, and are all answered."""
        self.pool.policy = PoolPolicy(queue_timeout=30.0)
        first = self.get("/a")
        yield self.resource.arrived(1)
        waiting = []
        for count, path in enumerate(("/b", "/c", "/d"), start=1):
            waiting.append(self.get(path))
            yield self.queued(count)
        self.assertEqual(self.resource.paths, ["/a"])
        self.resource.release()
        results = [(yield first)]
        for answer in waiting:
            results.append((yield answer))
        self.assertEqual(self.resource.paths, ["/a", "/b", "/c", "/d"])
        self.assertEqual(
            results,
            [(200, b"ok /a"), (200, b"ok /b"), (200, b"ok /c"), (200, b"ok /d")],
        )
        queue = self.pool.queue
        self.assertEqual((queue.served_total, queue.timeouts_total), (3, 0))
