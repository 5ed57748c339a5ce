"""Background requests (L{background_request}): routed, filtered and
proxied like a client's, their response dropped, their end reported, and
timed out when the backend is silent."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from rproxy.http.exchange import Exchange
from rproxy.http.filters import HTTPFilter, LocalReply
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.routing import Route
from rproxy.http.subrequest import background_request
from rproxy.testing import HTTPHarness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Refresher(HTTPFilter):
    """Answers a client's request itself after starting a background GET of
    the same target, and notes the responses of background requests."""

    def __init__(self) -> None:
        self.done: list[Any] = []
        self.seen: list[tuple[int, bytes]] = []

    def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
        if exchange.notes.get("background"):
            return None
        copy = RequestHead(b"GET", head.target, (1, 1), list(head.headers), head.host)
        background_request(exchange, copy, {"background": True}).addCallback(
            self.done.append
        )
        return LocalReply(200, body=b"stale")

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        self.seen.append((head.status, exchange.request.target))  # type: ignore[union-attr]

    def response_body(self, exchange: Exchange, data: Any) -> Any:
        self.seen.append((0, bytes(data)))
        return data


class BackgroundRequestTests(SynchronousTestCase):
    def harness(self, refresher: Refresher) -> HTTPHarness:
        harness = HTTPHarness([Route(pool="web", filters=[refresher])])
        self.addCleanup(harness.close)
        return harness

    def test_background_request_is_proxied_and_its_response_dropped(self) -> None:
        """The client gets the filter's answer at once; the background
        request reaches the backend, its response goes through the filters
        and nowhere else, and its Deferred fires at the end."""
        refresher = Refresher()
        harness = self.harness(refresher)
        client = harness.request("GET", "/page", headers=[("Host", "example.com")])
        self.assertEqual(client.response().body, b"stale")
        self.assertEqual(refresher.done, [])
        attempt = harness.backend_responds(OK)
        self.assertTrue(attempt.received.startswith(b"GET /page HTTP/1.1\r\n"))
        self.assertEqual(refresher.seen, [(200, b"/page"), (0, b"ok")])
        self.assertEqual(refresher.done, [None])
        self.assertEqual(client.received.count(b"HTTP/1.1"), 1)
        self.assertEqual([e["status"] for e in harness.access], [200, 200])

    def test_backend_connection_is_kept_for_client_requests(self) -> None:
        """The backend connection a background request used goes back to the
        listener's keep-alive pool: the next one reuses it."""
        refresher = Refresher()
        harness = self.harness(refresher)
        harness.request("GET", "/a")
        attempt = harness.backend_responds(OK)
        harness.request("GET", "/b")
        self.assertEqual(len(harness.endpoints.attempts), 1)
        self.assertIn(b"GET /b HTTP/1.1\r\n", attempt.received)
        attempt.respond(OK)

    def test_failed_background_request_still_ends(self) -> None:
        """A refused connect ends the background request (its Deferred
        fires) without touching the client."""
        refresher = Refresher()
        harness = self.harness(refresher)
        client = harness.request("GET", "/a")
        harness.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(refresher.done, [None])
        self.assertEqual(refresher.seen, [(502, b"/a"), (0, b"502 Bad Gateway\n")])
        self.assertFalse(client.closed)

    def test_silent_backend_times_the_background_request_out(self) -> None:
        """A backend that never answers a background request ends it at the
        response timeout, and no timer is left behind."""
        refresher = Refresher()
        harness = self.harness(refresher)
        harness.request("GET", "/a")
        harness.endpoints.last.succeed()
        harness.clock.advance(59)
        self.assertEqual(refresher.done, [])
        harness.clock.advance(120)
        self.assertEqual(refresher.done, [None])
        self.assertEqual(refresher.seen, [(504, b"/a"), (0, b"504 Gateway Timeout\n")])

    def test_a_request_with_a_body_is_refused(self) -> None:
        """Only bodiless requests may go in the background."""
        harness = HTTPHarness()
        self.addCleanup(harness.close)
        client = harness.request("GET", "/")
        exchange = client.protocol.exchange
        assert exchange is not None
        head = RequestHead(b"POST", b"/", (1, 1), [], body="length", content_length=1)
        self.assertRaises(ValueError, background_request, exchange, head, {})
        harness.backend_responds(OK)
