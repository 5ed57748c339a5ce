"""The cache over real sockets on 127.0.0.1: a twisted.web backend in
process, rproxy's HTTP listener with a cached route, clients in threads
(the stdlib's http.client).  A stored response is served with the backend
stopped, and a stale one in place of the failed connect (stale-if-error)."""

from __future__ import annotations

import http.client
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rproxy.backends import Backend, Pool, Registry
from rproxy.cache.settings import CacheSettings
from rproxy.http.filters.cache import Cache, CacheFilter
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from tests.cache.fakes import FakeStore


class Origin(Resource):
    """Answers /fresh for a minute and /stale as stale at once (but usable
    for a minute if the origin fails); counts the requests."""

    isLeaf = True
    requests = 0

    def render_GET(self, request: Request) -> bytes:
        self.requests += 1
        if request.path == b"/fresh":
            request.setHeader(b"Cache-Control", b"max-age=60")
        else:
            request.setHeader(b"Cache-Control", b"max-age=0, stale-if-error=60")
        return b"origin says " + request.path


class CacheIntegrationTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.origin = Origin()
        site = Site(self.origin)
        site.noisy = False
        self.backend_port = reactor.listenTCP(0, site, interface="127.0.0.1")
        backend = Backend("127.0.0.1", self.backend_port.getHost().port)
        self.cache = Cache("static", CacheSettings(), FakeStore(), reactor)
        route = Route(pool="web", filters=[CacheFilter(self.cache)])
        self.factory = HTTPProxyFactory(
            Registry([Pool("web", [backend])]),
            reactor,
            HTTPSettings(listener="front", router=Router([route])),
        )
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.factory.keep_alive.close_all)
        self.port = port.getHost().port
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)

    def get(self, path: str) -> Any:
        """GET C{path} on a new client connection, in a thread."""

        def run() -> tuple[int, bytes, dict[str, str]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                return response.status, response.read(), dict(response.getheaders())
            finally:
                conn.close()

        return deferToThread(run)

    @inlineCallbacks
    def stop_backend(self) -> Any:
        """Stop the origin and drop the idle connections to it."""
        yield self.backend_port.stopListening()
        self.factory.keep_alive.close_all()

    @inlineCallbacks
    def test_stored_response_is_served_with_the_backend_stopped(self) -> Any:
        """A fresh stored response is served after the backend has gone."""
        status, body, _ = yield self.get("/fresh")
        self.assertEqual((status, body), (200, b"origin says /fresh"))
        yield self.stop_backend()
        status, body, headers = yield self.get("/fresh")
        self.assertEqual((status, body), (200, b"origin says /fresh"))
        self.assertTrue(headers["Cache-Status"].startswith("rproxy; hit"))
        self.assertEqual(self.origin.requests, 1)

    @inlineCallbacks
    def test_stale_response_replaces_a_failed_connect(self) -> Any:
        """With the backend stopped, a stale response is served (stale-if-error)."""
        status, body, _ = yield self.get("/stale")
        self.assertEqual(status, 200)
        yield self.stop_backend()
        status, body, headers = yield self.get("/stale")
        self.assertEqual((status, body), (200, b"origin says /stale"))
        self.assertIn("fwd-status=502", headers["Cache-Status"])
        self.assertIn("detail=stale-if-error", headers["Cache-Status"])
