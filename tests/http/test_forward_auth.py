"""Forward auth: the decision table, how long an answer is remembered, the
bounded result cache, and the filter through the real codec
(rproxy.testing.HTTPHarness) with a fake auth service."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.http.filters._auth_cache import ResultCache, cache_ttl, credential_key
from rproxy.http.filters.auth import (
    UNAVAILABLE,
    AuthAnswer,
    AuthSettings,
    ForwardAuth,
    decide,
)
from rproxy.http.routing import Route
from rproxy.testing import HTTPHarness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
COPY = frozenset({b"x-user"})


@pytest.mark.parametrize(
    ("status", "outcome", "client_status"),
    [
        (200, "allowed", None),
        (204, "allowed", None),
        (299, "allowed", None),
        (401, "denied", 401),
        (403, "denied", 403),
        (301, "denied", 301),
        (302, "denied", 302),
        (307, "denied", 307),
        (400, "error", 503),
        (404, "error", 503),
        (429, "error", 503),
        (500, "error", 503),
        (502, "error", 503),
        (101, "error", 503),
    ],
)
def test_decision_table(status: int, outcome: str, client_status: int | None) -> None:
    """2xx allows; 401, 403 and 3xx go to the client; the rest is 503."""
    decision = decide(AuthAnswer(status), COPY)
    assert decision.outcome == outcome
    assert (decision.reply.status if decision.reply else None) == client_status


def test_no_answer_is_503() -> None:
    """A connect failure or a timeout (no answer) is 503."""
    assert decide(None, COPY).reply is UNAVAILABLE


def test_allowed_copies_only_the_configured_fields() -> None:
    """A 2xx copies the fields named (any case), nothing else."""
    answer = AuthAnswer(
        200, ((b"X-User", b"ann"), (b"X-Other", b"no"), (b"x-user", b"b"))
    )
    assert decide(answer, COPY).copy == ((b"X-User", b"ann"), (b"x-user", b"b"))


def test_denied_passes_its_body_and_challenge_fields() -> None:
    """A 401 keeps its body, WWW-Authenticate, Set-Cookie and Content-Type;
    other fields stay behind; the answer is not to be stored."""
    answer = AuthAnswer(
        401,
        (
            (b"WWW-Authenticate", b'Basic realm="x"'),
            (b"Set-Cookie", b"a=1"),
            (b"Content-Type", b"text/html"),
            (b"X-Internal", b"secret"),
        ),
        b"<p>log in</p>",
    )
    reply = decide(answer, COPY).reply
    assert reply is not None
    assert reply.body == b"<p>log in</p>"
    assert dict(reply.headers) == {
        b"WWW-Authenticate": b'Basic realm="x"',
        b"Set-Cookie": b"a=1",
        b"Content-Type": b"text/html",
        b"Cache-Control": b"no-store",
    }


def test_a_redirect_passes_its_location() -> None:
    """A login redirect reaches the client with its Location."""
    reply = decide(AuthAnswer(302, ((b"Location", b"/login"),)), COPY).reply
    assert reply is not None and (b"Location", b"/login") in reply.headers


@pytest.mark.parametrize(
    ("cache_control", "unmarked", "ttl"),
    [
        (None, False, 0.0),
        (None, True, 30.0),
        (b"max-age=10", False, 10.0),
        (b"private, max-age=100", False, 30.0),
        (b"max-age=0", True, 0.0),
        (b"no-store", True, 0.0),
        (b"max-age=10, no-cache", True, 0.0),
        (b"private", False, 0.0),
        (b"private", True, 30.0),
        (b"max-age=junk", True, 0.0),
    ],
)
def test_how_long_an_answer_is_remembered(
    cache_control: bytes | None, unmarked: bool, ttl: float
) -> None:
    """At most the route's cache seconds, as the answer's Cache-Control
    allows; without max-age only if the config says so."""
    headers = [] if cache_control is None else [(b"Cache-Control", cache_control)]
    assert cache_ttl(headers, 30.0, unmarked) == ttl


def test_credential_keys_differ_by_credential() -> None:
    """Different credentials, different keys; names compare without case."""
    one = credential_key([(b"Authorization", b"Bearer a")])
    assert one == credential_key([(b"authorization", b"Bearer a")])
    assert one != credential_key([(b"Authorization", b"Bearer b")])
    assert one != credential_key([])


def test_result_cache_expires_and_stays_bounded() -> None:
    """An entry expires at its ttl; past size the least recently used go."""
    clock = Clock()
    cache = ResultCache(2, clock)
    cache.put(b"a", (), 10)
    cache.put(b"b", (), 10)
    assert cache.get(b"a") == ()  # a is now the most recently used
    cache.put(b"c", (), 10)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == ((), None, ())
    for index in range(1000):
        cache.put(str(index).encode(), (), 10)
    assert len(cache) == 2
    clock.advance(10)
    assert cache.get(b"999") is None and len(cache) == 1


class FakeAuthService:
    """The auth service as a fetch: each call is kept, to be answered."""

    def __init__(self) -> None:
        self.calls: list[
            tuple[bytes, list[tuple[bytes, bytes]], Deferred[AuthAnswer]]
        ] = []
        self.cancelled = 0

    def __call__(
        self, url: bytes, fields: list[tuple[bytes, bytes]]
    ) -> Deferred[AuthAnswer]:
        def cancel(_: Deferred[AuthAnswer]) -> None:
            self.cancelled += 1

        asked: Deferred[AuthAnswer] = Deferred(cancel)
        self.calls.append((url, fields, asked))
        return asked

    def answer(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes = b"",
    ) -> None:
        asked = self.calls[-1][2]
        if not asked.called:  # not cancelled
            asked.callback(AuthAnswer(status, headers, body))

    def fields(self, index: int = -1) -> dict[bytes, bytes]:
        return dict(self.calls[index][1])


class ForwardAuthFilterTests(SynchronousTestCase):
    def harness(
        self, **settings: object
    ) -> tuple[HTTPHarness, FakeAuthService, ForwardAuth]:
        service = FakeAuthService()
        clock = Clock()
        auth = ForwardAuth(
            AuthSettings(
                "http://auth.test/verify", copy_headers=["X-User"], **settings
            ),  # type: ignore[arg-type]
            service,
            clock,
        )
        routes = [Route("web", path_prefix="/app/", filters=(auth,)), Route("web")]
        harness = HTTPHarness(routes, clock=clock)
        self.addCleanup(harness.close)
        return harness, service, auth

    def backend_request(self, harness: HTTPHarness) -> bytes:
        attempt = harness.endpoints.last
        if attempt.transport is None:
            attempt.succeed()
        return attempt.received

    def test_allowed_request_reaches_the_backend_with_copied_fields(self) -> None:
        """The service is asked with the request's facts; a 2xx lets the
        request on with X-User copied and the client's own X-User gone."""
        harness, service, auth = self.harness()
        client = harness.connect("198.51.100.4").request(
            "GET",
            "/app/page?q=1",
            headers=[
                ("Authorization", "Bearer t"),
                ("X-User", "admin"),
                ("Cookie", "s=1"),
            ],
        )
        self.assertEqual(harness.endpoints.attempts, [])
        [(url, _, _)] = service.calls
        self.assertEqual(url, b"http://auth.test/verify")
        fields = service.fields()
        self.assertEqual(fields[b"X-Forwarded-Method"], b"GET")
        self.assertEqual(fields[b"X-Forwarded-Uri"], b"/app/page?q=1")
        self.assertEqual(fields[b"X-Forwarded-Proto"], b"http")
        self.assertEqual(fields[b"X-Forwarded-For"], b"198.51.100.4")
        self.assertEqual(fields[b"Authorization"], b"Bearer t")
        self.assertEqual(fields[b"Cookie"], b"s=1")
        self.assertIn(b"X-Forwarded-Host", fields)
        self.assertNotIn(b"X-User", fields)
        service.answer(200, ((b"X-User", b"ann"), (b"X-Secret", b"no")))
        sent = self.backend_request(harness)
        self.assertIn(b"X-User: ann\r\n", sent)
        self.assertNotIn(b"admin", sent)
        self.assertNotIn(b"X-Secret", sent)
        harness.backend_responds(OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(auth.counters["allowed"], 1)
        [event] = harness.access
        self.assertIsNone(event["refused_by"])

    def test_a_forged_field_is_removed_even_if_the_service_sends_none(self) -> None:
        """A client's X-User never reaches the backend."""
        harness, service, _ = self.harness()
        harness.request("GET", "/app/", headers=[("X-User", "admin")])
        service.answer(204)
        self.assertNotIn(b"X-User", self.backend_request(harness))

    def test_other_routes_are_not_asked(self) -> None:
        """Only the route with auth asks the service."""
        harness, service, _ = self.harness()
        client = harness.request("GET", "/public")
        harness.backend_responds(OK)
        self.assertEqual((client.response().status, service.calls), (200, []))

    def test_401_goes_to_the_client_with_its_challenge(self) -> None:
        """A 401 is the client's answer, with WWW-Authenticate and body; the
        backend is never asked, the event names auth, the connection stays."""
        harness, service, auth = self.harness()
        client = harness.request("GET", "/app/")
        service.answer(401, ((b"WWW-Authenticate", b"Bearer"),), b"who are you?\n")
        response = client.response()
        self.assertEqual((response.status, response.body), (401, b"who are you?\n"))
        self.assertEqual(response.header(b"WWW-Authenticate"), b"Bearer")
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertFalse(client.closed)
        self.assertEqual(auth.counters["denied"], 1)
        [event] = harness.access
        self.assertEqual((event["status"], event["refused_by"]), (401, "auth"))

    def test_403_and_302_go_to_the_client(self) -> None:
        """A 403 and a login redirect (with its Location) are passed on."""
        harness, service, auth = self.harness()
        forbidden = harness.request("GET", "/app/")
        service.answer(403, (), b"no\n")
        self.assertEqual(forbidden.response().status, 403)
        redirected = harness.request("GET", "/app/")
        service.answer(302, ((b"Location", b"https://login.test/"),))
        response = redirected.response()
        self.assertEqual(response.status, 302)
        self.assertEqual(response.header(b"Location"), b"https://login.test/")
        self.assertEqual(auth.counters["denied"], 2)

    def test_a_500_from_the_service_is_503(self) -> None:
        """Any other answer is 503 to the client, counted as an error."""
        harness, service, auth = self.harness()
        client = harness.request("GET", "/app/")
        service.answer(500, (), b"traceback...")
        response = client.response()
        self.assertEqual(response.status, 503)
        self.assertNotIn(b"traceback", response.body)
        self.assertEqual(auth.counters["errors"], 1)
        self.assertEqual(harness.access[0]["refused_by"], "auth")

    def test_a_failed_connect_is_503(self) -> None:
        """A subrequest that fails is 503."""
        harness, service, _ = self.harness()
        client = harness.request("GET", "/app/")
        service.calls[-1][2].errback(ConnectionRefusedError("refused"))
        self.assertEqual(client.response().status, 503)

    def test_a_silent_service_times_out_to_503(self) -> None:
        """No answer within the timeout: the subrequest is cancelled, 503."""
        harness, service, auth = self.harness(timeout=2.0)
        client = harness.request("GET", "/app/")
        harness.clock.advance(1.9)
        self.assertEqual(client.received, b"")
        harness.clock.advance(0.2)
        self.assertEqual(client.response().status, 503)
        self.assertEqual((service.cancelled, auth.counters["errors"]), (1, 1))

    def test_the_body_is_not_read_while_the_service_decides(self) -> None:
        """A POST's client is paused while waiting; a 401 answers it without
        a backend and closes rather than read the rest of the body."""
        harness, service, _ = self.harness()
        client = harness.connect().send(
            b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc"
        )
        self.assertTrue(client.paused)
        service.answer(401)
        self.assertEqual(client.response().status, 401)
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertTrue(client.closed)

    def test_a_client_gone_while_waiting(self) -> None:
        """A client that leaves while the service decides: the question is
        cancelled (the exchange's pipe cancels what it waits on), a late
        answer goes nowhere, no backend is asked, nothing is counted as an
        error and no failure is logged."""
        harness, service, auth = self.harness()
        client = harness.request("GET", "/app/")
        client.close()
        self.assertEqual(service.cancelled, 1)
        service.answer(200)
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertEqual(harness.failures, [])
        self.assertEqual(len(harness.access), 1)
        self.assertEqual(auth.counters["errors"], 0)

    def test_an_allowed_answer_is_remembered_per_credential(self) -> None:
        """With cache on, a 2xx whose max-age allows it is reused for the
        same credential until it expires; another credential asks again."""
        harness, service, auth = self.harness(cache=10.0)
        allowed = ((b"X-User", b"ann"), (b"Cache-Control", b"max-age=5"))
        harness.request("GET", "/app/", headers=[("Authorization", "a")])
        service.answer(200, allowed)
        second = harness.request(
            "GET", "/app/", headers=[("Authorization", "a"), ("X-User", "root")]
        )
        self.assertEqual(len(service.calls), 1)
        sent = self.backend_request(harness)
        self.assertIn(b"X-User: ann\r\n", sent)
        self.assertNotIn(b"root", sent)
        harness.backend_responds(OK)
        self.assertEqual(second.response().status, 200)
        harness.request("GET", "/app/", headers=[("Authorization", "b")])
        self.assertEqual(len(service.calls), 2)
        service.answer(401)
        harness.clock.advance(5)
        harness.request("GET", "/app/", headers=[("Authorization", "a")])
        self.assertEqual(len(service.calls), 3)
        service.answer(200, allowed)
        self.assertEqual((auth.counters["cached"], auth.counters["allowed"]), (1, 3))

    def test_refusals_and_unmarked_answers_are_not_remembered(self) -> None:
        """A 401 is asked again; a 2xx without Cache-Control too (by
        default), unless cache_without_directives."""
        harness, service, _ = self.harness(cache=10.0)
        for status in (401, 200, 200):
            harness.request("GET", "/app/", headers=[("Authorization", "a")])
            service.answer(status)
        self.assertEqual(len(service.calls), 3)
        harness, service, _ = self.harness(cache=10.0, cache_without_directives=True)
        harness.request("GET", "/app/", headers=[("Authorization", "a")])
        service.answer(200)
        for _ in range(2):
            harness.request("GET", "/app/", headers=[("Authorization", "a")])
        self.assertEqual(len(service.calls), 1)

    def test_the_cache_holds_at_most_cache_entries_credentials(self) -> None:
        """A flood of distinct credentials leaves at most cache_entries."""
        harness, service, auth = self.harness(
            cache=10.0, cache_without_directives=True, cache_entries=3
        )
        for index in range(20):
            harness.request("GET", "/app/", headers=[("Authorization", str(index))])
            service.answer(200)
        self.assertEqual(len(auth.results), 3)
        harness.request("GET", "/app/", headers=[("Authorization", "0")])
        self.assertEqual(len(service.calls), 21)
        service.answer(200)
