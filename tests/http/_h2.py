"""An in-memory HTTP/2 client (the C{h2} library, client side) for the
HTTP/2 codec's unit tests, and raw frames for what a well-behaved client
library would not send."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.h1 import H1Connection
from rproxy.http.h2.settings import H2Settings
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.policy import PoolPolicy
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Headers = list[tuple[bytes, bytes]]


def get(path: bytes = b"/", authority: bytes = b"a", **extra: bytes) -> Headers:
    """The header list of a GET for C{path}."""
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", path),
    ]
    headers.extend((name.replace("_", "-").encode(), v) for name, v in extra.items())
    return headers


def post(path: bytes = b"/up", length: int | None = None) -> Headers:
    """The header list of a POST, with a content-length if C{length}."""
    headers = get(path)
    headers[0] = (b":method", b"POST")
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return headers


def raw_headers(
    stream_id: int,
    headers: Headers,
    *,
    end_stream: bool = True,
    split: int = 0,
    continuations: int = 0,
    encoder: Encoder | None = None,
) -> bytes:
    """
    A HEADERS frame for C{headers}, its block cut into C{split}-byte
    pieces (the rest in CONTINUATION frames), then C{continuations} empty
    CONTINUATION frames more when C{split} is 0.
    """
    block = (encoder or Encoder()).encode(headers)
    pieces = (
        [block[i : i + split] for i in range(0, len(block), split)]
        if split
        else [block]
    )
    frames: list[Frame] = []
    first = HeadersFrame(stream_id, data=pieces[0])
    if end_stream:
        first.flags.add("END_STREAM")
    frames.append(first)
    for piece in pieces[1:]:
        frames.append(ContinuationFrame(stream_id, data=piece))
    for _ in range(continuations):
        frames.append(ContinuationFrame(stream_id, data=b""))
    frames[-1].flags.add("END_HEADERS")
    return b"".join(frame.serialize() for frame in frames)


def frames(data: bytes) -> list[Frame]:
    """The frames in C{data} (whole frames, after any preface)."""
    found = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        found.append(frame)
        data = data[9 + length :]
    return found


class Client:
    """
    The C{h2} library as a client of one rproxy connection.

    @ivar events: every event received so far.
    """

    def __init__(
        self,
        proto: H1Connection,
        transport: HalfCloseTransport,
        settings: dict[int, int] | None = None,
    ) -> None:
        self.proto = proto
        self.transport = transport
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values=settings
            )
        self.conn.initiate_connection()
        self.events: list[Any] = []
        self.send()

    def send(self) -> None:
        """Send what the client library has to send."""
        data = self.conn.data_to_send()
        if data:
            self.proto.dataReceived(data)

    def send_raw(self, data: bytes) -> None:
        """Send bytes the client library did not make."""
        self.proto.dataReceived(data)

    def receive(self, acknowledge: bool = True) -> list[Any]:
        """
        Read what rproxy sent; return the new events (acknowledging DATA
        if C{acknowledge}).
        """
        data = self.transport.value()
        self.transport.clear()
        events = self.conn.receive_data(data) if data else []
        self.events.extend(events)
        if acknowledge:
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        self.send()
        return events

    def request(
        self, headers: Headers, body: bytes | None = None, end: bool = True
    ) -> int:
        """Open a stream for C{headers} (and C{body}); its id."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.send()
        return stream_id

    def of(self, stream_id: int, kind: type) -> list[Any]:
        """The events of C{kind} received on C{stream_id}."""
        return [
            e
            for e in self.events
            if isinstance(e, kind) and getattr(e, "stream_id", None) == stream_id
        ]

    def response(self, stream_id: int) -> tuple[dict[bytes, bytes], bytes]:
        """The final response head (as a dict) and the body so far."""
        heads = self.of(stream_id, h2.events.ResponseReceived)
        head = dict(heads[0].headers) if heads else {}
        body = b"".join(e.data for e in self.of(stream_id, h2.events.DataReceived))
        return head, body

    def ended(self, stream_id: int) -> bool:
        """Whether rproxy ended C{stream_id}."""
        return bool(self.of(stream_id, h2.events.StreamEnded))

    def reset_code(self, stream_id: int) -> int | None:
        """The error code rproxy reset C{stream_id} with, if it did."""
        resets = self.of(stream_id, h2.events.StreamReset)
        return int(resets[0].error_code) if resets else None

    def goaway(self) -> Any:
        """The GOAWAY rproxy sent, if any (a ConnectionTerminated event)."""
        found = [
            e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)
        ]
        return found[0] if found else None


class H2Case(SynchronousTestCase):
    """One pool of one backend behind fake endpoints, HTTP/2 by prior
    knowledge, on a Clock."""

    h2_settings = H2Settings(prior_knowledge=True)

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 8001)
        self.pool = Pool(
            "web",
            [self.backend],
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=5.0, response_timeout=30.0),
        )
        self.endpoints = FakeEndpoints()
        self.factory = HTTPProxyFactory(
            Registry([self.pool]),
            self.clock,
            HTTPSettings(
                listener="front",
                router=Router([Route(pool="web", host="a")]),
                http2=self.h2_settings,
            ),
            endpoint_for=self.endpoints,
        )

    def tearDown(self) -> None:
        self.factory.keep_alive.close_all()
        for call in self.clock.getDelayedCalls():
            call.cancel()

    def connect(self, settings: dict[int, int] | None = None) -> Client:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = connect(proto, HalfCloseTransport())
        client = Client(proto, transport, settings)
        client.receive()
        return client

    def backend_responds(self, data: bytes, index: int = -1) -> HalfCloseTransport:
        attempt = self.endpoints.attempts[index]
        if attempt.transport is None:
            attempt.succeed()
        attempt.respond(data)
        assert attempt.transport is not None
        return attempt.transport


def response(
    body: bytes = b"hello",
    headers: Iterable[bytes] = (),
    status: bytes = b"200 OK",
) -> bytes:
    """An HTTP/1.1 response with C{body} and a Content-Length."""
    lines = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(pieces: Sequence[bytes], trailers: Iterable[bytes] = ()) -> bytes:
    """An HTTP/1.1 chunked response of C{pieces} and C{trailers}."""
    out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for piece in pieces:
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    out.append(b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n")
    return b"".join(out)
