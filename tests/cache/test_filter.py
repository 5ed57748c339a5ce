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
        """A fresh stored response answers the next request without the backend."""
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

    def test_plain_hits_match_what_the_full_rules_answer(self) -> None:
        """A plain GET's hit (the fast way) has the same status, fields and
        body as one the full rules answer (a request with an unrelated
        Pragma takes those), with a Vary that matches (neither has the
        field)."""
        route = self.route()
        self.fill(
            route,
            headers=[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
        )
        route.clock.advance(7)
        fast = route.harness.request("GET", "/a").response()
        full = route.harness.request("GET", "/a", headers=[("Pragma", "x")]).response()
        self.assertEqual((fast.status, fast.body), (full.status, full.body))
        self.assertEqual(fast.headers, full.headers)
        self.assertEqual(fast.header(b"age"), b"7")
        self.assertEqual(route.cache.counters["hit"], 2)

    def test_hits_mark_the_response_as_used(self) -> None:
        """Each hit touches the stored response (its place in the LRU)."""
        route = self.route()
        self.fill(route)
        route.harness.request("GET", "/a").response()
        route.harness.request("GET", "/a", headers=[("Pragma", "x")]).response()
        entry = route.store.variants(b"http://example.com/a")[0]
        self.assertEqual(route.store.touched, [entry, entry])

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


class VaryTests(_Case):
    def test_variants_are_kept_per_request_value(self) -> None:
        """Vary: Accept-Language keeps one variant per language, each served."""
        route = self.route()
        vary = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]
        for lang, body in (("en", b"hello"), ("fr", b"bonjour")):
            client = route.harness.request("GET", "/a", [("Accept-Language", lang)])
            route.harness.backend_responds(route.response(body, vary))
            self.assertEqual(client.response().body, body)
        status = None
        for lang, body in (("EN", b"hello"), ("fr", b"bonjour")):
            got = route.harness.request(
                "GET", "/a", [("Accept-Language", lang)]
            ).response()
            self.assertEqual(got.body, body)
            status = got.header(b"cache-status")
        self.assertEqual(status, b"rproxy; hit; ttl=60")
        self.assertEqual(route.backend_requests, 2)

    def test_other_variant_is_a_vary_miss(self) -> None:
        """A request matching no stored variant is forwarded as fwd=vary-miss."""
        route = self.route()
        vary = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]
        client = route.harness.request("GET", "/a", [("Accept-Language", "en")])
        route.harness.backend_responds(route.response(b"hello", vary))
        client.response()
        client = route.harness.request("GET", "/a", [("Accept-Language", "de")])
        route.harness.backend_responds(route.response(b"hallo", vary))
        self.assertEqual(
            client.response().header(b"cache-status"),
            b"rproxy; fwd=vary-miss; fwd-status=200; stored",
        )

    def test_vary_star_is_never_stored(self) -> None:
        """Vary: * responses are passed on and not stored."""
        route = self.route()
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(headers=[("Cache-Control", "max-age=60"), ("Vary", "*")])
        )
        self.assertIn(
            b"detail=vary-star", client.response().header(b"cache-status") or b""
        )
        self.assertEqual(route.store.objects, 0)


class ConditionalClientTests(_Case):
    ETAGGED = (("Cache-Control", "max-age=60"), ("ETag", '"v1"'))

    def test_matching_if_none_match_gets_304_from_the_cache(self) -> None:
        """A client holding the stored ETag gets 304 with no body and no backend."""
        route = self.route()
        self.fill(route, headers=self.ETAGGED)
        client = route.harness.request("GET", "/a", [("If-None-Match", 'W/"v1", "x"')])
        got = client.response()
        self.assertEqual(got.status, 304)
        self.assertEqual(got.header(b"etag"), b'"v1"')
        self.assertIsNone(got.header(b"content-length"))
        self.assertEqual(route.backend_requests, 1)

    def test_if_modified_since_not_modified(self) -> None:
        """If-Modified-Since at or after the stored Last-Modified gets 304."""
        route = self.route()
        lm = "Tue, 14 Nov 2023 22:13:20 GMT"
        self.fill(
            route, headers=[("Cache-Control", "max-age=60"), ("Last-Modified", lm)]
        )
        got = route.harness.request("GET", "/a", [("If-Modified-Since", lm)]).response()
        self.assertEqual(got.status, 304)

    def test_miss_strips_client_validators_and_answers_304_itself(self) -> None:
        """A conditional miss fetches the whole response; the client gets 304."""
        route = self.route()
        client = route.harness.request("GET", "/a", [("If-None-Match", '"v1"')])
        attempt = route.harness.backend_responds(route.response(headers=self.ETAGGED))
        self.assertNotIn(b"if-none-match", attempt.received.lower())
        got = client.response()
        self.assertEqual((got.status, got.body), (304, b""))
        self.assertEqual(
            route.store.variants(b"http://example.com/a")[0].body, b"hello"
        )
        self.assertEqual(route.harness.request("GET", "/a").response().body, b"hello")


class RevalidationTests(_Case):
    HEADERS = (("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("X-Version", "1"))

    def test_stale_response_is_revalidated_and_a_304_merged(self) -> None:
        """Stale: revalidated; on 304 the stored body goes with the new fields."""
        route = self.route()
        self.fill(route, headers=self.HEADERS)
        route.clock.advance(20)
        client = route.harness.request("GET", "/a")
        attempt = route.harness.endpoints.last
        self.assertIn(b'If-None-Match: "v1"', attempt.received)
        route.harness.backend_responds(
            route.response(
                b"",
                [
                    ("Cache-Control", "max-age=100"),
                    ("ETag", '"v1"'),
                    ("X-Version", "2"),
                ],
                status="304 Not Modified",
            ).replace(b"Content-Length: 0\r\n", b"")
        )
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))
        self.assertEqual(got.header(b"x-version"), b"2")
        self.assertEqual(
            got.header(b"cache-status"),
            b"rproxy; fwd=stale; fwd-status=304; ttl=100",
        )
        self.assertEqual(route.cache.counters["revalidated"], 1)
        # The stored response was updated: fresh again, with the new field.
        hit = route.harness.request("GET", "/a").response()
        self.assertEqual(hit.header(b"x-version"), b"2")
        self.assertEqual(hit.header(b"age"), b"0")

    def test_backend_connection_is_reused_after_a_304(self) -> None:
        """Serving the stored body in the 304's place keeps the backend connection."""
        route = self.route()
        self.fill(route, headers=self.HEADERS)
        route.clock.advance(20)
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(b"", self.HEADERS, status="304 Not Modified").replace(
                b"Content-Length: 0\r\n", b""
            )
        )
        client.response()
        attempts = len(route.harness.endpoints.attempts)
        route.clock.advance(20)
        route.harness.request("GET", "/a")
        self.assertEqual(len(route.harness.endpoints.attempts), attempts)

    def test_new_response_replaces_the_stale_one(self) -> None:
        """A 200 to a revalidation replaces the stored response."""
        route = self.route()
        self.fill(route, headers=self.HEADERS)
        route.clock.advance(20)
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(route.response(b"new!", self.HEADERS))
        self.assertEqual(client.response().body, b"new!")
        self.assertEqual(route.harness.request("GET", "/a").response().body, b"new!")
        self.assertEqual(route.store.objects, 1)

    def test_client_no_cache_revalidates_a_fresh_response(self) -> None:
        """A client's no-cache validates a fresh response (fwd=request)."""
        route = self.route()
        self.fill(route, headers=self.HEADERS)
        client = route.harness.request("GET", "/a", [("Cache-Control", "no-cache")])
        route.harness.backend_responds(
            route.response(b"", self.HEADERS, status="304 Not Modified").replace(
                b"Content-Length: 0\r\n", b""
            )
        )
        self.assertIn(b"fwd=request", client.response().header(b"cache-status") or b"")


class InvalidationTests(_Case):
    def test_post_invalidates_the_url_and_same_origin_location(self) -> None:
        """A POST's 2xx drops /a and the /b of its Location, not other hosts'."""
        route = self.route()
        self.fill(route, "/a")
        self.fill(route, "/b")
        self.fill(route, "/c")
        client = route.harness.request("POST", "/a", body=b"x")
        route.harness.backend_responds(
            route.response(
                b"ok",
                [("Location", "/b"), ("Content-Location", "http://other.example/c")],
            )
        )
        self.assertEqual(client.response().status, 200)
        self.assertEqual(route.store.variants(b"http://example.com/a"), [])
        self.assertEqual(route.store.variants(b"http://example.com/b"), [])
        self.assertEqual(len(route.store.variants(b"http://example.com/c")), 1)
        self.assertEqual(route.cache.counters["invalidated"], 2)

    def test_error_response_does_not_invalidate(self) -> None:
        """A DELETE answered 404 leaves the stored response."""
        route = self.route()
        self.fill(route, "/a")
        client = route.harness.request("DELETE", "/a")
        route.harness.backend_responds(
            route.response(b"no", [], status="404 Not Found")
        )
        client.response()
        self.assertEqual(len(route.store.variants(b"http://example.com/a")), 1)


class RangeTests(_Case):
    def test_single_range_is_served_from_the_stored_body(self) -> None:
        """Range: bytes=1-3 gets 206 with Content-Range from the cache."""
        route = self.route()
        self.fill(route)
        got = route.harness.request("GET", "/a", [("Range", "bytes=1-3")]).response()
        self.assertEqual((got.status, got.body), (206, b"ell"))
        self.assertEqual(got.header(b"content-range"), b"bytes 1-3/5")

    def test_unsatisfiable_range_is_416(self) -> None:
        """A range past the end gets 416 with the length."""
        route = self.route()
        self.fill(route)
        got = route.harness.request("GET", "/a", [("Range", "bytes=9-")]).response()
        self.assertEqual(got.status, 416)
        self.assertEqual(got.header(b"content-range"), b"bytes */5")

    def test_several_ranges_get_the_whole_response(self) -> None:
        """Range with two ranges is answered 200 with the whole body."""
        route = self.route()
        self.fill(route)
        got = route.harness.request(
            "GET", "/a", [("Range", "bytes=0-1,3-4")]
        ).response()
        self.assertEqual((got.status, got.body), (200, b"hello"))

    def test_range_miss_is_passed_through_and_not_stored(self) -> None:
        """A Range miss goes to the backend as it is; the 206 is not stored."""
        route = self.route()
        client = route.harness.request("GET", "/a", [("Range", "bytes=0-1")])
        attempt = route.harness.backend_responds(
            route.response(
                b"he",
                [("Cache-Control", "max-age=60"), ("Content-Range", "bytes 0-1/5")],
                status="206 Partial Content",
            )
        )
        self.assertIn(b"Range: bytes=0-1", attempt.received)
        self.assertEqual(client.response().status, 206)
        self.assertEqual(route.store.objects, 0)


class OuterFilterTests(_Case):
    def test_filters_before_the_cache_see_its_hits(self) -> None:
        """A response-headers filter before the cache applies to hits too."""
        from rproxy.http.filters.headers import ResponseHeaders

        added = ResponseHeaders(add=[(b"X-Outer", b"yes")])
        route = self.route(filters=[added])
        self.fill(route)
        got = route.harness.request("GET", "/a").response()
        self.assertEqual(got.header(b"x-outer"), b"yes")
        self.assertIn(b"hit", got.header(b"cache-status") or b"")


class RequestDirectiveTests(_Case):
    def test_only_if_cached_miss_is_504(self) -> None:
        """only-if-cached with nothing stored: 504, no backend."""
        route = self.route()
        client = route.harness.request(
            "GET", "/a", [("Cache-Control", "only-if-cached")]
        )
        self.assertEqual(client.response().status, 504)
        self.assertEqual(route.harness.endpoints.attempts, [])

    def test_authorization_needs_an_explicit_permission(self) -> None:
        """A request with Authorization gets no stored response lacking public."""
        route = self.route()
        self.fill(route)
        client = route.harness.request("GET", "/a", [("Authorization", "Basic eA==")])
        route.harness.backend_responds(route.response(b"for you"))
        got = client.response()
        self.assertEqual(got.body, b"for you")
        self.assertIn(b"detail=authorization", got.header(b"cache-status") or b"")

    def test_head_revalidates_a_stale_response(self) -> None:
        """A HEAD for a stale response revalidates it; the 304 refreshes it."""
        route = self.route()
        self.fill(route, headers=[("Cache-Control", "max-age=1"), ("ETag", '"e"')])
        route.clock.advance(5)
        client = route.harness.request("HEAD", "/a")
        attempt = route.harness.endpoints.last
        self.assertIn(b"HEAD /a", attempt.received.split(b"\r\n\r\n")[-2])
        route.harness.backend_responds(
            route.response(
                b"",
                [("Cache-Control", "max-age=60"), ("ETag", '"e"')],
                "304 Not Modified",
            ).replace(b"Content-Length: 0\r\n", b"")
        )
        got = client.response(head=True)
        self.assertEqual((got.status, got.header(b"content-length")), (200, b"5"))
        self.assertEqual(route.harness.request("GET", "/a").response().body, b"hello")
        self.assertEqual(route.cache.counters["hit"], 1)


class DiskBodyTests(_Case):
    def test_revalidated_body_is_read_from_disk(self) -> None:
        """After a 304 the stored body is read from the disk tier and sent."""
        route = self.route(store=FakeStore(disk=True))
        self.fill(route, headers=[("Cache-Control", "max-age=1"), ("ETag", '"e"')])
        route.clock.advance(5)
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(
                b"",
                [("Cache-Control", "max-age=60"), ("ETag", '"e"')],
                "304 Not Modified",
            ).replace(b"Content-Length: 0\r\n", b"")
        )
        route.store.read_all()
        got = client.response()
        self.assertEqual((got.status, got.body), (200, b"hello"))


class AdminTests(_Case):
    def test_purge_and_snapshot(self) -> None:
        """purge(url) and purge_prefix drop stored responses; snapshot counts them."""
        route = self.route()
        self.fill(route, "/a")
        self.fill(route, "/b/1")
        self.fill(route, "/b/2")
        snapshot = route.cache.snapshot()
        self.assertEqual((snapshot["objects"], snapshot["stored"]), (3, 3))
        self.assertEqual(route.cache.purge("http://EXAMPLE.com/a"), 1)
        self.assertEqual(route.cache.purge_prefix("http://example.com/b/"), 2)
        self.assertEqual(route.cache.snapshot()["purged"], 3)
        self.assertEqual(route.store.objects, 0)


class StoredFieldsTests(_Case):
    def test_fields_named_by_connection_are_not_stored(self) -> None:
        """Connection: a, b — a and b are neither passed on nor stored; c is."""
        route = self.route()
        self.fill(
            route,
            headers=[
                ("Cache-Control", "max-age=60"),
                ("Connection", "a, b"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
            ],
        )
        got = route.harness.request("GET", "/a").response()
        names = {name.lower() for name, _ in got.headers}
        self.assertIn(b"c", names)
        self.assertFalse(names & {b"a", b"b", b"connection"})

    def test_no_cache_with_field_names_strips_them_from_hits(self) -> None:
        """no-cache="Set-Cookie": the hit is served at once, without Set-Cookie."""
        route = self.route()
        self.fill(
            route,
            headers=[
                ("Cache-Control", 'max-age=60, no-cache="Set-Cookie"'),
                ("Set-Cookie", "s=1"),
            ],
        )
        got = route.harness.request("GET", "/a").response()
        self.assertIsNone(got.header(b"set-cookie"))
        self.assertEqual(route.backend_requests, 1)

    def test_set_cookie_strip_keeps_it_on_the_miss_only(self) -> None:
        """set_cookie = "strip": the miss keeps Set-Cookie, hits do not get it."""
        route = self.route(CacheSettings(set_cookie="strip"))
        client = route.harness.request("GET", "/a")
        route.harness.backend_responds(
            route.response(
                headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")]
            )
        )
        self.assertEqual(client.response().header(b"set-cookie"), b"s=1")
        got = route.harness.request("GET", "/a").response()
        self.assertIsNone(got.header(b"set-cookie"))
