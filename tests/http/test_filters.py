"""The filter chain through the HTTP/1.1 codec and the exchange, driven with
L{rproxy.testing.HTTPHarness}: continuing, changing the request, answering
locally, suspending and resuming each side, failing, order, per-route
filters, what response_end and request_end add, bodies of a new length,
reloads, and what a route without filters costs."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rproxy._fastwrite import Data
from rproxy.acme.challenges import Challenges
from rproxy.backends import Backend, Pool
from rproxy.http import _h1_writer as h1_writer_module
from rproxy.http.exchange import BODY_BUFFER, Exchange, Phase
from rproxy.http.filters import HTTPFilter, LocalReply
from rproxy.http.filters.acme import AcmeChallenges
from rproxy.http.filters.headers import ResponseHeaders
from rproxy.http.filters.redirect import HTTPSRedirect
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.listener import HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.interfaces import IHTTPFilter
from rproxy.testing import Client, HTTPHarness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

Calls = list[tuple[str, str]]


class Recorder(HTTPFilter):
    """Passes everything on, noting each hook it sees as (name, hook)."""

    def __init__(self, name: str, calls: Calls) -> None:
        self.name = name
        self.calls = calls

    def request_head(self, exchange: Exchange, head: RequestHead) -> None:
        self.calls.append((self.name, "request_head"))

    def request_body(self, exchange: Exchange, data: bytes) -> bytes:
        self.calls.append((self.name, "request_body"))
        return data

    def request_end(self, exchange: Exchange) -> bytes:
        self.calls.append((self.name, "request_end"))
        return b""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        self.calls.append((self.name, "response_head"))

    def response_body(self, exchange: Exchange, data: Data) -> Data:
        self.calls.append((self.name, "response_body"))
        return data

    def response_end(self, exchange: Exchange, trailers: list[Any]) -> bytes:
        self.calls.append((self.name, "response_end"))
        return b""


class Raises(HTTPFilter):
    """Raises in the hook called C{where}."""

    def __init__(self, where: str) -> None:
        self.where = where

    def request_head(self, exchange: Exchange, head: RequestHead) -> None:
        if self.where == "request_head":
            raise ValueError("broken filter")

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        if self.where == "response_head":
            raise ValueError("broken filter")

    def response_body(self, exchange: Exchange, data: Data) -> Data:
        if self.where == "response_body":
            raise ValueError("broken filter")
        return data


class Gate(HTTPFilter):
    """Suspends in the hook called C{where}: each call gets a new Deferred
    (in C{gates}, with what the hook was given)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.gates: list[tuple[Deferred[Any], Any]] = []

    def _gate(self, value: Any) -> Deferred[Any]:
        gate: Deferred[Any] = Deferred()
        self.gates.append((gate, value))
        return gate

    def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
        return self._gate(head) if self.where == "request_head" else None

    def response_head(self, exchange: Exchange, head: ResponseHead) -> Any:
        return self._gate(head) if self.where == "response_head" else None

    def response_body(self, exchange: Exchange, data: Data) -> Any:
        if self.where == "response_body":
            return self._gate(bytes(data))
        return data


class Lengthen(HTTPFilter):
    """Doubles the response body, so its length is no longer known."""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        head.body = "close"
        head.content_length = None
        head.headers = [f for f in head.headers if f[0].lower() != b"content-length"]

    def response_body(self, exchange: Exchange, data: Data) -> Data:
        return bytes(data) * 2


class Upper(HTTPFilter):
    """Upper-cases both bodies; notes the trailers it sees at the end."""

    def __init__(self) -> None:
        self.trailers: list[Any] = []

    def request_body(self, exchange: Exchange, data: bytes) -> bytes:
        return data.upper()

    def response_body(self, exchange: Exchange, data: Data) -> Data:
        return bytes(data).upper()

    def response_end(self, exchange: Exchange, trailers: list[Any]) -> bytes:
        self.trailers.append(list(trailers))
        return b""


def failing_on_the_way(filters: list[Any]) -> list[Route]:
    """
    Routes where every request but those for C{/next} passes C{filters}.
    """
    return [Route(pool="web", path_prefix="/next"), Route(pool="web", filters=filters)]


class _Case(SynchronousTestCase):
    def harness(self, *args: Any, **kwargs: Any) -> HTTPHarness:
        harness = HTTPHarness(*args, **kwargs)
        self.addCleanup(harness.close)
        return harness

    def assert_logged_failure(self, harness: HTTPHarness) -> None:
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(harness.failures), 1)
        event = harness.failures[0]
        self.assertIsInstance(event["log_failure"].value, ValueError)
        self.assertEqual(event["method"], b"GET")

    def assert_fails_with_500_and_serves_on(
        self, harness: HTTPHarness, client: Client
    ) -> None:
        """
        C{client} got a 500 and was closed, the traceback was logged, and a
        new connection is served.
        """
        response = client.response()
        self.assertEqual((response.status, client.closed), (500, True))
        self.assert_logged_failure(harness)
        again = harness.request("GET", "/next")
        harness.backend_responds(OK)
        self.assertEqual(again.response().body, b"ok")


class InterfaceTests(SynchronousTestCase):
    def test_base_and_builtin_filters_provide_the_interface(self) -> None:
        """HTTPFilter and each built-in filter provide IHTTPFilter."""
        for one in [
            HTTPFilter(),
            AcmeChallenges(Challenges()),
            HTTPSRedirect(lambda: None),
            ResponseHeaders([b"server"], [(b"X-A", b"1")]),
        ]:
            self.assertTrue(verifyObject(IHTTPFilter, one))


class ContinueTests(_Case):
    def test_a_filter_that_continues_changes_nothing(self) -> None:
        """A filter passing everything on sees every hook once per event and
        the request and response go through unchanged."""
        calls: Calls = []
        harness = self.harness(filters=[Recorder("a", calls)])
        client = harness.request("POST", "/form", body=b"x=1")
        attempt = harness.backend_responds(OK)
        self.assertTrue(attempt.received.startswith(b"POST /form HTTP/1.1\r\n"))
        self.assertTrue(attempt.received.endswith(b"\r\n\r\nx=1"))
        self.assertEqual(client.response().body, b"ok")
        self.assertEqual(
            [hook for _, hook in calls],
            [
                "request_head",
                "request_body",
                "request_end",
                "response_head",
                "response_body",
                "response_end",
            ],
        )

    def test_request_head_changes_reach_routing_and_the_backend(self) -> None:
        """A listener filter's new target is what is routed and sent, with
        the field it added."""

        class Rewrite(HTTPFilter):
            def request_head(self, exchange: Exchange, head: RequestHead) -> None:
                head.target = b"/v2" + head.target
                head.headers.append((b"X-Rewritten", b"yes"))

        clock = Clock()
        pools = [
            Pool("v1", [Backend("127.0.0.1", 8001)], now=clock.seconds),
            Pool("v2", [Backend("127.0.0.1", 8002)], now=clock.seconds),
        ]
        harness = self.harness(
            [Route(pool="v2", path_prefix="/v2/"), Route(pool="v1")],
            filters=[Rewrite()],
            pools=pools,
            clock=clock,
        )
        client = harness.request("GET", "/users?id=3")
        attempt = harness.endpoints.last
        self.assertEqual(attempt.backend.port, 8002)
        attempt.respond(OK)
        self.assertTrue(attempt.received.startswith(b"GET /v2/users?id=3 HTTP/1.1"))
        self.assertIn(b"\r\nX-Rewritten: yes\r\n", attempt.received)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(harness.access[0]["path"], "/v2/users?id=3")


class LocalReplyTests(_Case):
    def test_local_reply_keeps_the_connection_for_the_next_request(self) -> None:
        """A LocalReply answers without a backend; the kept-alive connection
        stays open and its next request is proxied."""

        class Deny(HTTPFilter):
            def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
                if head.target == b"/private":
                    return LocalReply(403, [(b"Content-Type", b"text/plain")], b"no\n")
                return None

        harness = self.harness(filters=[Deny()])
        client = harness.request("GET", "/private")
        self.assertEqual(harness.endpoints.attempts, [])
        denied = client.response()
        self.assertEqual((denied.status, denied.body), (403, b"no\n"))
        self.assertEqual(denied.header(b"content-length"), b"3")
        self.assertFalse(client.closed)
        client.request("GET", "/public")
        harness.backend_responds(OK)
        self.assertEqual([r.status for r in client.responses()], [403, 200])
        self.assertFalse(client.closed)
        self.assertEqual([e["status"] for e in harness.access], [403, 200])

    def test_a_suspended_filter_may_answer_locally(self) -> None:
        """A Deferred from request_head that fires with a LocalReply answers
        it, and the connection reads its next request."""
        gate = Gate("request_head")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        self.assertTrue(client.paused)
        gate.gates[0][0].callback(LocalReply(401, body=b"who?"))
        self.assertEqual(client.response().status, 401)
        self.assertFalse(client.paused)
        self.assertFalse(client.closed)
        self.assertEqual(harness.endpoints.attempts, [])

    def test_response_head_may_answer_instead_of_the_backend(self) -> None:
        """A LocalReply from response_head replaces the backend's response;
        that backend connection is not reused."""

        class Mask(HTTPFilter):
            def response_head(self, exchange: Exchange, head: ResponseHead) -> Any:
                if head.status >= 500:
                    return LocalReply(503, body=b"later\n")
                return None

        harness = self.harness(filters=[Mask()])
        client = harness.request("GET", "/")
        attempt = harness.backend_responds(
            b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\ntrace"
        )
        self.assertEqual(
            (client.response().status, client.response().body), (503, b"later\n")
        )
        assert attempt.transport is not None
        self.assertTrue(attempt.transport.disconnecting)
        self.assertFalse(client.closed)


class SuspendRequestTests(_Case):
    def test_no_connect_until_request_head_resumes(self) -> None:
        """While request_head's Deferred is pending nothing is connected and
        the client is not read; once it fires the request is routed and
        sent, the body bytes in order."""
        gate = Gate("request_head")
        harness = self.harness(filters=[gate])
        body = b"abcdefghij" * 10
        client = harness.request(
            "POST", "/up", headers=[("Content-Length", "100")], body=body[:30]
        )
        self.assertEqual(client.protocol.exchange.phase, Phase.FILTERING)  # type: ignore[union-attr]
        self.assertTrue(client.paused)
        harness.clock.advance(5)
        client.send(body[30:60])  # arrives anyway (from the kernel's buffer)
        self.assertEqual(harness.endpoints.attempts, [])
        gate.gates[0][0].callback(None)
        self.assertEqual(len(harness.endpoints.attempts), 1)
        self.assertFalse(client.paused)  # held bytes are below the buffer
        attempt = harness.endpoints.last
        client.send(body[60:80])
        attempt.succeed()
        self.assertTrue(attempt.received.endswith(b"\r\n\r\n" + body[:80]))
        client.send(body[80:])
        self.assertTrue(attempt.received.endswith(b"\r\n\r\n" + body))
        attempt.respond(OK)
        self.assertEqual(client.response().status, 200)

    def test_held_body_over_the_buffer_pauses_the_client(self) -> None:
        """Body bytes held while the backend is connected pause the client
        once they exceed the buffer; they reach the backend in order and the
        client is read again."""
        gate = Gate("request_head")
        harness = self.harness(filters=[gate])
        size = BODY_BUFFER * 2 + 10
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        first = BODY_BUFFER + 100
        client = harness.request(
            "POST", "/up", headers=[("Content-Length", str(size))], body=body[:first]
        )
        gate.gates[0][0].callback(None)
        self.assertTrue(client.paused)
        attempt = harness.endpoints.last
        attempt.succeed()
        self.assertFalse(client.paused)
        self.assertTrue(attempt.received.endswith(b"\r\n\r\n" + body[:first]))
        client.send(body[first:])
        self.assertTrue(attempt.received.endswith(b"\r\n\r\n" + body))
        attempt.respond(OK)
        self.assertEqual(client.response().status, 200)

    def test_a_filter_that_never_decides_is_a_504(self) -> None:
        """A request head suspended past the listener's response timeout is
        answered 504, not 408: the client sent its request whole."""
        gate = Gate("request_head")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        harness.clock.advance(harness.factory.settings.response_timeout)
        self.assertEqual(client.response().status, 504)
        self.assertTrue(client.closed)
        self.assertEqual(harness.endpoints.attempts, [])
        gate.gates[0][0].callback(None)  # too late: goes nowhere
        self.assertEqual(harness.endpoints.attempts, [])

    def test_client_gone_while_suspended_connects_nowhere(self) -> None:
        """A client that closes while request_head is suspended is recorded
        once, and the filter resuming later connects to no backend."""
        gate = Gate("request_head")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        client.close()
        gate.gates[0][0].callback(None)
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertEqual([e["status"] for e in harness.access], [499])

    def test_client_gone_while_suspended_cancels_the_hooks_deferred(
        self,
    ) -> None:
        """The exchange ending while a hook is suspended cancels that hook's
        Deferred, so the filter can release what it holds (its canceller
        runs once); nothing is logged."""
        cancelled: list[object] = []

        class Holding(HTTPFilter):
            def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
                return Deferred(cancelled.append)

        harness = self.harness(filters=[Holding()])
        client = harness.request("GET", "/")
        self.assertEqual(cancelled, [])
        client.close()
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(harness.failures, [])
        self.assertEqual([e["status"] for e in harness.access], [499])


class SuspendResponseTests(_Case):
    def test_response_body_suspends_the_backend_and_keeps_order(self) -> None:
        """While response_body's Deferred is pending the backend connection
        is paused and later body bytes wait; what the Deferreds give reaches
        the client in order, as soon as each fires."""
        gate = Gate("response_body")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        attempt = harness.backend_responds(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\none"
        )
        assert attempt.transport is not None
        self.assertTrue(attempt.transport.paused)
        attempt.respond(b"two")
        self.assertEqual(len(gate.gates), 1)
        self.assertEqual(client.responses()[0].body, b"")
        gate.gates[0][0].callback(b"ONE")
        self.assertEqual(client.responses()[0].body, b"ONE")
        self.assertEqual(gate.gates[1][1], b"two")
        self.assertTrue(attempt.transport.paused)
        gate.gates[1][0].callback(b"TWO")
        self.assertFalse(attempt.transport.paused)
        self.assertEqual(client.responses()[0].body, b"ONETWO")
        attempt.respond(b"six")
        gate.gates[2][0].callback(b"SIX")
        response = client.response()
        self.assertEqual(response.body, b"ONETWOSIX")
        self.assertFalse(client.closed)

    def test_backend_connection_is_resumed_when_the_end_was_held(self) -> None:
        """A response that ended while response_body was suspended leaves
        its backend connection reading again for the next request."""

        def all_sent(transport: Any, parts: list[Data]) -> bool:
            transport.write(b"".join(parts))
            return True

        # A client that keeps up, as over TCP when the kernel takes every
        # write whole: the backend connection never becomes its producer
        # (whose unregistering would resume it).  The compiled build binds
        # send_parts early, so there this checks less: the pure one checks it.
        self.patch(h1_writer_module, "send_parts", all_sent)
        gate = Gate("response_body")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        attempt = harness.backend_responds(OK)
        gate.gates[0][0].callback(b"OK")
        self.assertEqual(client.response().body, b"OK")
        assert attempt.transport is not None
        self.assertFalse(attempt.transport.paused)
        client.request("GET", "/again")
        self.assertEqual(len(harness.endpoints.attempts), 1)  # reused
        attempt.respond(OK)
        gate.gates[1][0].callback(b"ok")
        self.assertEqual([r.body for r in client.responses()], [b"OK", b"ok"])

    def test_response_head_suspends_until_it_fires(self) -> None:
        """Nothing of the response reaches the client until response_head's
        Deferred fires; then head and body arrive together."""
        gate = Gate("response_head")
        harness = self.harness(filters=[gate])
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        self.assertEqual(client.received, b"")
        gate.gates[0][0].callback(None)
        self.assertEqual(client.response().body, b"ok")


class FailureTests(_Case):
    def test_request_head_raising_is_500_and_logged(self) -> None:
        """A request hook that raises: 500, the traceback logged, the
        connection closed, and the listener serves the next one."""
        harness = self.harness(failing_on_the_way([Raises("request_head")]))
        client = harness.request("GET", "/")
        self.assertEqual(harness.endpoints.attempts, [])
        self.assert_fails_with_500_and_serves_on(harness, client)

    def test_response_head_raising_is_500_and_logged(self) -> None:
        """A response hook that raises before anything was sent: 500, the
        backend connection dropped."""
        harness = self.harness(failing_on_the_way([Raises("response_head")]))
        client = harness.request("GET", "/")
        attempt = harness.backend_responds(OK)
        assert attempt.transport is not None
        self.assertTrue(attempt.transport.aborted)
        self.assert_fails_with_500_and_serves_on(harness, client)

    def test_response_body_raising_after_the_head_cuts_the_client(self) -> None:
        """A response hook that raises once the head was sent: the client is
        cut off, no 500 is appended."""
        harness = self.harness(filters=[Raises("response_body")])
        client = harness.request("GET", "/")
        attempt = harness.backend_responds(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        )
        attempt.respond(b"ok")
        self.assertTrue(client.transport.aborted)
        self.assertNotIn(b"500", client.received)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_failed_request_deferred_is_500_and_logged(self) -> None:
        """A Deferred from request_head that fails is answered like a raise."""
        gate = Gate("request_head")
        harness = self.harness(failing_on_the_way([gate]))
        client = harness.request("GET", "/")
        gate.gates[0][0].errback(ValueError("no decision"))
        self.assertEqual(harness.endpoints.attempts, [])
        self.assert_fails_with_500_and_serves_on(harness, client)

    def test_failed_response_deferred_is_500_and_logged(self) -> None:
        """A Deferred from response_head that fails is answered like a raise."""
        gate = Gate("response_head")
        harness = self.harness(failing_on_the_way([gate]))
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        gate.gates[0][0].errback(ValueError("no decision"))
        self.assert_fails_with_500_and_serves_on(harness, client)

    def test_already_fired_deferreds_work_like_values(self) -> None:
        """Deferreds that have fired already continue at once, and one that
        has failed already is a 500."""

        class Fired(HTTPFilter):
            def request_head(self, exchange: Exchange, head: RequestHead) -> Any:
                if head.target == b"/bad":
                    return fail(ValueError("decided badly"))
                return succeed(None)

            def response_body(self, exchange: Exchange, data: Data) -> Any:
                return succeed(bytes(data).upper())

        harness = self.harness(filters=[Fired()])
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        self.assertEqual(client.response().body, b"OK")
        bad = harness.request("GET", "/bad")
        self.assertEqual(bad.response().status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class OrderTests(_Case):
    def test_request_hooks_in_order_response_hooks_reversed(self) -> None:
        """Listener filters then the route's for the request; the reverse
        for the response."""
        calls: Calls = []
        route = Route(pool="web", filters=[Recorder("c", calls)])
        harness = self.harness(
            [route], filters=[Recorder("a", calls), Recorder("b", calls)]
        )
        client = harness.request("POST", "/", body=b"x")
        harness.backend_responds(OK)
        self.assertEqual(client.response().status, 200)
        by_hook: dict[str, list[str]] = {}
        for name, hook in calls:
            by_hook.setdefault(hook, []).append(name)
        forward, backward = ["a", "b", "c"], ["c", "b", "a"]
        self.assertEqual(
            by_hook,
            {
                "request_head": forward,
                "request_body": forward,
                "request_end": forward,
                "response_head": backward,
                "response_body": backward,
                "response_end": backward,
            },
        )

    def test_route_filters_see_only_their_routes_requests(self) -> None:
        """A route's filters run for requests taking that route only."""
        calls: Calls = []
        harness = self.harness(
            [
                Route(
                    pool="web", path_prefix="/api/", filters=[Recorder("api", calls)]
                ),
                Route(pool="web"),
            ]
        )
        client = harness.request("GET", "/page")
        harness.backend_responds(OK)
        self.assertEqual(calls, [])
        client.request("GET", "/api/users")
        harness.backend_responds(OK)
        self.assertEqual(len(client.responses()), 2)
        self.assertIn(("api", "request_head"), calls)
        self.assertIn(("api", "response_end"), calls)


class EndTests(_Case):
    def test_response_end_bytes_go_through_later_filters(self) -> None:
        """Bytes a response_end hook adds pass through the response_body of
        the filters after it, before the end; its trailer changes reach
        them and the client."""

        class Tail(HTTPFilter):
            response_head = Lengthen.response_head

            def response_end(self, exchange: Exchange, trailers: list[Any]) -> bytes:
                trailers.append((b"X-Checksum", b"abc"))
                return b" and tail"

        upper = Upper()
        harness = self.harness([Route(pool="web", filters=[Tail()])], filters=[upper])
        client = harness.request("GET", "/", headers=[("TE", "trailers")])
        harness.backend_responds(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        response = client.response()
        self.assertEqual(response.framing, "chunked")
        self.assertEqual(response.body, b"HELLO AND TAIL")
        self.assertEqual(response.trailers, [(b"X-Checksum", b"abc")])
        self.assertEqual(upper.trailers, [[(b"X-Checksum", b"abc")]])

    def test_request_end_adds_bytes_through_later_filters(self) -> None:
        """request_end is called once the body is in; what it returns is
        sent (through the later filters' request_body) before the end."""

        class Sign(HTTPFilter):
            def request_end(self, exchange: Exchange) -> bytes:
                return b"|signed"

        harness = self.harness(filters=[Sign(), Upper()])
        client = harness.request(
            "POST",
            "/",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"5\r\nhello\r\n0\r\n\r\n",
        )
        attempt = harness.backend_responds(OK)
        self.assertTrue(
            attempt.received.endswith(b"5\r\nHELLO\r\n7\r\n|SIGNED\r\n0\r\n\r\n"),
            attempt.received,
        )
        self.assertEqual(client.response().status, 200)


class LengthTests(_Case):
    def test_new_length_is_chunked_for_http11_and_kept_alive(self) -> None:
        """A filter that changes the body's length gets an HTTP/1.1 client a
        chunked response, and the connection goes on."""
        harness = self.harness(filters=[Lengthen()])
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        response = client.response()
        self.assertEqual((response.framing, response.body), ("chunked", b"okok"))
        self.assertIsNone(response.header(b"content-length"))
        self.assertFalse(client.closed)

    def test_new_length_is_close_delimited_for_http10(self) -> None:
        """The same for an HTTP/1.0 client: no length, no chunks, and the
        connection closes after the body."""
        harness = self.harness(filters=[Lengthen()])
        client = harness.request(
            "GET", "/", headers=[("Connection", "keep-alive")], version="HTTP/1.0"
        )
        harness.backend_responds(OK)
        self.assertTrue(client.closed)
        response = client.response()
        self.assertEqual((response.framing, response.body), ("close", b"okok"))
        self.assertIsNone(response.header(b"content-length"))
        self.assertIsNone(response.header(b"transfer-encoding"))
        self.assertEqual(response.header(b"connection"), b"close")


class ReloadTests(_Case):
    def test_reload_keeps_the_filters_of_the_exchange_in_flight(self) -> None:
        """New settings with other filters apply from the next request on a
        kept-alive connection; the exchange under way keeps its own."""
        calls: Calls = []
        harness = self.harness(filters=[Recorder("old", calls)])
        client = harness.request("GET", "/one")
        harness.endpoints.last.succeed()
        harness.factory.settings = HTTPSettings(
            "front", Router([Route(pool="web")]), filters=[Recorder("new", calls)]
        )
        harness.backend_responds(OK)
        self.assertEqual({name for name, _ in calls}, {"old"})
        self.assertIn(("old", "response_end"), calls)
        calls.clear()
        client.request("GET", "/two")
        harness.backend_responds(OK)
        self.assertEqual(len(client.responses()), 2)
        self.assertEqual({name for name, _ in calls}, {"new"})


class CostTests(_Case):
    def test_route_without_filters_allocates_no_pipe(self) -> None:
        """A request on a route without filters (and a listener without)
        makes no Pipe, on either side; one with a filter does.  (Checked on
        the exchange, not by patching Pipe: the compiled build binds its
        names early.)"""
        calls: Calls = []
        harness = self.harness(
            [
                Route(pool="web", path_prefix="/f/", filters=[Recorder("f", calls)]),
                Route(pool="web"),
            ]
        )
        client = harness.request("POST", "/plain", body=b"abc")
        exchange = client.protocol.exchange
        assert exchange is not None
        attempt = harness.backend_responds(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"
        )
        self.assertIsNone(exchange._requests)
        self.assertIsNone(exchange._responses)
        attempt.respond(b"cd")
        self.assertEqual(client.response().body, b"abcd")
        client.request("POST", "/f/x", body=b"abc")
        filtered = client.protocol.exchange
        assert filtered is not None
        self.assertIsNotNone(filtered._requests)
        attempt = harness.backend_responds(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"
        )
        self.assertIsNotNone(filtered._responses)
        attempt.respond(b"cd")
        self.assertEqual(client.responses()[-1].body, b"abcd")


SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n\r\n"
)


class Answers101(HTTPFilter):
    """Answers locally on the response head: impossible for a 101."""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> LocalReply:
        return LocalReply(403)


class Marks101(HTTPFilter):
    """Adds a field to every response head."""

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers.append((b"X-Seen", b"yes"))


class UpgradeTests(_Case):
    """Response-head hooks on a 101: they may change it, nothing more."""

    def upgrade(self, harness: HTTPHarness) -> Client:
        client = harness.request(
            "GET",
            "/ws",
            headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")],
        )
        harness.backend_responds(SWITCH)
        return client

    def test_a_hook_may_change_the_101(self) -> None:
        """A hook's change reaches the client in the 101, and the tunnel
        opens."""
        harness = self.harness(filters=[Marks101()])
        client = self.upgrade(harness)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "))
        self.assertIn(b"\r\nX-Seen: yes\r\n", client.received)
        self.assertFalse(client.closed)
        client.close()

    def test_a_hook_raising_on_a_101_is_a_500_and_serves_on(self) -> None:
        """A hook raising on the 101 gets the client a 500 (nothing of the
        switch was sent), the traceback logged, and the listener serves the
        next connection."""
        harness = self.harness(failing_on_the_way([Raises("response_head")]))
        client = self.upgrade(harness)
        self.assert_fails_with_500_and_serves_on(harness, client)

    def test_a_local_reply_for_a_101_is_a_filter_failure(self) -> None:
        """A 101 cannot be answered in place once the backend switched: a
        hook's LocalReply for it is logged as a failure and answered 500."""
        harness = self.harness(filters=[Answers101()])
        client = self.upgrade(harness)
        response = client.response()
        self.assertEqual((response.status, client.closed), (500, True))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(len(harness.failures), 1)
