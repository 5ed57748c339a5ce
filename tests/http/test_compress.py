"""The compression filter: choosing a coding from Accept-Encoding, which
responses are compressed and which go as they are, the fields a compressed
response gets (Vary, ETag, Content-Encoding), streaming and flushing per
read for event streams, coding big bodies a slice per reactor turn, and the
TOML settings' checks.  Driven in memory through L{HTTPHarness}."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import zstandard
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rproxy.config import ConfigError
from rproxy.http import _encoders
from rproxy.http._codings import choose_coding
from rproxy.http.filters import HTTPFilter, LocalReply
from rproxy.http.filters import compress as compress_module
from rproxy.http.filters.compress import (
    DEFAULT_LEVELS,
    SLICE,
    Compress,
    CompressSettings,
    compress_settings,
)
from rproxy.http.routing import Route
from rproxy.interfaces import IHTTPFilter
from rproxy.testing import Client, HTTPHarness, Response

#: an HTML page of about 6 KiB.
PAGE = b"".join(
    b"<li><a href='/item/%d'>Item %d</a> <span class='price'>%d.99</span></li>\n"
    % (n, n, n * 7 % 100)
    for n in range(90)
)

RANGE = b"Content-Range: bytes 0-5/9000"
CHUNKED = b"Transfer-Encoding: chunked"

DECODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: zlib.decompress(data, 31),
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def streaming_decoder(coding: str) -> Callable[[bytes], bytes]:
    """
    A function that decodes the next bytes of a C{coding} stream.
    """
    if coding == "gzip":
        return zlib.decompressobj(31).decompress
    if coding == "br":
        decompressor = brotli.Decompressor()

        def decode(data: bytes) -> bytes:
            # brotli's decoder gives out at most 32 KiB a call: ask again.
            out = [decompressor.process(data)]
            while out[-1]:
                out.append(decompressor.process(b""))
            return b"".join(out)

        return decode
    return zstandard.ZstdDecompressor().decompressobj().decompress


def response(
    body: bytes = PAGE,
    *fields: bytes,
    status: bytes = b"200 OK",
    content_type: bytes | None = b"text/html; charset=utf-8",
    length: bool = True,
) -> bytes:
    """
    A backend's response with C{body}, its C{Content-Type} and
    C{Content-Length} (when C{length}), and each of C{fields} (C{b"Name: v"}).
    """
    lines = [b"HTTP/1.1 " + status, *fields]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    """
    A chunked body of C{chunks}, with the trailer section C{trailers}.
    """
    body = b"".join(b"%x\r\n%s\r\n" % (len(one), one) for one in chunks)
    return body + b"0\r\n" + trailers + b"\r\n"


def one_turn(clock: Clock) -> None:
    """
    Run the one call due on C{clock}, as one reactor turn does (a Clock's
    advance would also run the calls that call schedules for now).
    """
    (call,) = [
        one for one in clock.getDelayedCalls() if one.getTime() <= clock.seconds()
    ]
    clock.calls.remove(call)
    call.func(*call.args, **call.kw)


class _Case(SynchronousTestCase):
    def harness(self, settings: CompressSettings | None = None) -> HTTPHarness:
        harness = HTTPHarness([Route(pool="web", filters=[Compress(settings)])])
        self.addCleanup(harness.close)
        return harness

    def fetch(
        self,
        backend: bytes,
        accept: str | None = "gzip",
        *,
        method: str = "GET",
        headers: tuple[tuple[str, str], ...] = (),
        settings: CompressSettings | None = None,
        version: str = "HTTP/1.1",
    ) -> Response:
        """
        The response a client sending C{Accept-Encoding: accept} (none if
        None) gets when the backend answers C{backend}.
        """
        harness = self.harness(settings)
        fields = headers if accept is None else (("Accept-Encoding", accept), *headers)
        client = harness.request(method, "/", headers=fields, version=version)
        harness.backend_responds(backend)
        return client.response(head=method == "HEAD")

    def assert_compressed(self, got: Response, coding: str, body: bytes) -> None:
        self.assertEqual(got.header(b"content-encoding"), coding.encode())
        self.assertIsNone(got.header(b"content-length"))
        self.assertEqual(got.framing, "chunked")
        self.assertEqual(DECODE[coding](got.body), body)

    def assert_as_is(self, got: Response, body: bytes = PAGE) -> None:
        self.assertIsNone(got.header(b"content-encoding"))
        self.assertEqual(got.body, body)


class NegotiationTests(SynchronousTestCase):
    def test_accept_encoding_table(self) -> None:
        """Each Accept-Encoding (fields) gives the coding the RFC 9110
        §12.5.3 rules and the preference order say."""
        prefer = ("zstd", "br", "gzip")
        table: list[tuple[list[bytes], str | None]] = [
            ([], None),
            ([b""], None),
            ([b"gzip"], "gzip"),
            ([b"gzip, deflate, br, zstd"], "zstd"),
            ([b"deflate"], None),
            ([b"gzip;q=1, br;q=0.9"], "gzip"),
            ([b"gzip;q=0.5, br;q=0.5"], "br"),
            ([b"br;q=0.001"], "br"),
            ([b"gzip;q=0"], None),
            ([b"gzip;q=0.000"], None),
            ([b"*"], "zstd"),
            ([b"*;q=0.5, gzip"], "gzip"),
            ([b"*, zstd;q=0"], "br"),
            ([b"*;q=0"], None),
            ([b"identity"], None),
            ([b"identity;q=0, *;q=0"], None),
            ([b"gzip;q=0.5, identity"], None),
            ([b"gzip, identity"], "gzip"),
            ([b"gzip;q=0.5, *;q=0.8"], "zstd"),
            ([b"GZIP"], "gzip"),
            ([b"x-gzip"], "gzip"),
            ([b"gzip ; Q=0.5 , br ; q=0.4"], "gzip"),
            ([b"gzip;q=1.5"], None),
            ([b"gzip;q=abc"], None),
            ([b"gzip;q=0.0001"], None),
            ([b"gzip;q=abc, br"], "br"),
            ([b"gzip", b"br"], "br"),
            ([b"gzip", b"gzip;q=0"], None),
            ([b"br;q=0", b"br"], None),
            ([b", ,gzip,"], "gzip"),
        ]
        for fields, expected in table:
            with self.subTest(fields=fields):
                self.assertEqual(choose_coding(fields, prefer), expected)

    def test_preference_breaks_ties_and_leaves_codings_out(self) -> None:
        """Ties go to the earlier of prefer; a coding not in prefer is never
        chosen."""
        self.assertEqual(choose_coding([b"gzip, br"], ("gzip", "br")), "gzip")
        self.assertEqual(choose_coding([b"zstd, br"], ("gzip",)), None)
        self.assertEqual(choose_coding([b"br, gzip;q=0.1"], ("gzip",)), "gzip")


class CompressTests(_Case):
    def test_provides_the_filter_interface(self) -> None:
        """Compress provides IHTTPFilter."""
        self.assertTrue(verifyObject(IHTTPFilter, Compress()))

    def test_each_coding_round_trips(self) -> None:
        """gzip, br and zstd bodies decode to the backend's body, chunked,
        without Content-Length, with Content-Encoding and Vary."""
        for coding in ("gzip", "br", "zstd"):
            with self.subTest(coding=coding):
                got = self.fetch(response(), coding)
                self.assert_compressed(got, coding, PAGE)
                self.assertEqual(got.header(b"vary"), b"Accept-Encoding")
                self.assertLess(len(got.body), len(PAGE) / 2)

    def test_levels_come_from_the_settings(self) -> None:
        """The settings' level is the one the encoder is made with."""
        made: list[tuple[str, int]] = []

        def spy(coding: str, level: int) -> Any:
            made.append((coding, level))
            return _encoders.new_encoder(coding, level)

        self.patch(compress_module, "new_encoder", spy)
        self.fetch(response(), "gzip", settings=CompressSettings(levels={"gzip": 1}))
        self.fetch(response(), "br")
        self.assertEqual(made, [("gzip", 1), ("br", DEFAULT_LEVELS["br"])])

    def test_the_backend_gets_the_request_as_sent(self) -> None:
        """Accept-Encoding and If-None-Match go upstream unchanged."""
        harness = self.harness()
        harness.request(
            "GET",
            "/",
            headers=[("Accept-Encoding", "gzip, br"), ("If-None-Match", 'W/"v1"')],
        )
        attempt = harness.backend_responds(response())
        self.assertIn(b"\r\nAccept-Encoding: gzip, br\r\n", attempt.received)
        self.assertIn(b'\r\nIf-None-Match: W/"v1"\r\n', attempt.received)

    def test_a_body_of_unknown_length_is_compressed(self) -> None:
        """Chunked and close-delimited bodies are compressed whatever their
        size."""
        got = self.fetch(
            response(b"", CHUNKED, length=False) + chunked(b"small", b" body")
        )
        self.assert_compressed(got, "gzip", b"small body")
        harness = self.harness()
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "gzip")])
        attempt = harness.backend_responds(response(b"until close", length=False))
        assert attempt.transport is not None
        attempt.transport.finish(Failure(ConnectionDone()))  # the backend closed
        self.assert_compressed(client.response(), "gzip", b"until close")

    def test_identity_content_encoding_counts_as_none(self) -> None:
        """A backend's Content-Encoding: identity is replaced by the coding
        applied; left as it is when nothing is applied."""
        backend = response(PAGE, b"Content-Encoding: identity")
        got = self.fetch(backend)
        self.assertEqual(
            [v for n, v in got.headers if n.lower() == b"content-encoding"], [b"gzip"]
        )
        self.assertEqual(DECODE["gzip"](got.body), PAGE)
        kept = self.fetch(backend, None)
        self.assertEqual(kept.header(b"content-encoding"), b"identity")
        self.assertEqual(kept.body, PAGE)

    def test_digests_and_accept_ranges_are_dropped(self) -> None:
        """Digests of the uncoded body and Accept-Ranges go; other fields
        stay."""
        got = self.fetch(
            response(
                PAGE,
                b"Content-Digest: sha-256=:abc=:",
                b"Accept-Ranges: bytes",
                b"X-Kept: yes",
            )
        )
        names = {name.lower() for name, _ in got.headers}
        self.assertNotIn(b"content-digest", names)
        self.assertNotIn(b"accept-ranges", names)
        self.assertEqual(got.header(b"x-kept"), b"yes")

    def test_trailers_pass(self) -> None:
        """The backend's trailers reach a client that asked for them, less a
        digest of the uncoded body."""
        got = self.fetch(
            response(b"", CHUNKED, length=False)
            + chunked(PAGE, trailers=b"X-Checksum: 42\r\nContent-Digest: x\r\n"),
            headers=(("TE", "trailers"),),
        )
        self.assert_compressed(got, "gzip", PAGE)
        self.assertEqual(got.trailers, [(b"X-Checksum", b"42")])

    def test_the_connection_carries_on(self) -> None:
        """A compressed response ends so that the next request on the
        connection is served."""
        harness = self.harness()
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "br")])
        harness.backend_responds(response())
        client.request("GET", "/again", headers=[("Accept-Encoding", "zstd")])
        harness.backend_responds(response(b"x" * 600))
        first, second = client.responses()
        self.assertEqual(DECODE["br"](first.body), PAGE)
        self.assertEqual(DECODE["zstd"](second.body), b"x" * 600)
        self.assertFalse(client.closed)


class NotCompressedTests(_Case):
    def test_responses_that_go_as_they_are(self) -> None:
        """HEAD, 204, 206, 304, non-2xx, Content-Encoding, Content-Range,
        no-transform, another type, no type, a short body, an empty body, a
        transfer coding: not compressed."""
        cases: dict[str, tuple[bytes, dict[str, Any]]] = {
            "204": (response(b"", status=b"204 No Content", length=False), {}),
            "206": (response(PAGE, RANGE, status=b"206 Partial Content"), {}),
            "404": (response(PAGE, status=b"404 Not Found"), {}),
            "content-encoding": (response(PAGE, b"Content-Encoding: br"), {}),
            "content-range": (response(PAGE, RANGE), {}),
            "no-transform": (response(PAGE, b"Cache-Control: a, no-transform"), {}),
            "image/png": (response(PAGE, content_type=b"image/png"), {}),
            "no type": (response(PAGE, content_type=None), {}),
            "short": (response(b"x" * 511), {}),
            "empty": (response(b""), {}),
            "transfer coding": (
                response(b"", b"Transfer-Encoding: gzip, chunked", length=False)
                + chunked(PAGE),
                {},
            ),
            "request no-transform": (
                response(),
                {"headers": (("Cache-Control", "no-transform"),)},
            ),
            "HTTP/1.0": (response(), {"version": "HTTP/1.0"}),
            "no Accept-Encoding": (response(), {"accept": None}),
        }  # fmt: skip
        for name, (backend, options) in cases.items():
            with self.subTest(name):
                got = self.fetch(backend, **{"accept": "gzip", **options})
                self.assertNotEqual(got.header(b"content-encoding"), b"gzip")
                if got.status not in (204,) and name != "transfer coding":
                    self.assertEqual(got.body, backend.partition(b"\r\n\r\n")[2])

    def test_head_gets_the_fields_but_no_coding(self) -> None:
        """A HEAD response keeps its Content-Length and gets Vary, no
        Content-Encoding."""
        got = self.fetch(
            response(b"", b"Content-Length: 9000", length=False), method="HEAD"
        )
        self.assertIsNone(got.header(b"content-encoding"))
        self.assertEqual(got.header(b"content-length"), b"9000")
        self.assertEqual(got.header(b"vary"), b"Accept-Encoding")

    def test_304_gets_vary_and_a_weak_etag(self) -> None:
        """A 304 to a request whose answer would be compressed gets Vary and
        a weak ETag; to one that would not, Vary and the ETag as it is."""
        backend = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'
        got = self.fetch(backend, "gzip")
        self.assertEqual((got.status, got.header(b"etag")), (304, b'W/"v1"'))
        self.assertEqual(got.header(b"vary"), b"Accept-Encoding")
        plain = self.fetch(backend, None)
        self.assertEqual(plain.header(b"etag"), b'"v1"')
        self.assertEqual(plain.header(b"vary"), b"Accept-Encoding")
        image = self.fetch(
            b'HTTP/1.1 304 Not Modified\r\nContent-Type: image/png\r\nETag: "i"\r\n\r\n'
        )
        self.assertEqual(image.header(b"etag"), b'"i"')
        self.assertIsNone(image.header(b"vary"))

    def test_min_length_is_the_settings(self) -> None:
        """A body of exactly min_length is compressed, one byte less not."""
        settings = CompressSettings(min_length=100)
        self.assert_compressed(
            self.fetch(response(b"a" * 100), settings=settings), "gzip", b"a" * 100
        )
        self.assert_as_is(self.fetch(response(b"a" * 99), settings=settings), b"a" * 99)

    def test_types_are_the_settings(self) -> None:
        """Exact types, a type's every subtype and structured suffixes
        match; others do not."""
        settings = CompressSettings(
            types=["application/json", "text/*", "application/*+xml"]
        )
        for content_type, compressed in [
            (b"application/json", True),
            (b"Application/JSON; charset=utf-8", True),
            (b"text/css", True),
            (b"application/atom+xml", True),
            (b"application/xml", False),
            (b"application/javascript", False),
            (b"image/svg+xml", False),
        ]:  # fmt: skip
            with self.subTest(content_type):
                got = self.fetch(response(content_type=content_type), settings=settings)
                self.assertEqual(got.header(b"content-encoding") == b"gzip", compressed)


class FieldTests(_Case):
    def test_vary_is_added_for_every_client(self) -> None:
        """A response of a compressed type gets Vary: Accept-Encoding even
        when this client gets it uncompressed."""
        for accept in (None, "identity", "deflate", "gzip;q=0"):
            with self.subTest(accept=accept):
                got = self.fetch(response(), accept)
                self.assert_as_is(got)
                self.assertEqual(got.header(b"vary"), b"Accept-Encoding")

    def test_vary_is_merged(self) -> None:
        """The backend's Vary gets Accept-Encoding added once; one that has
        it, or is *, is left as it is."""
        for given, expected in [
            ([b"Vary: Origin"], [b"Origin, Accept-Encoding"]),
            ([b"Vary: A", b"Vary: Cookie"], [b"A, Accept-Encoding", b"Cookie"]),
            ([b"Vary: origin, accept-encoding"], [b"origin, accept-encoding"]),
            ([b"Vary: A", b"Vary: Accept-Encoding"], [b"A", b"Accept-Encoding"]),
            ([b"Vary: *"], [b"*"]),
        ]:  # fmt: skip
            with self.subTest(given=given):
                got = self.fetch(response(PAGE, *given))
                self.assertEqual(
                    [v for n, v in got.headers if n.lower() == b"vary"], expected
                )

    def test_strong_etag_becomes_weak(self) -> None:
        """A compressed response's strong ETag becomes weak; a weak one stays
        as it is; an uncompressed one keeps its strong ETag."""
        got = self.fetch(response(PAGE, b'ETag: "abc"'))
        self.assertEqual(got.header(b"etag"), b'W/"abc"')
        weak = self.fetch(response(PAGE, b'ETag: W/"abc"'))
        self.assertEqual(weak.header(b"etag"), b'W/"abc"')
        plain = self.fetch(response(PAGE, b'ETag: "abc"'), None)
        self.assertEqual(plain.header(b"etag"), b'"abc"')


class StreamingTests(_Case):
    def send_events(
        self, coding: str, events: list[bytes]
    ) -> tuple[list[bytes], Client, HTTPHarness]:
        """
        Stream C{events} from the backend, one read each, to a client
        accepting C{coding}; what the client could decode after each read.
        """
        harness = self.harness()
        client = harness.request(
            "GET", "/events", headers=[("Accept-Encoding", coding)]
        )
        attempt = harness.backend_responds(
            response(b"", CHUNKED, content_type=b"text/event-stream", length=False)
        )
        decode = streaming_decoder(coding)
        seen, decoded, taken = [], b"", 0
        for event in events:
            attempt.respond(b"%x\r\n%s\r\n" % (len(event), event))
            body = client.responses()[0].body
            decoded += decode(body[taken:])
            taken = len(body)
            seen.append(decoded)
        attempt.respond(b"0\r\n\r\n")
        return seen, client, harness

    def test_event_streams_are_flushed_after_each_read(self) -> None:
        """Decoding what the client got after each backend read gives every
        event sent so far, for each coding."""
        events = [b"data: %d %s\n\n" % (n, b"tick " * n) for n in range(1, 6)]
        for coding in ("gzip", "br", "zstd"):
            with self.subTest(coding=coding):
                seen, client, _ = self.send_events(coding, events)
                self.assertEqual(
                    seen, [b"".join(events[: n + 1]) for n in range(len(events))]
                )
                got = client.response()
                self.assertEqual(got.header(b"content-encoding"), coding.encode())
                self.assertEqual(DECODE[coding](got.body), b"".join(events))

    def test_other_bodies_are_not_flushed_per_read(self) -> None:
        """A body that is no event stream sends what the encoder gives: small
        reads may send nothing until the end."""
        harness = self.harness()
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "gzip")])
        attempt = harness.backend_responds(response(b"", CHUNKED, length=False))
        attempt.respond(b"6\r\nabcdef\r\n")
        sent = client.responses()[0].body
        self.assertLess(len(sent), 20)  # the gzip header at most
        attempt.respond(b"0\r\n\r\n")
        self.assertEqual(DECODE["gzip"](client.response().body), b"abcdef")

    def test_a_long_br_body_comes_out_as_it_goes(self) -> None:
        """The br encoder, which would hold back megabytes, gives out what it
        was given at least every 256 KiB."""
        rng = random.Random(3)
        text = b" ".join(b"%x" % rng.getrandbits(24) for _ in range(300_000))
        harness = self.harness()
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "br")])
        attempt = harness.backend_responds(response(b"", CHUNKED, length=False))
        decode = streaming_decoder("br")
        decoded, taken, sent = b"", 0, 0
        for start in range(0, len(text), SLICE):
            piece = text[start : start + SLICE]
            attempt.respond(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            body = client.responses()[0].body
            decoded += decode(body[taken:])
            taken = len(body)
            self.assertGreaterEqual(len(decoded), sent - (256 << 10))
        self.assertEqual(decoded, text[: len(decoded)])
        attempt.respond(b"0\r\n\r\n")
        self.assertEqual(DECODE["br"](client.response().body), text)


class SliceTests(_Case):
    def test_a_big_body_is_coded_a_slice_per_reactor_turn(self) -> None:
        """1 MiB handed over in one call is coded a slice at a time, each
        after a turn of the clock, and arrives whole."""
        sizes: list[int] = []
        turns: list[int] = []

        class Spy:
            def __init__(self, encoder: _encoders.Encoder) -> None:
                self.encoder = encoder

            def compress(self, data: Any) -> bytes:
                sizes.append(len(data))
                turns.append(clock_turns[0])
                return self.encoder.compress(data)

            def flush(self) -> bytes:
                return self.encoder.flush()

            def finish(self) -> bytes:
                return self.encoder.finish()

        self.patch(
            compress_module,
            "new_encoder",
            lambda coding, level: Spy(_encoders.new_encoder(coding, level)),
        )
        body = PAGE * (1 + (1 << 20) // len(PAGE))
        body = body[: 1 << 20]
        harness = self.harness()
        clock_turns = [0]
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "zstd")])
        harness.backend_responds(response(body))
        while not client.responses()[0].complete:
            clock_turns[0] += 1
            one_turn(harness.clock)
        slices = len(body) // SLICE
        self.assertEqual(sizes, [SLICE] * slices)
        self.assertEqual(turns, list(range(slices)))
        self.assert_compressed(client.response(), "zstd", body)

    def test_a_big_local_answer_is_compressed(self) -> None:
        """A filter after Compress answering with a 1 MiB body (as a cache
        hit does) gets it compressed, a slice per turn, and whole."""
        body = (PAGE * (1 + (1 << 20) // len(PAGE)))[: 1 << 20]

        class Stored(HTTPFilter):
            def request_head(self, exchange: Any, head: Any) -> LocalReply:
                return LocalReply(200, [(b"Content-Type", b"text/html")], body)

        harness = HTTPHarness([Route(pool="web", filters=[Compress(), Stored()])])
        self.addCleanup(harness.close)
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "br")])
        turns = 0
        while not client.responses()[0].complete:
            turns += 1
            one_turn(harness.clock)
        self.assertEqual(turns, len(body) // SLICE - 1)
        self.assert_compressed(client.response(), "br", body)
        self.assertEqual(harness.endpoints.attempts, [])

    def test_slicing_stops_when_the_client_goes(self) -> None:
        """A client that closes while its body is being coded stops the
        coding: no further turns are scheduled."""
        harness = self.harness()
        client = harness.request("GET", "/", headers=[("Accept-Encoding", "gzip")])
        harness.backend_responds(response(b"y" * (4 * SLICE)))
        client.close()
        harness.clock.advance(0)
        self.assertEqual(harness.clock.getDelayedCalls(), [])


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Default settings: the documented types, 512 bytes, gzip 6, br 5,
        zstd 3, zstd before br before gzip."""
        settings = CompressSettings()
        self.assertIn("text/*", settings.types)
        self.assertEqual(settings.min_length, 512)
        self.assertEqual([settings.level(c) for c in ("gzip", "br", "zstd")], [6, 5, 3])
        self.assertEqual(settings.prefer, ("zstd", "br", "gzip"))

    def test_levels_given_are_merged_with_the_defaults(self) -> None:
        """Levels given replace those codings' defaults only."""
        settings = CompressSettings(levels={"br": 11})
        self.assertEqual((settings.level("br"), settings.level("gzip")), (11, 6))

    def test_bad_values_are_refused(self) -> None:
        """A bad type, level, coding or length raises ValueError."""
        for bad in [
            {"types": ["text"]},
            {"types": ["*/*"]},
            {"levels": {"gzip": 0}},
            {"levels": {"zstd": 20}},
            {"levels": {"deflate": 1}},
            {"prefer": ()},
            {"prefer": ("gzip", "gzip")},
            {"prefer": ("lzma",)},
            {"min_length": -1},
        ]:
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, CompressSettings, **bad)

    def test_equal_settings_make_equal_filters(self) -> None:
        """Filters with equal settings are equal and hash alike (a reload
        that changed nothing keeps the route equal)."""
        self.assertEqual(
            Compress(CompressSettings(min_length=1)),
            Compress(CompressSettings(min_length=1)),
        )
        self.assertEqual(hash(Compress()), hash(Compress()))
        self.assertNotEqual(Compress(), Compress(CompressSettings(min_length=1)))


class ConfigTests(SynchronousTestCase):
    where = "rproxy.toml: listeners[0].routes[1].compress"

    def problems(self, table: Any) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            compress_settings(table, self.where)
        return caught.exception.errors

    def test_the_error_is_a_value_error_too(self) -> None:
        """The ConfigError raised may be caught as a ValueError."""
        with self.assertRaises(ValueError) as caught:
            compress_settings({"min_length": "big"}, self.where)
        self.assertIsInstance(caught.exception, ConfigError)

    def test_a_full_table(self) -> None:
        """Every key read into the settings."""
        settings = compress_settings(
            {
                "types": ["text/*", "application/json"],
                "min_length": 1024,
                "levels": {"gzip": 9, "zstd": 5},
                "prefer": ["br", "gzip"],
            },
            self.where,
        )
        self.assertEqual(
            settings,
            CompressSettings(
                ("text/*", "application/json"),
                1024,
                {"gzip": 9, "zstd": 5},
                ("br", "gzip"),
            ),
        )

    def test_an_empty_table_is_the_defaults(self) -> None:
        """compress = {} gives the default settings."""
        self.assertEqual(compress_settings({}, self.where), CompressSettings())

    def test_every_problem_is_named_by_its_key(self) -> None:
        """Each wrong value is reported under its key path, all at once."""
        self.assertEqual(
            self.problems(
                {
                    "type": ["text/*"],
                    "types": ["text/*", "html"],
                    "min_length": -5,
                    "levels": {"gzip": 10, "lzma": 1},
                    "prefer": ["zstd", "deflate", "zstd"],
                }
            ),
            [
                f"{self.where}.type: unknown key, did you mean 'types'?",
                f"{self.where}.types[1]: must be a media type ('application/json'),"
                " all of a type ('text/*') or a structured suffix"
                " ('application/*+json'), got 'html'",
                f"{self.where}.min_length: must be an integer >= 0, got -5",
                f"{self.where}.levels.lzma: unknown key; known keys are"
                " 'gzip', 'br', 'zstd'",
                f"{self.where}.levels.gzip: must be a gzip level 1-9, got 10",
                f"{self.where}.prefer[1]: must be one of 'gzip', 'br', 'zstd',"
                " got 'deflate'",
                f"{self.where}.prefer: names a coding more than once",
            ],
        )

    def test_empty_and_wrong_shapes(self) -> None:
        """Empty arrays, a non-table and non-arrays are reported."""
        self.assertEqual(
            self.problems({"types": [], "prefer": "gzip", "levels": 3}),
            [
                f"{self.where}.types: is empty: list the media types to compress,"
                ' as types = ["text/*"]',
                f"{self.where}.levels: must be a table, got 3",
                f"{self.where}.prefer: must be an array, got 'gzip'",
            ],
        )  # fmt: skip
        self.assertEqual(
            self.problems(True),
            [
                f"{self.where}: must be a table, as compress = "
                '{ types = ["text/*", "application/json"], min_length = 512 }'
            ],
        )
