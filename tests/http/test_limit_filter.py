"""Tests for the RateLimit filter through the HTTP/1.1 codec on a Clock:
429 with Retry-After and the RateLimit fields, delay mode holding requests
up to the burst, a client gone while held, a shared store's answers and its
absence."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rproxy.http.filters import IHTTPFilter
from rproxy.http.filters._chain import FilterChain
from rproxy.http.filters.limits import RateLimit
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.limits.gcra import Rate
from rproxy.limits.limiter import Limiter
from rproxy.testing import Client, HTTPHarness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeStore:
    """
    A shared store whose answers the test gives: C{check} returns None
    while C{down}, else a Deferred kept in C{asked}.
    """

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.asked: list[tuple[str, Deferred[tuple[bool, float]]]] = []

    def check(self, key: str, interval: float, tolerance: float) -> Any:
        if self.down:
            return None
        asked: Deferred[tuple[bool, float]] = Deferred()
        self.asked.append((key, asked))
        return asked


def holds(harness: HTTPHarness) -> list[Any]:
    """
    The timers on the harness's clock that hold a request.
    """
    return [
        call
        for call in harness.clock.getDelayedCalls()
        if getattr(call.func, "__qualname__", "") == "_Hold._release"
    ]


class _Case(SynchronousTestCase):
    def harness(
        self, limiter: Limiter, *, route: bool = True, **kwargs: Any
    ) -> HTTPHarness:
        """
        A harness whose one route (or, without C{route}, whose listener)
        applies C{limiter}; its clock is the limiter's.
        """
        limit = RateLimit(limiter)
        if route:
            harness = HTTPHarness(
                [Route("web", filters=[limit])], clock=limiter.clock, **kwargs
            )
        else:
            harness = HTTPHarness(filters=[limit], clock=limiter.clock, **kwargs)
        self.addCleanup(harness.close)
        return harness

    def limiter(self, rate: str = "1/m", burst: int = 0, **kwargs: Any) -> Limiter:
        from twisted.internet.task import Clock

        clock = kwargs.pop("clock", None) or Clock()
        return Limiter("per_ip", Rate.parse(rate), burst, clock=clock, **kwargs)

    def served(self, harness: HTTPHarness, client: Client) -> int:
        """
        Let the backend answer C{client}'s request if it was sent on; the
        status the client got.
        """
        if harness.endpoints.attempts and client.received == b"":
            harness.backend_responds(OK)
        return client.response().status


class RejectTests(_Case):
    def test_filter_provides_the_interface(self) -> None:
        """RateLimit is an IHTTPFilter named for its limiter."""
        limit = RateLimit(self.limiter())
        verifyObject(IHTTPFilter, limit)
        self.assertEqual(limit.name, "limit:per_ip")

    def test_over_the_burst_is_429_with_retry_after_and_fields(self) -> None:
        """Past burst + 1 requests, a 429 with Retry-After (whole seconds up
        to the next allowed request), the RateLimit-Policy and RateLimit
        fields, and no backend asked; the connection stays open."""
        limiter = self.limiter("2/m", burst=2)
        harness = self.harness(limiter)
        for _ in range(3):
            client = harness.request("GET", "/")
            harness.backend_responds(OK)
            self.assertEqual(client.response().status, 200)
        asked = len(harness.endpoints.attempts)
        refused = harness.request("GET", "/")
        response = refused.response()
        self.assertEqual(response.status, 429)
        self.assertEqual(response.header(b"retry-after"), b"30")
        self.assertEqual(response.header(b"ratelimit-policy"), b'"per_ip";q=3;w=90')
        self.assertEqual(response.header(b"ratelimit"), b'"per_ip";r=0;t=30')
        self.assertEqual(response.body, b"too many requests\n")
        self.assertEqual(len(harness.endpoints.attempts), asked)
        self.assertFalse(refused.closed)

    def test_retry_after_counts_down_with_the_clock(self) -> None:
        """Retry-After is how long is left until the next request passes,
        and after it one does."""
        limiter = self.limiter("1/m")
        harness = self.harness(limiter)
        harness.request("GET", "/")
        harness.backend_responds(OK)
        harness.clock.advance(20.5)
        refused = harness.request("GET", "/").response()
        self.assertEqual(refused.header(b"retry-after"), b"40")
        harness.clock.advance(39.5)
        client = harness.request("GET", "/")
        self.assertEqual(self.served(harness, client), 200)

    def test_refusal_is_one_access_event_naming_the_limiter(self) -> None:
        """The 429's access event says which limiter refused it."""
        harness = self.harness(self.limiter("1/m"))
        harness.request("GET", "/")
        harness.backend_responds(OK)
        harness.request("GET", "/")
        self.assertEqual(
            [(e["status"], e["refused_by"]) for e in harness.access],
            [(200, None), (429, "limit:per_ip")],
        )

    def test_allowed_responses_carry_the_fields(self) -> None:
        """Each allowed response says the policy and how much is left."""
        harness = self.harness(self.limiter("10/s", burst=3, headers=True))
        seen = []
        for _ in range(2):
            client = harness.request("GET", "/")
            harness.backend_responds(OK)
            response = client.response()
            seen.append(
                (response.header(b"ratelimit-policy"), response.header(b"ratelimit"))
            )
        self.assertEqual(
            seen,
            [
                (b'"per_ip";q=4;w=1', b'"per_ip";r=3;t=1'),
                (b'"per_ip";q=4;w=1', b'"per_ip";r=2;t=1'),
            ],
        )

    def test_headers_false_leaves_allowed_responses_alone(self) -> None:
        """A limiter with headers = false adds nothing to allowed
        responses; its 429 still says why."""
        harness = self.harness(self.limiter("1/m", headers=False))
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        self.assertIsNone(client.response().header(b"ratelimit"))
        refused = harness.request("GET", "/").response()
        self.assertEqual(refused.header(b"ratelimit"), b'"per_ip";r=0;t=60')

    def test_without_fields_the_filter_has_no_response_hook(self) -> None:
        """headers = false leaves responses out of the filter altogether:
        its chain has no response hook to run."""
        quiet = FilterChain([RateLimit(self.limiter(headers=False))])
        loud = FilterChain([RateLimit(self.limiter(headers=True))])
        self.assertEqual((quiet.responses, loud.responses), (False, True))

    def test_each_client_has_its_own_quota(self) -> None:
        """Requests are counted per client address."""
        harness = self.harness(self.limiter("1/m"))
        for peer in ("192.0.2.1", "192.0.2.2"):
            client = harness.connect(peer).request("GET", "/")
            harness.backend_responds(OK)
            self.assertEqual(client.response().status, 200)
        again = harness.connect("192.0.2.1").request("GET", "/")
        self.assertEqual(again.response().status, 429)

    def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(self) -> None:
        """Through a trusted proxy, the address it forwarded for is the key:
        two clients behind one proxy are counted apart, and a client's own
        X-Forwarded-For is not believed."""
        limiter = self.limiter("1/m")
        settings = HTTPSettings(
            "front",
            Router([Route("web", filters=[RateLimit(limiter)])]),
            policy=ForwardingPolicy(trusted=("10.0.0.0/8",)),
        )
        harness = HTTPHarness(settings=settings, clock=limiter.clock)
        self.addCleanup(harness.close)
        statuses = []
        for peer, xff in [
            ("10.0.0.2", "203.0.113.1"),
            ("10.0.0.2", "203.0.113.2"),
            ("10.0.0.3", "198.51.100.1, 203.0.113.1"),
            ("203.0.113.9", "198.51.100.99"),
            ("203.0.113.9", "198.51.100.98"),
        ]:
            client = harness.connect(peer).request(
                "GET", "/", [("X-Forwarded-For", xff)]
            )
            statuses.append(self.served(harness, client))
        self.assertEqual(statuses, [200, 200, 429, 200, 429])

    def test_listener_limit_runs_before_routing(self) -> None:
        """A listener's limit refuses before any route is chosen."""
        harness = self.harness(self.limiter("1/m"), route=False)
        client = harness.request("GET", "/")
        harness.backend_responds(OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(harness.request("GET", "/other").response().status, 429)

    def test_refusal_reads_no_body_and_closes_after_one(self) -> None:
        """A refused request with a body is answered at once, without the
        body read, and its connection closed."""
        harness = self.harness(self.limiter("1/m"))
        harness.request("GET", "/")
        harness.backend_responds(OK)
        client = harness.connect().send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        )
        self.assertEqual(client.response().status, 429)
        self.assertTrue(client.closed)

    def test_counters_count_each_outcome(self) -> None:
        """allowed and rejected count what was let on and refused."""
        limiter = self.limiter("1/m", burst=1)
        harness = self.harness(limiter)
        for _ in range(4):
            self.served(harness, harness.request("GET", "/"))
        self.assertEqual(
            limiter.counters(),
            {"allowed": 2, "delayed": 0, "rejected": 2, "fallback": 0},
        )


class DelayTests(_Case):
    def test_early_request_is_held_until_it_is_on_the_rate(self) -> None:
        """In delay mode a request within the burst but early waits (no
        backend asked, the client not read) for exactly as long as it is
        early, then goes on."""
        limiter = self.limiter("2/s", burst=2, mode="delay")
        harness = self.harness(limiter)
        first = harness.request("GET", "/")
        harness.backend_responds(OK)
        self.assertEqual(first.response().status, 200)
        held = harness.request("GET", "/")
        self.assertEqual(len(harness.endpoints.attempts), 1)
        self.assertTrue(held.paused)
        self.assertEqual(limiter.held, 1)
        harness.clock.advance(0.499)
        self.assertEqual(len(harness.endpoints.attempts), 1)
        harness.clock.advance(0.001)
        harness.backend_responds(OK)
        self.assertEqual(held.response().status, 200)
        self.assertEqual((limiter.held, limiter.delayed, limiter.allowed), (0, 1, 2))

    def test_held_requests_go_on_one_interval_apart(self) -> None:
        """Requests held at once are let on at the rate, in order."""
        limiter = self.limiter("4/s", burst=3, mode="delay")
        harness = self.harness(limiter)
        clients = [harness.request("GET", "/") for _ in range(4)]
        sent = []
        for _ in range(4):
            sent.append(len(harness.endpoints.attempts))
            harness.clock.advance(0.25)
        self.assertEqual(sent, [1, 2, 3, 4])
        for index, client in enumerate(clients):
            harness.endpoints.attempts[index].respond(OK)
            self.assertEqual(client.response().status, 200)

    def test_beyond_the_burst_is_refused_at_once(self) -> None:
        """Past what the burst can hold, a request is refused at once with
        429, not held."""
        limiter = self.limiter("1/s", burst=1, mode="delay")
        harness = self.harness(limiter)
        harness.request("GET", "/")
        held = harness.request("GET", "/")
        refused = harness.request("GET", "/")
        self.assertEqual(refused.response().status, 429)
        self.assertEqual(refused.response().header(b"retry-after"), b"1")
        harness.clock.advance(1)
        self.assertEqual(len(harness.endpoints.attempts), 2)
        for attempt in harness.endpoints.attempts:
            attempt.respond(OK)
        self.assertEqual(held.response().status, 200)

    def test_client_gone_while_held_releases_its_place_and_timer(self) -> None:
        """A client that closes while held leaves no timer (the harness
        checks the clock), is recorded as 499, and gives its place back:
        the next request is as early as the gone one would have been."""
        limiter = self.limiter("1/s", burst=2, mode="delay")
        harness = self.harness(limiter)
        harness.request("GET", "/")
        harness.backend_responds(OK)
        gone = harness.request("GET", "/")
        self.assertEqual((limiter.held, len(holds(harness))), (1, 1))
        gone.close()
        self.assertEqual(limiter.held, 0)
        self.assertEqual(holds(harness), [])
        self.assertEqual(harness.access[-1]["status"], 499)
        nxt = harness.request("GET", "/")
        harness.clock.advance(0.999)
        self.assertEqual(len(harness.endpoints.attempts), 1)
        harness.clock.advance(0.001)
        harness.backend_responds(OK)
        self.assertEqual(nxt.response().status, 200)

    def test_held_request_past_the_response_timeout_is_504(self) -> None:
        """A hold longer than the listener's response timeout (a config
        refuses that) is answered 504 and leaves nothing behind."""
        limiter = self.limiter("1/m", burst=2, mode="delay")
        harness = self.harness(limiter)
        harness.request("GET", "/")
        harness.backend_responds(OK)
        held = harness.request("GET", "/")
        harness.clock.advance(harness.factory.settings.response_timeout)
        self.assertEqual(held.response().status, 504)
        self.assertEqual(limiter.held, 0)


class StoreTests(_Case):
    def test_request_waits_for_the_stores_answer(self) -> None:
        """With a store, the request goes on when the store allows it, and
        waits until then; the fields come from the store's answer."""
        store = FakeStore()
        limiter = self.limiter("10/s", burst=3, store=store, headers=True)
        harness = self.harness(limiter)
        client = harness.request("GET", "/")
        self.assertEqual(harness.endpoints.attempts, [])
        ((key, asked),) = store.asked
        self.assertEqual(key, "rproxy:limit:per_ip:192.0.2.7")
        asked.callback((True, 0.2))
        harness.backend_responds(OK)
        self.assertEqual(client.response().header(b"ratelimit"), b'"per_ip";r=2;t=1')

    def test_store_refusal_is_429(self) -> None:
        """The store's refusal is a 429 like a local one."""
        store = FakeStore()
        harness = self.harness(self.limiter("10/s", burst=3, store=store))
        client = harness.request("GET", "/")
        store.asked[0][1].callback((False, 0.55))
        response = client.response()
        self.assertEqual(
            (response.status, response.header(b"retry-after")), (429, b"1")
        )

    def test_store_answer_after_the_client_left_goes_nowhere(self) -> None:
        """A client gone before the store answered: the answer is dropped."""
        store = FakeStore()
        harness = self.harness(self.limiter("10/s", store=store))
        client = harness.request("GET", "/")
        client.close()
        store.asked[0][1].callback((True, 0.1))
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertEqual([e["status"] for e in harness.access], [499])

    def test_store_failing_falls_back_to_the_local_state(self) -> None:
        """A store check that fails is decided locally, and counted as a
        fallback."""
        store = FakeStore()
        limiter = self.limiter("1/m", store=store)
        harness = self.harness(limiter)
        client = harness.request("GET", "/")
        store.asked[0][1].errback(ConnectionError("lost"))
        harness.backend_responds(OK)
        self.assertEqual(client.response().status, 200)
        again = harness.request("GET", "/")
        store.asked[1][1].errback(ConnectionError("lost"))
        self.assertEqual(again.response().status, 429)
        self.assertEqual(limiter.fallback, 2)

    def test_store_down_fails_open_to_the_local_state(self) -> None:
        """While the store is unreachable (fail = open), the local state
        decides at once."""
        limiter = self.limiter("1/m", store=FakeStore(down=True))
        harness = self.harness(limiter)
        statuses = [self.served(harness, harness.request("GET", "/")) for _ in range(2)]
        self.assertEqual(statuses, [200, 429])
        self.assertEqual(limiter.counters()["fallback"], 2)

    def test_store_down_with_fail_closed_is_503(self) -> None:
        """fail = closed answers 503 while the store is unreachable, its
        access event naming the limiter."""
        limiter = self.limiter("10/s", store=FakeStore(down=True), fail="closed")
        harness = self.harness(limiter)
        response = harness.request("GET", "/").response()
        self.assertEqual(
            (response.status, response.header(b"retry-after")), (503, b"1")
        )
        self.assertEqual(harness.access[0]["refused_by"], "limit:per_ip")
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertEqual((limiter.rejected, limiter.fallback), (1, 1))

    def test_store_asks_delay_mode_to_hold(self) -> None:
        """In delay mode the store's answer may hold the request too."""
        store = FakeStore()
        limiter = self.limiter("2/s", burst=2, mode="delay", store=store)
        harness = self.harness(limiter)
        client = harness.request("GET", "/")
        store.asked[0][1].callback((True, 1.0))  # 0.5 s early
        self.assertEqual(harness.endpoints.attempts, [])
        harness.clock.advance(0.5)
        harness.backend_responds(OK)
        self.assertEqual(client.response().status, 200)
