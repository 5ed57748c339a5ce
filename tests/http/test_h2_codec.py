"""The HTTP/2 codec driven in memory by the h2 library as the client:
request and response mapping, trailers, bodies, resets both ways, GOAWAY,
flow control with a slow backend and a slow client, timeouts."""

from __future__ import annotations

import h2.errors
import h2.events
import h2.settings
from twisted.internet.address import IPv4Address

from rproxy.http.h2.settings import H2Settings
from rproxy.testing import HalfCloseTransport, captured_access, connect

from ._h2 import (
    PREFACE,
    Client,
    H2Case,
    chunked,
    frames,
    get,
    post,
    raw_headers,
    response,
)

_Codes = h2.settings.SettingCodes


class MappingTests(H2Case):
    def test_request_reaches_backend_as_http11_with_authority_as_host(self) -> None:
        """:authority becomes the Host of the HTTP/1.1 request sent upstream."""
        client = self.connect()
        client.request(get(b"/x?q=1", user_agent=b"t"))
        received = self.endpoints.last.succeed().value()
        self.assertTrue(received.startswith(b"GET /x?q=1 HTTP/1.1\r\nHost: a\r\n"))
        self.assertIn(b"user-agent: t\r\n", received)
        self.assertNotIn(b":authority", received)

    def test_response_maps_to_headers_and_data_without_hop_by_hop(self) -> None:
        """Status, fields and body reach the client; connection fields do not."""
        client = self.connect()
        stream = client.request(get())
        self.backend_responds(
            response(
                b"hello",
                [
                    b"Connection: keep-alive, X-Hop",
                    b"Keep-Alive: timeout=5",
                    b"X-Hop: 1",
                    b"Server: nginx",
                ],
            )
        )
        client.receive()
        head, body = client.response(stream)
        self.assertEqual(head[b":status"], b"200")
        self.assertEqual(head[b"server"], b"nginx")
        self.assertEqual(head[b"content-length"], b"5")
        for name in (b"connection", b"keep-alive", b"x-hop", b"transfer-encoding"):
            self.assertNotIn(name, head)
        self.assertEqual(body, b"hello")
        self.assertTrue(client.ended(stream))

    def test_chunked_response_loses_transfer_encoding_and_keeps_trailers(self) -> None:
        """A chunked body arrives whole, its trailers as a trailing HEADERS."""
        client = self.connect()
        stream = client.request(get(te=b"trailers"))
        self.backend_responds(chunked([b"ab", b"cd"], [b"Grpc-Status: 0"]))
        client.receive()
        head, body = client.response(stream)
        self.assertNotIn(b"transfer-encoding", head)
        self.assertEqual(body, b"abcd")
        trailers = client.of(stream, h2.events.TrailersReceived)
        self.assertEqual(trailers[0].headers, [(b"grpc-status", b"0")])
        self.assertTrue(client.ended(stream))

    def test_bodyless_response_is_one_headers_frame(self) -> None:
        """A 204 ends the stream with its HEADERS frame."""
        client = self.connect()
        stream = client.request(get())
        self.backend_responds(b"HTTP/1.1 204 No Content\r\n\r\n")
        client.receive()
        ends = [e for e in client.events if isinstance(e, h2.events.StreamEnded)]
        self.assertEqual(len(ends), 1)
        self.assertEqual(client.of(stream, h2.events.DataReceived), [])

    def test_body_with_length_goes_upstream_with_content_length(self) -> None:
        """A request body with content-length is sent with that length."""
        client = self.connect()
        client.request(post(length=5), b"hello")
        received = self.endpoints.last.succeed().value()
        self.assertIn(b"Content-Length: 5\r\n", received)
        self.assertTrue(received.endswith(b"\r\n\r\nhello"))

    def test_body_without_length_goes_upstream_chunked(self) -> None:
        """A request body of unknown length is chunked for the backend."""
        client = self.connect()
        stream = client.request(post(), b"abc", end=False)
        attempt = self.endpoints.last
        attempt.succeed()
        client.conn.send_data(stream, b"de", end_stream=True)
        client.send()
        received = attempt.received
        self.assertIn(b"Transfer-Encoding: chunked\r\n", received)
        self.assertTrue(received.endswith(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))

    def test_cookies_join_into_one_field(self) -> None:
        """Several cookie fields reach the backend as one (RFC 9113 8.2.3)."""
        client = self.connect()
        client.request([*get(), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
        self.assertIn(b"cookie: a=1; b=2\r\n", self.endpoints.last.succeed().value())

    def test_access_event_says_http2(self) -> None:
        """The access event of a stream carries its version, HTTP/2.0."""
        with captured_access() as events:
            client = self.connect()
            client.request(get())
            self.backend_responds(response())
            client.receive()
        self.assertEqual(events[0]["version"], "HTTP/2.0")
        self.assertEqual(events[0]["status"], 200)

    def test_no_route_is_404_on_the_stream(self) -> None:
        """An exchange's own answers are sent on the stream."""
        client = self.connect()
        stream = client.request(get(authority=b"elsewhere"))
        client.receive()
        head, body = client.response(stream)
        self.assertEqual(head[b":status"], b"404")
        self.assertTrue(body.startswith(b"404"))
        self.assertTrue(client.ended(stream))

    def test_many_streams_share_the_backend_keep_alive(self) -> None:
        """Streams one after another reuse the one backend connection."""
        client = self.connect()
        for index in range(3):
            stream = client.request(get(b"/%d" % index))
            if index == 0:
                self.endpoints.last.succeed()
            self.endpoints.last.respond(response(b"r%d" % index))
            client.receive()
            self.assertEqual(client.response(stream)[1], b"r%d" % index)
        self.assertEqual(len(self.endpoints.attempts), 1)


class ResetTests(H2Case):
    def test_client_reset_cancels_exchange_and_closes_backend(self) -> None:
        """RST_STREAM from the client gives up its exchange (499) and closes
        its backend connection."""
        with captured_access() as events:
            client = self.connect()
            stream = client.request(get())
            backend = self.backend_responds(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
            )
            client.receive()
            client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            client.send()
        self.assertTrue(backend.disconnecting)
        self.assertEqual(events[0]["status"], 499)
        self.assertEqual(self.factory.h2_stats.client_resets, 1)
        self.assertEqual(self.factory.h2_stats.open_streams, 0)

    def test_backend_failure_resets_only_its_stream(self) -> None:
        """A backend that breaks mid-response resets that stream; another
        stream on the connection completes."""
        client = self.connect()
        first = client.request(get(b"/1"))
        second = client.request(get(b"/2"))
        broken = self.backend_responds(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel", index=0
        )
        client.receive()
        broken.loseConnection()  # the backend goes away mid-body
        self.backend_responds(response(b"fine"), index=1)
        client.receive()
        self.assertEqual(client.reset_code(first), h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(client.response(second)[1], b"fine")
        self.assertTrue(client.ended(second))
        self.assertIsNone(client.goaway())

    def test_backend_failure_before_response_is_502(self) -> None:
        """A backend that fails to connect gives the stream a 502."""
        client = self.connect()
        stream = client.request(get())
        self.endpoints.last.fail(ConnectionRefusedError())
        client.receive()
        self.assertEqual(client.response(stream)[0][b":status"], b"502")

    def test_local_answer_while_uploading_resets_no_error(self) -> None:
        """Answered before the body has come, the stream is ended and the
        client told to stop sending (RST_STREAM NO_ERROR)."""
        client = self.connect()
        stream = client.request(
            [*post(length=100)[:2], (b":authority", b"nowhere"), (b":path", b"/")],
            b"x" * 10,
            end=False,
        )
        client.receive()
        self.assertEqual(client.response(stream)[0][b":status"], b"404")
        self.assertEqual(client.reset_code(stream), h2.errors.ErrorCodes.NO_ERROR)

    def test_shutdown_sends_goaway_and_lets_streams_finish(self) -> None:
        """Drain: GOAWAY at once, the stream under way completes, a stream
        opened after it is refused, then the connection closes."""
        # Read as raw frames: the h2 client takes nothing after a GOAWAY.
        client = self.connect()
        stream = client.request(get())
        self.endpoints.last.succeed()
        client.proto.shut_down(False)
        (goaway,) = frames(client.transport.value())
        client.transport.clear()
        self.assertEqual((goaway.type, goaway.error_code), (0x7, 0))
        self.assertEqual(goaway.last_stream_id, stream)
        self.assertFalse(client.transport.disconnecting)
        client.send_raw(raw_headers(3, get(b"/late")))
        (reset,) = frames(client.transport.value())
        client.transport.clear()
        self.assertEqual((reset.type, reset.stream_id), (0x3, 3))
        self.assertEqual(reset.error_code, h2.errors.ErrorCodes.REFUSED_STREAM)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.endpoints.attempts[0].respond(response(b"done"))
        sent = frames(client.transport.value())
        self.assertEqual([f.type for f in sent], [0x1, 0x0])
        self.assertEqual(sent[1].data, b"done")
        self.assertIn("END_STREAM", sent[1].flags)
        self.assertTrue(client.transport.disconnecting)

    def test_drain_waits_for_streams_within_the_grace(self) -> None:
        """The listener's drain: a connection whose stream ends closes and
        the drain fires; one still busy at the grace's end is dropped."""
        done = self.connect()
        done.request(get())
        self.endpoints.last.succeed()
        busy = self.connect()
        busy.request(get(b"/slow"))
        self.endpoints.last.succeed()
        drained: list[object] = []
        self.factory.drain(10.0).addCallback(drained.append)
        self.endpoints.attempts[0].respond(response(b"done"))
        self.assertTrue(done.transport.disconnecting)
        self.assertFalse(busy.transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(busy.transport.aborted)
        self.assertEqual(drained, [None])

    def test_idle_connection_is_closed_with_goaway(self) -> None:
        """A connection without streams for the keep-alive timeout is closed."""
        client = self.connect()
        self.clock.advance(61)
        client.receive()
        self.assertIsNotNone(client.goaway())
        self.assertTrue(client.transport.disconnecting)

    def test_connection_lost_gives_up_every_stream(self) -> None:
        """The client going away gives up its streams (499)."""
        with captured_access() as events:
            client = self.connect()
            client.request(get(b"/1"))
            client.request(get(b"/2"))
            client.transport.loseConnection()
        self.assertEqual(sorted(e["status"] for e in events), [499, 499])
        self.assertEqual(self.factory.h2_stats.open_connections, 0)


class FlowControlTests(H2Case):
    h2_settings = H2Settings(prior_knowledge=True, stall_timeout=20.0)

    def test_slow_client_window_pauses_the_backend(self) -> None:
        """A client window smaller than the response pauses the backend
        connection until WINDOW_UPDATE; the body arrives whole."""
        client = self.connect({_Codes.INITIAL_WINDOW_SIZE: 1000})
        stream = client.request(get())
        body = bytes(range(256)) * 40
        attempt = self.endpoints.last
        backend = attempt.succeed()
        attempt.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10240\r\n\r\n")
        attempt.respond(body[:3000])
        client.receive(acknowledge=False)
        self.assertEqual(len(client.response(stream)[1]), 1000)
        self.assertEqual(backend.producerState, "paused")
        got = 1000
        while not client.ended(stream):
            client.conn.acknowledge_received_data(got, stream)
            client.send()
            if backend.producerState != "paused" and got < len(body):
                attempt.respond(body[3000:])
            client.receive(acknowledge=False)
            now = len(client.response(stream)[1])
            self.assertLessEqual(now - got, 1000)
            got = now
        self.assertEqual(client.response(stream)[1], body)

    def test_slow_backend_shuts_the_client_window(self) -> None:
        """While the backend takes no more of the body, DATA is not
        acknowledged: the client's window shuts, then opens once it does."""
        client = self.connect()
        stream = client.request(post(length=200_000), end=False)
        attempt = self.endpoints.last
        backend = attempt.succeed()
        backend.producer.pauseProducing()  # the backend's buffer is full
        sent = 0
        while client.conn.local_flow_control_window(stream) > 0:
            size = min(16384, client.conn.local_flow_control_window(stream))
            client.conn.send_data(stream, b"x" * size)
            client.send()
            sent += size
            client.receive()
        self.assertEqual(sent, 65535)
        forwarded = len(attempt.received)
        backend.producer.resumeProducing()
        client.receive()
        self.assertGreater(client.conn.local_flow_control_window(stream), 0)
        self.assertEqual(len(attempt.received) - forwarded, 65535)

    def test_stalled_zero_window_stream_times_out(self) -> None:
        """A client that never opens its window has the stream reset after
        the stall timeout."""
        client = self.connect({_Codes.INITIAL_WINDOW_SIZE: 0})
        stream = client.request(get())
        backend = self.backend_responds(response(b"x" * 100))
        client.receive(acknowledge=False)
        self.clock.advance(21)
        client.receive()
        self.assertEqual(client.reset_code(stream), h2.errors.ErrorCodes.CANCEL)
        self.assertEqual(self.factory.h2_stats.stalled, 1)
        self.assertNotEqual(backend.producerState, "paused")  # it sits idle, usable

    def test_full_client_buffer_stops_data_and_reading(self) -> None:
        """When the client's transport is full, no DATA is sent, the
        client is not read and the backend is paused; all resume together."""
        client = self.connect()
        stream = client.request(get())
        conn = client.proto._h2
        conn.pauseProducing()
        self.assertTrue(client.transport.paused)
        backend = self.backend_responds(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        self.endpoints.last.respond(b"abc")
        client.receive()
        self.assertEqual(client.response(stream)[1], b"")
        self.assertEqual(backend.producerState, "paused")
        conn.resumeProducing()
        self.assertEqual(backend.producerState, "producing")
        self.endpoints.last.respond(b"def")
        client.receive()
        self.assertEqual(client.response(stream)[1], b"abcdef")

    def test_request_body_timeout_is_408(self) -> None:
        """A client that stops sending its body gets 408 on the stream."""
        client = self.connect()
        stream = client.request(post(length=10), b"abc", end=False)
        self.endpoints.last.succeed()
        self.clock.advance(31)
        client.receive()
        self.assertEqual(client.response(stream)[0][b":status"], b"408")


class NegotiationTests(H2Case):
    def test_alpn_h2_hands_a_tls_connection_over(self) -> None:
        """On a TLS listener, ALPN h2 makes the connection HTTP/2."""
        self.factory.settings = self.factory.settings.__class__(
            listener="front",
            router=self.factory.settings.router,
            http2=H2Settings(),
            scheme=b"https",
        )
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = HalfCloseTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        connect(proto, transport)
        client = Client(proto, transport)
        client.receive()
        stream = client.request(get())
        self.backend_responds(response(b"tls"))
        client.receive()
        self.assertEqual(client.response(stream)[1], b"tls")

    def test_http11_on_an_h2c_listener_still_works(self) -> None:
        """A listener with h2c still reads HTTP/1.1, sent in small pieces."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = connect(proto, HalfCloseTransport())
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\n\r\n":
            proto.dataReceived(bytes([byte]))
        self.backend_responds(response(b"h1"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_preface_in_pieces_is_recognised(self) -> None:
        """The preface split over reads still hands the connection over."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = connect(proto, HalfCloseTransport())
        proto.dataReceived(PREFACE[:5])
        proto.dataReceived(PREFACE[5:])
        self.assertIsNotNone(proto._h2)
        self.assertEqual(self.factory.h2_stats.connections, 1)
        transport.loseConnection()

    def test_preface_without_h2c_is_http11_and_refused(self) -> None:
        """Without h2c the preface is read as HTTP/1.1 (version 2.0: 505)."""
        self.factory.settings = self.factory.settings.__class__(
            listener="front", router=self.factory.settings.router
        )
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = connect(proto, HalfCloseTransport())
        proto.dataReceived(PREFACE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "))
