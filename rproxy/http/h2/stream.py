"""One HTTP/2 stream as the codec of one L{Exchange}: L{H2Stream}.

The stream hands its request body to the exchange and acknowledges it to
the client (opening its window) only as the exchange takes it: while the
exchange has paused reading (its backend cannot take more), DATA waits
here, unacknowledged, so the client can send no more than its window.  The
response goes out as the stream's and the connection's send windows allow;
what does not fit waits here, and the backend connection is paused until a
WINDOW_UPDATE makes room, so nothing grows without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from twisted.internet.interfaces import IPushProducer
from zope.interface import classImplements

from rproxy._fastwrite import Data
from rproxy.http._codec import Codec
from rproxy.http._phase import Phase
from rproxy.http.errors import error_body
from rproxy.http.h2.mapping import response_headers, trailer_fields

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange
    from rproxy.http.framing import ResponseHead
    from rproxy.http.h2.connection import H2Connection
    from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool
    from rproxy.http.listener import HTTPProxyFactory
    from rproxy.http.upstream import UpstreamProtocol

__all__ = ["H2Stream"]

_DONE = Phase.DONE


class H2Stream(Codec):
    """
    The codec of the exchange of one stream (see L{rproxy.http._codec.Codec}).

    As an L{IPushProducer} it is what the backend connection pauses while
    it cannot take more of the request body.

    @ivar stream_id: the stream's id.
    @ivar exchange: the stream's exchange, until its response has ended.
    """

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.factory: HTTPProxyFactory = conn.factory
        self.clock: Any = conn.clock
        self.client: str = conn.client
        self.transport: Any = conn.transport
        self.exchange: Exchange | None = None
        #: the stream is over for rproxy (ended, reset or refused).
        self.closed = False
        #: the client sent END_STREAM.
        self.request_ended = False
        #: the request body is being read (for the body read timeout).
        self.reading_body = False
        self.last_read = conn.clock.seconds()
        self.paused = False
        #: DATA held while paused: (bytes, flow-controlled length).
        self._inbox: deque[tuple[bytes, int]] = deque()
        self._end_pending = False
        self._expected: int | None = None
        self._received = 0
        # The response.
        self._head: list[tuple[bytes, bytes]] | None = None
        self.head_sent = False
        self._out: deque[bytes] = deque()
        self.out_size = 0
        #: the end (trailers, maybe none) once the exchange has sent it.
        self._end: list[tuple[bytes, bytes]] | None = None
        #: the backend connection paused for want of window.
        self._paused_upstream: Any = None
        #: since when the response waits for window (or C{None}).
        self.blocked_since: float | None = None
        self._done = False

    # The request -------------------------------------------------------------

    def start(self, exchange: Exchange) -> None:
        """
        Begin C{exchange}, the stream's request.
        """
        self.exchange = exchange
        request = exchange.request
        assert request is not None
        if request.body != "none":
            self.reading_body = True
            self._expected = request.content_length
        elif not self.request_ended:
            self._expected = 0
        exchange.begin()

    def data_received(self, data: bytes, flow_length: int) -> None:
        """
        DATA for the request body (C{flow_length} counts its padding).
        """
        self._received += len(data)
        self.last_read = self.clock.seconds()
        expected = self._expected
        if expected is not None and self._received > expected:
            self.conn.reset(self, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 8.1.1
            return
        limit = self.conn.settings.limits.max_body
        exchange = self.exchange
        if limit is not None and self._received > limit and exchange is not None:
            self.conn.acknowledge(self, flow_length)
            exchange.fail(413)
            return
        if self.paused or self._inbox:
            self._inbox.append((data, flow_length))
            return
        self._deliver(data, flow_length)

    def _deliver(self, data: bytes, flow_length: int) -> None:
        exchange = self.exchange
        if data and exchange is not None and exchange.phase is not _DONE:
            exchange.request_body(data)
        # Taken by the exchange (or dropped, its exchange over): the client
        # may send as much again.
        self.conn.acknowledge(self, flow_length)

    def ended(self) -> None:
        """
        The client ended the stream (END_STREAM, maybe after trailers,
        which are not forwarded).
        """
        self.request_ended = True
        expected = self._expected
        if expected is not None and self._received != expected:
            self.conn.reset(self, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 8.1.1
            return
        if self.paused or self._inbox:
            self._end_pending = True
            return
        self._request_end()

    def _request_end(self) -> None:
        self.reading_body = False
        exchange = self.exchange
        request = exchange.request if exchange is not None else None
        if (
            exchange is not None
            and request is not None
            and request.body != "none"
            and exchange.phase is not _DONE
        ):
            exchange.request_end()

    # Flow control (the codec's) --------------------------------------------

    def pause_reading(self) -> None:
        """
        Take no more of the request body for now: it waits here, and the
        client's window stays as it is.
        """
        self.paused = True

    def resume_reading(self) -> None:
        """
        Take the request body again: what waited is handed on.
        """
        if not self.paused:
            return
        self.paused = False
        self.last_read = self.clock.seconds()
        inbox = self._inbox
        while inbox and not self.paused and not self.closed:
            self._deliver(*inbox.popleft())
        if not inbox and not self.paused and self._end_pending:
            self._end_pending = False
            self._request_end()
        self.conn.flush()

    def pauseProducing(self) -> None:
        self.pause_reading()

    def resumeProducing(self) -> None:
        self.resume_reading()

    def stopProducing(self) -> None:
        self.abort()

    def producer(self) -> IPushProducer:
        """
        What a backend connection pauses while it cannot take more.
        """
        return self

    def body_forwarded(self) -> None:
        """
        The request body has all reached the backend.
        """

    def keep_alive_for(self, private: bool) -> KeepAlivePool | ClientKeepAlive:
        """
        The connection's (see L{H2Connection.keep_alive_for}).
        """
        return self.conn.keep_alive_for(private)

    def wake_by(self, when: float) -> None:
        """
        Make sure the connection's timer looks at the deadlines by C{when}.
        """
        self.conn.wake_by(when)

    # The response ----------------------------------------------------------

    def send_interim(self, exchange: Exchange, head: ResponseHead) -> None:
        """
        A 1xx response (not 101, which HTTP/2 has not).
        """
        if self.closed or self.head_sent or head.status == 101:
            return
        self.conn.send_headers(self, response_headers(head), end=False)

    def send_head(self, exchange: Exchange, head: ResponseHead) -> None:
        """
        The final response head: sent with the first body bytes or the end
        (so that a response without a body is one HEADERS frame).
        """
        self._head = response_headers(head)

    def send_body(self, data: Data) -> None:
        if self.closed or not data:
            return
        self._out.append(bytes(data))
        self.out_size += len(data)

    def flush(self) -> None:
        """
        Send what the window allows of what the backend's last read gave.
        """
        if not self.closed:
            self.pump()
            self.conn.flush()

    def send_end(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        if self.closed:
            return
        self._end = trailer_fields(trailers)
        self.pump()
        self.conn.flush()

    def pump(self) -> None:
        """
        Send the head, what the windows allow of the body, and the end once
        the body is out; pause the backend while the client's window is
        shut, resume it when it opens.
        """
        if self.closed:
            return
        conn = self.conn
        head = self._head
        if head is not None:
            self._head = None
            self.head_sent = True
            if self._end is not None and not self._out and not self._end:
                conn.send_headers(self, head, end=True)
                self._sent_end()
                return
            conn.send_headers(self, head, end=False)
        if not self.head_sent:
            return
        out = self._out
        while out and not conn.write_paused:
            room = conn.window(self)
            if room <= 0:
                break
            chunk = out[0]
            if len(chunk) > room:
                out[0] = chunk[room:]
                chunk = chunk[:room]
            else:
                out.popleft()
            self.out_size -= len(chunk)
            if not out and self._end == []:
                # The last bytes, and no trailers: they end the stream.
                if not conn.send_data(self, chunk, end=True):
                    return
                self.blocked_since = None
                self._resume_upstream()
                self._sent_end()
                return
            if not conn.send_data(self, chunk):
                return
        if out:
            if self.blocked_since is None:
                self.blocked_since = self.clock.seconds()
            if self._end is None:
                self._pause_upstream()
            return
        self.blocked_since = None
        self._resume_upstream()
        end = self._end
        if end is not None:
            if end:
                conn.send_headers(self, end, end=True)
            elif not conn.send_data(self, b"", end=True):
                return
            self._sent_end()

    def _pause_upstream(self) -> None:
        exchange = self.exchange
        upstream = exchange.upstream if exchange is not None else None
        if self._paused_upstream is None and upstream is not None:
            transport = upstream.transport
            if transport is not None:
                self._paused_upstream = transport
                transport.pauseProducing()

    def _resume_upstream(self) -> None:
        transport, self._paused_upstream = self._paused_upstream, None
        if transport is not None and not transport.disconnecting:
            transport.resumeProducing()

    def _sent_end(self) -> None:
        self._end = None
        self._finish()

    def exchange_done(self, exchange: Exchange) -> None:
        """
        C{exchange}'s response has all been handed over (it may still wait
        for window here).
        """
        self._done = True
        if self.exchange is exchange:
            self.exchange = None
        self._finish()

    def _finish(self) -> None:
        # Over once the exchange is done and the end has gone out.
        if self.closed or not self._done or self._end is not None or self._out:
            return
        if not self.head_sent:
            return
        self.closed = True
        self.conn.stream_over(self, answered=True)

    def fail(self, exchange: Exchange, status: int) -> None:
        """
        C{exchange} failed: answer C{status} if the client has seen nothing
        of a response yet, else reset the stream.
        """
        if self.exchange is exchange:
            self.exchange = None
        self._done = True
        if self.head_sent or self.closed:
            exchange.record()
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
            return
        exchange.status = status
        exchange.record()
        self._resume_upstream()
        body = error_body(status)
        self._out.clear()
        self._out.append(body)
        self.out_size = len(body)
        self._head = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        self._end = []
        self.pump()
        self.conn.flush()

    def abort(self) -> None:
        """
        Reset the stream now (CANCEL), recording an exchange under way.
        """
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.phase is not _DONE:
            exchange.give_up(exchange.status)
        self.conn.reset(self, ErrorCodes.CANCEL)

    def reset_by_client(self) -> None:
        """
        The client reset the stream: its exchange is given up (499) and the
        backend connection closed.
        """
        self._drop()
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.phase is not _DONE:
            exchange.give_up(499)

    def _drop(self) -> None:
        self.closed = True
        self._out.clear()
        self.out_size = 0
        self._inbox.clear()
        self._resume_upstream()

    def closed_by_rproxy(self) -> None:
        """
        rproxy reset the stream: give up its exchange.
        """
        self._drop()
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.phase is not _DONE:
            exchange.give_up(exchange.status if exchange.response_started else 499)

    # Protocol switches: none on a stream ----------------------------------

    def open_tunnel(
        self,
        exchange: Exchange,
        head: ResponseHead,
        upstream: UpstreamProtocol,
        rest: bytes,
    ) -> None:
        """
        A backend switched protocols unasked (a request over HTTP/2 cannot
        ask): its connection is closed and the stream reset.
        """
        upstream.transport.loseConnection()
        exchange.tunnel_ended(0, 0)
        if self.exchange is exchange:
            self.exchange = None
        self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)

    def tunnel_data(self, data: bytes) -> None:
        """Never called: a stream has no tunnel."""

    def tunnel_closed(self, exchange: Exchange) -> None:
        """Never called: a stream has no tunnel."""


classImplements(H2Stream, IPushProducer)
