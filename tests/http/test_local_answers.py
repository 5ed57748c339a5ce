"""Answers rproxy makes itself, as the response filters see them: a filter's
L{LocalReply} passes through the filters before it (not its own or later
ones), bodiless statuses stay bodiless, and the errors rproxy answers for a
failed backend reach the route's response hooks, which may replace them."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from rproxy.http.exchange import Exchange
from rproxy.http.filters import HTTPFilter, LocalReply
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.routing import Route
from rproxy.testing import HTTPHarness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Stamp(HTTPFilter):
    """Adds C{X-Seen: NAME} to every response head it sees, and notes the
    upstream error it was shown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[tuple[int, str | None]] = []

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        self.errors.append((head.status, exchange.upstream_error))
        head.headers.append((b"X-Seen", self.name.encode()))


class Answer(HTTPFilter):
    """Answers every request with C{reply}, and stamps responses it sees."""

    name = "answer"

    def __init__(self, reply: LocalReply) -> None:
        self.reply = reply

    def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
        return self.reply

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers.append((b"X-Seen", b"answer"))


class Stale(HTTPFilter):
    """Replaces rproxy's own errors for a failed backend with a kept answer."""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> Any:
        if exchange.upstream_error is not None:
            return LocalReply(200, [(b"X-Stale", b"1")], b"old")
        return None


class _Case(SynchronousTestCase):
    def harness(self, *args: Any, **kwargs: Any) -> HTTPHarness:
        harness = HTTPHarness(*args, **kwargs)
        self.addCleanup(harness.close)
        return harness


class LocalReplyThroughFilterTests(_Case):
    def test_a_local_reply_passes_the_filters_before_the_one_that_made_it(
        self,
    ) -> None:
        """The outer filters' response hooks see a filter's LocalReply; the
        answering filter's own and the inner filters' do not."""
        outer, inner = Stamp("outer"), Stamp("inner")
        harness = self.harness(
            [Route(pool="web", filters=[Answer(LocalReply(200, body=b"hit")), inner])],
            filters=[outer],
        )
        client = harness.request("GET", "/")
        response = client.response()
        self.assertEqual((response.status, response.body), (200, b"hit"))
        self.assertEqual(response.headers_named(b"x-seen"), [b"outer"])
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertFalse(client.closed)

    def test_a_response_side_local_reply_passes_the_outer_filters(self) -> None:
        """A LocalReply from response_head goes through the response hooks
        of the filters before it, once."""

        class Mask(HTTPFilter):
            def response_head(self, exchange: Exchange, head: ResponseHead) -> Any:
                return LocalReply(503, body=b"later\n")

        outer = Stamp("outer")
        harness = self.harness(filters=[outer, Mask()])
        client = harness.request("GET", "/")
        harness.backend_responds(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
        response = client.response()
        self.assertEqual((response.status, response.body), (503, b"later\n"))
        self.assertEqual(response.headers_named(b"x-seen"), [b"outer"])
        self.assertEqual(outer.errors, [(503, None)])

    def test_bodiless_statuses_get_no_body_and_no_length(self) -> None:
        """A LocalReply of 304 or 204 is sent without a body or a
        Content-Length, whatever body it was given."""
        for status in (304, 204):
            harness = self.harness(
                filters=[Answer(LocalReply(status, [(b"ETag", b'"a"')], b"ignored"))]
            )
            client = harness.request("GET", "/")
            head = client.received.split(b"\r\n\r\n")[0]
            self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status))
            self.assertNotIn(b"content-length", head.lower())
            self.assertTrue(client.received.endswith(b"\r\n\r\n"))
            self.assertFalse(client.closed)

    def test_head_reply_announces_the_length_without_the_body(self) -> None:
        """A LocalReply to a HEAD request carries the body's length and no
        body."""
        harness = self.harness(filters=[Answer(LocalReply(200, body=b"12345"))])
        client = harness.request("HEAD", "/")
        self.assertIn(b"\r\nContent-Length: 5\r\n", client.received)
        self.assertTrue(client.received.endswith(b"\r\n\r\n"))


class UpstreamErrorTests(_Case):
    def test_connect_failure_reaches_response_filters_and_closes(self) -> None:
        """A backend that refuses gives a 502 the route's response filters
        see, with the reason; the client gets it and is closed."""
        stamp = Stamp("route")
        harness = self.harness([Route(pool="web", filters=[stamp])])
        client = harness.request("GET", "/")
        harness.endpoints.last.fail(ConnectionRefusedError())
        response = client.response()
        self.assertEqual(response.status, 502)
        self.assertEqual(response.body, b"502 Bad Gateway\n")
        self.assertEqual(response.headers_named(b"x-seen"), [b"route"])
        self.assertEqual(stamp.errors, [(502, "connect failed")])
        self.assertTrue(client.closed)
        self.assertEqual(harness.access[0]["status"], 502)

    def test_a_filter_may_replace_the_error_and_keep_the_connection(self) -> None:
        """A LocalReply for rproxy's own 502 is what the client gets, and
        its connection stays open."""
        harness = self.harness([Route(pool="web", filters=[Stale()])])
        client = harness.request("GET", "/")
        harness.endpoints.last.fail(ConnectionRefusedError())
        response = client.response()
        self.assertEqual((response.status, response.body), (200, b"old"))
        self.assertEqual(response.header(b"x-stale"), b"1")
        self.assertFalse(client.closed)

    def test_silent_backend_gives_504_through_the_filters(self) -> None:
        """A backend that never answers gives a 504 the response filters
        see as a timeout."""
        stamp = Stamp("route")
        harness = self.harness([Route(pool="web", filters=[stamp])])
        client = harness.request("GET", "/")
        harness.endpoints.last.succeed()
        harness.clock.advance(120)
        self.assertEqual(client.response().status, 504)
        self.assertEqual(stamp.errors, [(504, "no response in time")])
        self.assertTrue(client.closed)

    def test_no_backend_up_gives_503_through_the_filters(self) -> None:
        """With every backend down the 503 goes through the response
        filters too."""
        stamp = Stamp("route")
        harness = self.harness([Route(pool="web", filters=[stamp])])
        pool = harness.registry.get("web")
        for backend in pool.backends:
            pool.mark_down(backend, "test")
        client = harness.request("GET", "/")
        self.assertEqual(client.response().status, 503)
        self.assertEqual(stamp.errors, [(503, "no backend available")])

    def test_without_response_filters_errors_are_unchanged(self) -> None:
        """A route with no response hooks answers a refused connect with
        the plain 502 and closes, as before."""
        harness = self.harness()
        client = harness.request("GET", "/")
        harness.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(client.response().status, 502)
        self.assertTrue(client.closed)
