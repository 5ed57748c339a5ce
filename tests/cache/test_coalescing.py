"""Request coalescing, hit-for-pass, stale-while-revalidate, stale-if-error
and a client that goes away mid-response, through the cache filter on a
L{Clock}."""

from __future__ import annotations

import gc
import weakref

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from rproxy.cache.settings import CacheSettings
from rproxy.http.filters.cache import NOTE
from tests.cache.helpers import CachedRoute


class _Case(SynchronousTestCase):
    def route(self, *args: object, **kwargs: object) -> CachedRoute:
        route = CachedRoute(*args, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(route.close)
        return route


class CoalescingTests(_Case):
    def test_concurrent_misses_make_one_backend_request(self) -> None:
        """Five concurrent misses: one backend request, four served from the store."""
        route = self.route()
        clients = [route.harness.request("GET", "/a") for _ in range(5)]
        self.assertEqual(len(route.harness.endpoints.attempts), 1)
        route.harness.backend_responds(route.response())
        for client in clients:
            self.assertEqual(client.response().body, b"hello")
        self.assertEqual(route.backend_requests, 1)
        self.assertEqual(route.cache.counters["collapsed"], 4)
        status = clients[1].response().header(b"cache-status") or b""
        self.assertIn(b"hit", status)
        self.assertIn(b"collapsed", status)
        self.assertEqual(route.cache.coalescer.fetches, {})

    def test_waiters_go_to_the_backend_after_the_lock_timeout(self) -> None:
        """A waiter goes to the backend itself after lock_timeout."""
        route = self.route(CacheSettings(lock_timeout=2.0))
        route.harness.request("GET", "/a")
        waiter = route.harness.request("GET", "/a")
        self.assertEqual(len(route.harness.endpoints.attempts), 1)
        route.clock.advance(2.0)
        self.assertEqual(len(route.harness.endpoints.attempts), 2)
        route.harness.backend_responds(route.response(b"mine"))
        self.assertEqual(waiter.response().body, b"mine")
        self.assertEqual(route.cache.counters["lock_timeout"], 1)
        route.harness.endpoints.attempts[0].respond(route.response())

    def test_uncacheable_answer_releases_waiters_and_marks_hit_for_pass(self) -> None:
        """An uncacheable answer releases the waiters; later requests do not wait."""
        route = self.route()
        leader = route.harness.request("GET", "/a")
        waiters = [route.harness.request("GET", "/a") for _ in range(2)]
        private = [("Cache-Control", "private")]
        route.harness.backend_responds(route.response(b"mine", private))
        self.assertEqual(leader.response().body, b"mine")
        self.assertEqual(len(route.harness.endpoints.attempts), 3)
        others = route.harness.endpoints.attempts[1:]
        for attempt, waiter in zip(others, waiters, strict=True):
            attempt.respond(route.response(b"yours", private))
            self.assertEqual(waiter.response().body, b"yours")
        self.assertEqual(route.cache.counters["pass"], 1)
        # Within the hit-for-pass time, concurrent requests each go through.
        route.harness.request("GET", "/a")
        route.harness.request("GET", "/a")
        self.assertEqual(route.cache.counters["collapsed"], 2)
        self.assertEqual(route.cache.coalescer.fetches, {})

    def test_hit_for_pass_mark_expires(self) -> None:
        """After hit_for_pass seconds, concurrent misses coalesce again."""
        route = self.route(CacheSettings(hit_for_pass=30.0))
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(b"x", [("Cache-Control", "no-store")])
        )
        client.response()
        route.clock.advance(31)
        route.harness.request("GET", "/a")
        route.harness.request("GET", "/a")
        self.assertEqual(len(route.harness.endpoints.attempts), 2)
        route.harness.backend_responds(route.response())

    def test_leader_client_gone_releases_waiters(self) -> None:
        """The leader's client gone mid-response: its waiters go on at once."""
        route = self.route()
        leader = route.harness.request("GET", "/a")
        waiter = route.harness.request("GET", "/a")
        head = route.response(b"0123456789")[:-5]  # half the body
        route.harness.backend_responds(head)
        leader.close()
        self.assertEqual(len(route.harness.endpoints.attempts), 2)
        route.harness.backend_responds(route.response())
        self.assertEqual(waiter.response().body, b"hello")
        self.assertEqual(route.cache.coalescer.fetches, {})

    def test_client_gone_mid_tee_drops_the_tee(self) -> None:
        """A client gone mid-response leaves nothing stored and no state behind."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        state = weakref.ref(client.protocol.exchange.notes[NOTE])
        route.harness.backend_responds(route.response(b"0123456789")[:-5])
        self.assertIsNotNone(state())
        enabled = gc.isenabled()
        gc.disable()
        try:
            client.close()
            self.assertIsNone(state())  # freed by reference counting
        finally:
            if enabled:
                gc.enable()
        self.assertEqual(route.store.objects, 0)
        self.assertEqual(route.cache.coalescer.fetches, {})

    def test_large_response_streams_through_unstored(self) -> None:
        """A body past max_object passes whole, unstored, and marks the key."""
        route = self.route(CacheSettings(max_object=4))
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(b"0123456789", chunked=True))
        self.assertEqual(client.response().body, b"0123456789")
        self.assertEqual(route.store.objects, 0)
        self.assertEqual(route.cache.counters["pass"], 1)
        client = route.harness.request("GET", "/b")
        route.harness.backend_responds(route.response(b"0123456789"))
        self.assertIn(b"too-large", client.response().header(b"cache-status") or b"")


class StaleWhileRevalidateTests(_Case):
    HEADERS = (
        ("Cache-Control", "max-age=10, stale-while-revalidate=30"),
        ("ETag", '"v1"'),
    )

    def test_stale_response_is_served_and_refreshed_in_the_background(self) -> None:
        """Within stale-while-revalidate: served stale, revalidated behind it."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(headers=self.HEADERS))
        client.response()
        route.clock.advance(15)
        client = route.harness.request("GET", "/a")
        got = client.response()
        self.assertEqual(got.body, b"hello")
        self.assertEqual(got.header(b"cache-status"), b"rproxy; hit; ttl=-5")
        self.assertEqual(route.cache.counters["refresh"], 1)
        refresh = route.harness.endpoints.last
        self.assertIn(b'If-None-Match: "v1"', refresh.received)
        # A second stale request meanwhile does not start another refresh.
        route.harness.request("GET", "/a").response()
        self.assertEqual(route.cache.counters["refresh"], 1)
        refresh.respond(
            route.response(b"", self.HEADERS, status="304 Not Modified").replace(
                b"Content-Length: 0\r\n", b""
            )
        )
        self.assertEqual(route.cache.counters["revalidated"], 1)
        fresh = route.harness.request("GET", "/a").response()
        self.assertIn(b"ttl=10", fresh.header(b"cache-status") or b"")
        self.assertEqual(route.cache.coalescer.fetches, {})

    def test_refresh_with_a_new_response_stores_it(self) -> None:
        """A background refresh answered 200 replaces the stored response."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(headers=self.HEADERS))
        client.response()
        route.clock.advance(15)
        route.harness.request("GET", "/a").response()
        route.harness.endpoints.last.respond(route.response(b"new", self.HEADERS))
        self.assertEqual(route.harness.request("GET", "/a").response().body, b"new")

    def test_past_the_window_it_is_revalidated_first(self) -> None:
        """Past the stale-while-revalidate window the client waits for revalidation."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(headers=self.HEADERS))
        client.response()
        route.clock.advance(50)
        client = route.harness.request("GET", "/a")
        self.assertEqual(client.received, b"")
        route.harness.backend_responds(route.response(b"new", self.HEADERS))
        self.assertEqual(client.response().body, b"new")


class StaleIfErrorTests(_Case):
    HEADERS = (("Cache-Control", "max-age=10, stale-if-error=60"),)

    def stale_route(self, headers: object = HEADERS) -> CachedRoute:
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(headers=headers))  # type: ignore[arg-type]
        client.response()
        route.clock.advance(20)
        route.harness.factory.keep_alive.close_all()  # the next request connects
        return route

    def test_5xx_is_replaced_by_the_stale_response(self) -> None:
        """A backend's 503 is replaced by the stale response (stale-if-error)."""
        route = self.stale_route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(b"down", [], status="503 Service Unavailable")
        )
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))
        self.assertEqual(
            got.header(b"cache-status"),
            b"rproxy; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error",
        )

    def test_connect_failure_is_replaced_by_the_stale_response(self) -> None:
        """A refused connect: the stale response is served instead of 502."""
        route = self.stale_route()
        client = route.harness.request("GET", "/a")
        for _ in range(3):
            attempt = route.harness.endpoints.last
            if not attempt.deferred.called:
                attempt.fail(ConnectionRefusedError())
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))
        self.assertIn(b"fwd-status=502", got.header(b"cache-status") or b"")

    def test_timeout_is_replaced_by_the_stale_response(self) -> None:
        """A backend that does not answer in time: the stale response instead of 504."""
        route = self.stale_route((("Cache-Control", "max-age=10, stale-if-error=600"),))
        client = route.harness.request("GET", "/a")
        route.harness.endpoints.last.succeed()
        route.clock.advance(120)
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))
        self.assertIn(b"fwd-status=504", got.header(b"cache-status") or b"")

    def test_past_the_window_the_error_is_passed_on(self) -> None:
        """Past stale-if-error the backend's error reaches the client."""
        route = self.stale_route()
        route.clock.advance(100)
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(b"down", [], status="503 Service Unavailable")
        )
        self.assertEqual(client.response().status, 503)

    def test_must_revalidate_forbids_it(self) -> None:
        """must-revalidate: the error is passed on even with stale-if-error."""
        route = self.stale_route(
            (("Cache-Control", "max-age=10, stale-if-error=60, must-revalidate"),)
        )
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(b"down", [], status="500 Oops"))
        self.assertEqual(client.response().status, 500)

    def test_default_window_applies_where_the_response_says_nothing(self) -> None:
        """The cache's stale_if_error setting covers responses without the directive."""
        route = self.route(CacheSettings(stale_if_error=30))
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(headers=[("Cache-Control", "max-age=1")])
        )
        client.response()
        route.clock.advance(5)
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(b"", [], status="502 Bad Gateway")
        )
        self.assertEqual(client.response().body, b"hello")
