"""The cache filter through the real codec and exchange
(L{rproxy.testing.HTTPHarness}): hits without the backend, Age, HEAD from a
stored GET, Vary, conditional clients, revalidation, invalidation, ranges,
Cache-Status."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rproxy.cache.settings import CacheSettings
from tests.cache.fakes import FakeStore
from tests.cache.helpers import CachedRoute


class _Case(SynchronousTestCase):
    def route(self, *args: object, **kwargs: object) -> CachedRoute:
        route = CachedRoute(*args, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(route.close)
        return route

    def fill(self, route: CachedRoute, target: str = "/a", **kwargs: object) -> None:
        """One request for C{target} that the backend answers (and the cache stores)."""
        client = route.harness.request("GET", target)
        route.harness.backend_responds(route.response(**kwargs))  # type: ignore[arg-type]
        self.assertEqual(client.response().status, 200)


class HitTests(_Case):
    def test_second_request_is_served_without_the_backend(self) -> None:
        """A fresh stored response answers the next request; the backend is not asked."""
        route = self.route()
        self.fill(route)
        attempts = len(route.harness.endpoints.attempts)
        client = route.harness.request("GET", "/a")
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))
        self.assertEqual(len(route.harness.endpoints.attempts), attempts)
        self.assertEqual(route.cache.counters["hit"], 1)
        self.assertEqual(route.cache.counters["stored"], 1)

    def test_age_grows_with_resident_time(self) -> None:
        """Age on a hit is the time the response spent in the cache; Date is kept."""
        route = self.route()
        self.fill(route)
        first = route.store.variants(b"http://example.com/a")[0]
        route.clock.advance(25)
        got = route.harness.request("GET", "/a").response()
        self.assertEqual(got.header(b"age"), b"25")
        self.assertEqual(
            got.header(b"date"),
            dict((n.lower(), v) for n, v in first.headers)[b"date"],
        )

    def test_cache_status_on_miss_and_hit(self) -> None:
        """The miss says fwd=uri-miss and stored; the hit says hit with its ttl."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response())
        self.assertEqual(
            client.response().header(b"cache-status"),
            b"rproxy; fwd=uri-miss; fwd-status=200; stored",
        )
        route.clock.advance(10)
        got = route.harness.request("GET", "/a").response()
        self.assertEqual(got.header(b"cache-status"), b"rproxy; hit; ttl=50")

    def test_chunked_response_is_stored_and_served_with_a_length(self) -> None:
        """A chunked body is stored whole and served with Content-Length."""
        route = self.route()
        self.fill(route, chunked=True)
        got = route.harness.request("GET", "/a").response()
        self.assertEqual((got.body, got.framing), (b"hello", "length"))
        self.assertIsNone(got.header(b"transfer-encoding"))

    def test_head_is_served_from_a_stored_get(self) -> None:
        """HEAD after a stored GET gets its fields and length, no body, no backend."""
        route = self.route()
        self.fill(route)
        attempts = len(route.harness.endpoints.attempts)
        client = route.harness.request("HEAD", "/a")
        got = client.response(head=True)
        self.assertEqual(got.status, 200)
        self.assertEqual(got.header(b"content-length"), b"5")
        self.assertTrue(client.received.endswith(b"\r\n\r\n"))
        self.assertEqual(len(route.harness.endpoints.attempts), attempts)

    def test_uncacheable_response_is_not_stored(self) -> None:
        """no-store: the next request goes to the backend again."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(headers=[("Cache-Control", "no-store")])
        )
        self.assertEqual(
            client.response().header(b"cache-status"),
            b"rproxy; fwd=uri-miss; fwd-status=200; detail=no-store",
        )
        route.harness.request("GET", "/a")
        self.assertEqual(route.store.objects, 0)
        self.assertEqual(route.backend_requests, 2)


class DiskTierTests(_Case):
    def test_hit_waits_for_the_body_read(self) -> None:
        """A stored body only on disk is answered once the read completes."""
        route = self.route(store=FakeStore(disk=True))
        self.fill(route)
        client = route.harness.request("GET", "/a")
        self.assertEqual(client.received, b"")
        route.store.read_all()
        self.assertEqual(client.response().body, b"hello")
