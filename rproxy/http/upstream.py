"""Backend connections for HTTP: one request at a time on each, the response
parsed and streamed to whoever asked (L{rproxy.http.keepalive} keeps the idle
ones).

An L{UpstreamProtocol} reports to an L{IResponseSink} (the request's
exchange) as the response arrives; it is reusable only when its response ended
exactly where its framing said and the backend did not ask to close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._fastwrite import Data, no_delay, send_now
from rproxy._protocol import StreamProtocol
from rproxy.backends import Backend
from rproxy.http.chunked import (
    ChunkedDecoder,
    End,
    Trailers,
    encode_chunk,
    encode_last_chunk,
)
from rproxy.http.framing import (
    HTTPError,
    RequestHead,
    ResponseHead,
    find_head_end,
    parse_response_head,
)
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.messages import request_head

log = Logger(namespace="rproxy.http.upstream")

#: the largest response head a backend may send before it is a bad gateway.
MAX_RESPONSE_HEAD = 65536
#: interim (1xx) responses allowed before the final one.
MAX_INTERIM = 8


def end_stream(consumer: Any, resume: bool = True) -> None:
    """
    End the body that was streaming into C{consumer}, if any, and let its
    producer read again: backpressure may have paused it, and
    unregistering does not resume it (a pooled backend connection left
    paused would never read its next response).
    """
    producer = getattr(consumer, "producer", None)
    if consumer is None or producer is None:
        return
    consumer.unregisterProducer()
    if resume:
        producer.resumeProducing()


class IResponseSink(TypingProtocol):
    """
    What an upstream connection reports a response to.
    """

    def response_head(self, head: ResponseHead) -> None:
        """A final (non-1xx) response head arrived."""

    def interim_response(self, head: ResponseHead) -> None:
        """A 1xx response other than 101 arrived."""

    def response_body(self, data: Data) -> None:
        """
        Body bytes (decoded from chunked if the backend chunked), possibly a
        view of a larger received buffer: send or copy it before returning.
        """

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A chunked response's trailer fields."""

    def response_end(self) -> None:
        """The response is complete."""

    def flush_output(self) -> None:
        """A read from the backend has been handled: send what it produced."""

    def upstream_failed(self, reason: str, status: int) -> None:
        """
        The connection broke or spoke garbage before the response ended;
        C{status} is what the client should get if nothing was sent yet.
        """

    def switched(self, head: ResponseHead, rest: bytes) -> None:
        """
        The backend accepted an upgrade (101): from now on the connection is
        a raw tunnel; C{rest} is what it sent after the 101 head.
        """

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the backend through the tunnel."""

    def tunnel_closed(self) -> None:
        """The backend side of the tunnel closed."""


class UpstreamProtocol(StreamProtocol):
    """
    One connection to a backend, carrying one request at a time.

    @ivar reusable: the last response ended cleanly on a keep-alive
        connection, so another request may be sent.
    @ivar received_any: some bytes of the current response arrived.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self.sink: IResponseSink | None = None
        #: it began with a PROXY header naming one client: never to be
        #: shared with another, whatever the pool's settings are now.
        self.announced = False
        self.reusable = False
        self.received_any = False
        self.connected_ = False
        #: a 101 turned this connection into a tunnel.
        self.tunnel = False
        self._upgrade = False
        self._method = b"GET"
        self._buffer = bytearray()
        self._head: ResponseHead | None = None
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._chunked = False
        self._interim = 0
        self.on_idle_lost: Callable[[UpstreamProtocol], None] | None = None

    def connectionMade(self) -> None:
        self.connected_ = True
        no_delay(self.transport)

    def start(self, sink: IResponseSink, method: bytes, upgrade: bool = False) -> None:
        """
        Expect the response to a request with C{method}, reporting to C{sink};
        C{upgrade} if the request asked to switch protocols.
        """
        self.sink = sink
        self._method = method
        self._upgrade = upgrade
        self.reusable = False
        self.received_any = False
        self._buffer.clear()
        self._head = None
        self._decoder = None
        self._interim = 0

    def write(self, data: bytes) -> None:
        """
        Send raw bytes (a tunnel's).
        """
        send_now(self.transport, data)

    def send_request(
        self,
        head: RequestHead,
        target: bytes,
        backend_address: bytes,
        client_ip: str,
        scheme: bytes,
        policy: ForwardingPolicy,
    ) -> None:
        """
        Send the HTTP/1.1 head for C{head} (see
        L{rproxy.http.messages.request_head}); its body follows with
        L{send_body} and L{end_body}, chunked if the client chunked it.
        """
        self._chunked = head.body == "chunked"
        send_now(
            self.transport,
            request_head(
                head,
                target,
                backend_address=backend_address,
                client_ip=client_ip,
                scheme=scheme,
                policy=policy,
            ),
        )

    def send_body(self, data: bytes) -> None:
        """
        Send request body bytes, framed as the head announced.
        """
        send_now(self.transport, encode_chunk(data) if self._chunked else data)

    def end_body(self) -> None:
        """
        The request body is all sent: end a chunked one.
        """
        if self._chunked:
            send_now(self.transport, encode_last_chunk())

    def set_producer(self, producer: Any) -> None:
        """
        Pause C{producer} (the client) while this connection cannot take
        more of the request body.
        """
        self.transport.registerProducer(producer, True)

    def stop_producer(self, resume: bool = True) -> None:
        """
        No more request body: unregister the client as producer.
        """
        end_stream(self.transport, resume=resume)

    def dataReceived(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel and sink is not None:
            sink.tunnel_data(data)
            return
        if sink is None:
            # Nothing was asked: a backend talking out of turn is not reused.
            # It leaves the keep-alive pool now, not when its connectionLost
            # arrives (a reactor turn later), so it is never handed out.
            self.connected_ = False
            self.reusable = False
            lost, self.on_idle_lost = self.on_idle_lost, None
            if lost is not None:
                lost(self)
            self.transport.loseConnection()
            return
        self.received_any = True
        try:
            if self._head is not None:
                self._read_body(sink, data)
            elif self._buffer:
                # The rest of a head that came in pieces.
                self._buffer += data
                data = bytes(self._buffer)
                self._buffer.clear()
                self._read_heads(sink, data)
            else:
                self._read_heads(sink, data)
        except HTTPError as error:
            self._fail(f"bad response: {error.reason}", 502)
            return
        if self.sink is sink:
            sink.flush_output()

    def _read_heads(self, sink: IResponseSink, data: bytes) -> None:
        """
        Read response heads from C{data}; what follows the final head is
        passed on as a view of C{data}, not copied.
        """
        start = 0
        while self._head is None and self.sink is sink:
            end = find_head_end(data, start)
            if end < 0:
                if len(data) - start > MAX_RESPONSE_HEAD:
                    raise HTTPError(502, "response head too large")
                if data.count(b"\n", start) != data.count(b"\r\n", start):
                    # A head with bare LF line ends would never be seen to
                    # end: refuse it now rather than wait for a timeout.
                    raise HTTPError(502, "bare LF in response head")
                self._buffer += data[start:]
                return
            head = parse_response_head(data[start:end], self._method)
            start = end
            if 100 <= head.status < 200:
                if head.status == 101:
                    if not self._upgrade:
                        raise HTTPError(502, "unexpected 101")
                    self.tunnel = True
                    sink.switched(head, data[start:])
                    return
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    raise HTTPError(502, "too many interim responses")
                sink.interim_response(head)
                continue
            self._head = head
            if head.body == "length":
                self._remaining = head.content_length or 0
            elif head.body == "chunked":
                self._decoder = ChunkedDecoder(bad_status=502)
            sink.response_head(head)
            if self.sink is not sink:
                return  # the exchange let go of this connection (a filter failed)
            rest = memoryview(data)[start:] if start < len(data) else b""
            if head.body == "none":
                self._finish(rest)
            elif rest:
                self._read_body(sink, rest)
            # Only interim heads loop: once this response has ended, the sink
            # may already have started the next exchange on this connection
            # (a pipelined request), whose response has not begun in C{data}.
            return

    def _read_body(self, sink: IResponseSink, data: Data) -> None:
        head = self._head
        assert head is not None
        if head.body == "length":
            if len(data) >= self._remaining:
                body, rest = data[: self._remaining], data[self._remaining :]
                self._remaining = 0
                if body:
                    sink.response_body(body)
                self._finish(rest)
            else:
                self._remaining -= len(data)
                sink.response_body(data)
        elif head.body == "chunked":
            assert self._decoder is not None
            for event in self._decoder.feed(bytes(data)):
                if isinstance(event, bytes):
                    sink.response_body(event)
                elif isinstance(event, Trailers):
                    sink.response_trailers(event.headers)
                elif isinstance(event, End):
                    self._finish(event.rest)
                    return
        elif head.body == "close":
            sink.response_body(data)
        else:
            self._finish(data)

    def _finish(self, rest: Data) -> None:
        head = self._head
        sink = self.sink
        if sink is None:
            return  # the exchange let go of this connection meanwhile
        assert head is not None
        self.sink = None
        # Bytes after the response, or a backend that wants to close, end
        # the connection's usefulness.
        self.reusable = head.keep_alive and not rest and head.body != "close"
        sink.response_end()
        if rest:
            self.transport.loseConnection()

    def _fail(self, reason: str, status: int) -> None:
        sink, self.sink = self.sink, None
        self.reusable = False
        if self.transport is not None:
            self.transport.abortConnection()
        if sink is not None:
            sink.upstream_failed(reason, status)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected_ = False
        self.reusable = False
        sink, self.sink = self.sink, None
        if self.tunnel:
            if sink is not None:
                sink.tunnel_closed()
            return
        if sink is None:
            if self.on_idle_lost is not None:
                self.on_idle_lost(self)
            return
        if (
            self._head is not None
            and self._head.body == "close"
            and reason.check(ConnectionDone)
        ):
            sink.response_end()
            return
        sink.upstream_failed("backend closed the connection", 502)

    def release_timeout(self) -> None:
        """
        The response timed out: drop the connection without a report.
        """
        self.sink = None
        self.reusable = False
        if self.transport is not None:
            self.transport.abortConnection()


class UpstreamFactory(Factory):
    """
    Builds the protocol for one new backend connection.
    """

    noisy = False

    def __init__(self, backend: Backend, *, announced: bool = False):
        self.backend = backend
        self.announced = announced

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol:  # type: ignore[override]
        upstream = UpstreamProtocol(self.backend)
        upstream.announced = self.announced
        return upstream


__all__ = [
    "IResponseSink",
    "UpstreamFactory",
    "UpstreamProtocol",
    "end_stream",
]
