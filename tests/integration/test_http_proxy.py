"""The HTTP proxy over real sockets on 127.0.0.1: a twisted.web backend in
process, clients in threads (the stdlib's http.client and raw sockets)."""

from __future__ import annotations

import http.client
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from tests.integration.helpers import drain, raw_exchange


def half_closed_exchange(port: int, data: bytes) -> bytes:
    """Send C{data}, shut the write side (FIN) and read until the peer
    closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return drain(sock)


class Hello(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        path = request.path
        if path == b"/headers":
            lines = [
                b"%s: %s" % (k, v)
                for k, v in request.requestHeaders.getAllRawHeaders()
                for v in v
            ]
            return b"\n".join(sorted(lines))
        if path == b"/chunked":
            # No Content-Length: twisted.web answers chunked.
            request.write(b"part one,")
            request.write(b" part two")
            request.finish()
            return NOT_DONE_YET  # type: ignore[no-any-return]
        if path == b"/big":
            return b"x" * (1 << 20)
        if path == b"/64k":
            return b"y" * 65536
        return f"hello from {self.name} {path.decode()}".encode()

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return request.content.read()


class CountingSite(Site):
    """A Site that counts the TCP connections made to it."""

    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


class HTTPProxyTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sites = []
        backends = []
        for name in ("b0", "b1"):
            site = CountingSite(Hello(name))
            site.noisy = False
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.sites.append((site, port))
            backends.append(Backend("127.0.0.1", port.getHost().port, name=name))
        self.pool = Pool("web", backends)
        self.registry = Registry([self.pool])
        self.factory = HTTPProxyFactory(
            self.registry,
            reactor,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
        )
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.factory.keep_alive.close_all)
        self.port = port.getHost().port
        # Runs first: close client connections as a shutdown would, so no
        # keep-alive timer outlives the test.
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)

    def client(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)

    def requests(self, *calls: tuple[str, str, bytes | None, dict[str, str]]) -> Any:
        """Make C{calls} in turn on one client connection, in a thread."""

        def run() -> list[tuple[int, bytes, dict[str, str]]]:
            conn = self.client()
            results = []
            try:
                for method, path, body, headers in calls:
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    results.append(
                        (response.status, response.read(), dict(response.getheaders()))
                    )
            finally:
                conn.close()
            return results

        return deferToThread(run)

    @inlineCallbacks
    def test_get_round_trip_adds_forwarding_headers(self) -> Any:
        """A GET reaches a backend with X-Forwarded-For, and comes back."""
        ((status, body, _),) = yield self.requests(("GET", "/headers", None, {}))
        self.assertEqual(status, 200)
        self.assertIn(b"X-Forwarded-For: 127.0.0.1", body)
        self.assertIn(b"X-Forwarded-Proto: http", body)

    @inlineCallbacks
    def test_keep_alive_reuses_client_and_backend_connections(self) -> Any:
        """Ten requests on one client connection use one connection per
        backend."""
        calls = [("GET", f"/n{i}", None, {}) for i in range(10)]
        results = yield self.requests(*calls)
        self.assertEqual([r[0] for r in results], [200] * 10)
        self.assertEqual(sum(site.connections for site, _ in self.sites), 2)

    @inlineCallbacks
    def test_post_body_arrives_intact(self) -> Any:
        """A 1 MiB Content-Length body is streamed to the backend unchanged."""
        payload = bytes(range(256)) * 4096
        ((status, body, _),) = yield self.requests(("POST", "/echo", payload, {}))
        self.assertEqual((status, body), (200, payload))

    @inlineCallbacks
    def test_chunked_request_body_is_rechunked(self) -> Any:
        """A chunked request body reaches the backend whole."""

        def run() -> tuple[int, bytes]:
            conn = self.client()
            try:
                conn.request(
                    "POST",
                    "/echo",
                    body=iter([b"abc", b"defg", b"h" * 70000]),
                    encode_chunked=True,
                )
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        status, body = yield deferToThread(run)
        self.assertEqual((status, body), (200, b"abcdefg" + b"h" * 70000))

    @inlineCallbacks
    def test_chunked_response_passes_through(self) -> Any:
        """A backend's chunked response reaches the client whole."""
        ((status, body, headers),) = yield self.requests(("GET", "/chunked", None, {}))
        self.assertEqual((status, body), (200, b"part one, part two"))
        self.assertEqual(headers.get("Transfer-Encoding"), "chunked")

    @inlineCallbacks
    def test_large_response_is_streamed(self) -> Any:
        """A 1 MiB response arrives byte-identical."""
        ((status, body, _),) = yield self.requests(("GET", "/big", None, {}))
        self.assertEqual((status, len(body)), (200, 1 << 20))

    @inlineCallbacks
    def test_large_responses_back_to_back_on_one_connection(self) -> Any:
        """A backend connection paused by backpressure is resumed before it
        goes back to the pool, so the next response on it is read."""
        # A 64 KiB body arrives with its head in one read and fills the
        # client's write buffer at once: the backend connection is paused
        # exactly when its response ends.
        results = yield self.requests(*[("GET", "/64k", None, {})] * 4)
        self.assertEqual([(r[0], len(r[1])) for r in results], [(200, 65536)] * 4)
        self.assertEqual(sum(site.connections for site, _ in self.sites), 2)

    @inlineCallbacks
    def test_pipelined_requests_are_answered_in_order(self) -> Any:
        """Three requests sent at once get three responses, in order."""

        data = yield deferToThread(
            raw_exchange,
            self.port,
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(data.count(b"HTTP/1.1 200"), 3)
        one, two, three = (data.index(p) for p in (b" /one", b" /two", b" /three"))
        self.assertLess(one, two)
        self.assertLess(two, three)

    @inlineCallbacks
    def test_malformed_request_gets_400_and_reaches_no_backend(self) -> Any:
        """Content-Length with Transfer-Encoding is refused and not forwarded."""

        data = yield deferToThread(
            raw_exchange,
            self.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertEqual(sum(site.connections for site, _ in self.sites), 0)

    @inlineCallbacks
    def test_dead_backend_is_routed_around(self) -> Any:
        """With one backend gone, every request still succeeds on the other."""
        yield self.sites[1][1].stopListening()
        results = yield self.requests(*[("GET", "/x", None, {}) for _ in range(6)])
        self.assertEqual([r[0] for r in results], [200] * 6)
        self.assertTrue(all(r[1].startswith(b"hello from b0") for r in results))

    @inlineCallbacks
    def test_no_backend_up_is_503(self) -> Any:
        """When every backend is down the client gets a 503."""
        for backend in self.pool.backends:
            self.pool.mark_down(backend, "test")
        ((status, body, _),) = yield self.requests(("GET", "/", None, {}))
        self.assertEqual((status, body), (503, b"503 Service Unavailable\n"))

    @inlineCallbacks
    def test_refused_everywhere_is_502(self) -> Any:
        """When every connect is refused the client gets a 502."""
        for _, port in self.sites:
            yield port.stopListening()
        ((status, _, _),) = yield self.requests(("GET", "/", None, {}))
        self.assertEqual(status, 502)

    @inlineCallbacks
    def test_half_closed_client_gets_its_response(self) -> Any:
        """A client that shuts its write side after its request still reads
        the whole response, then the proxy closes."""
        data = yield deferToThread(
            half_closed_exchange,
            self.port,
            b"GET /half HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        # The proxy closed after the response (half_closed_exchange reads to
        # the end).  Whether the head says Connection: close depends on
        # whether the FIN was read before the backend answered: a race on
        # loopback, so not asserted here (the unit tests pin both orders).
        self.assertRegex(body, rb"^hello from b[01] /half$")

    @inlineCallbacks
    def test_half_closed_client_gets_every_pipelined_response(self) -> Any:
        """Requests pipelined before the FIN, one with a body, are all
        answered in order."""
        data = yield deferToThread(
            half_closed_exchange,
            self.port,
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde"
            b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(data.count(b"HTTP/1.1 200 OK\r\n"), 3, data)
        one, two, three = (data.index(p) for p in (b" /one", b"abcde", b" /three"))
        self.assertLess(one, two)
        self.assertLess(two, three)
        # Only the last response may announce the close, and it does when
        # the FIN was read before that response was sent (a loopback race,
        # as in test_half_closed_client_gets_its_response).
        closes = data.count(b"Connection: close")
        self.assertLessEqual(closes, 1)
        if closes:
            self.assertGreater(data.index(b"Connection: close"), two)
