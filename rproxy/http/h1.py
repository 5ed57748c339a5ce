"""The HTTP/1.1 codec: one client connection, its bytes turned into request
events for one L{Exchange} at a time, and the exchange's neutral response
events turned back into HTTP/1.1 bytes.

The codec owns what belongs to the connection and the wire: the read
buffer, pipelining (requests that arrive early wait, bounded, and are
answered in order), request framing (a chunked body is decoded here and the
exchange sees only its bytes), response framing (re-chunking a body of
unknown length, C{100 Continue}, trailers), keep-alive, the half-close of a
client that sent its FIN, the tunnel after a 101, and the connection's
timers: the request head and keep-alive timeouts, the request body's read
timeout and minimum rate, and the exchange's response timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import classImplements

from rproxy._fastwrite import Data, no_delay, send_now
from rproxy._protocol import StreamProtocol
from rproxy.http import _h1_ending, _h1_reading, _h1_sniff, _h1_timers, _h1_tunnel
from rproxy.http._codec import Codec
from rproxy.http._h1_states import (
    BODY,
    CLOSED,
    HANDED_OVER,
    HEAD,
    SNIFF,
    TUNNEL,
    WAIT,
)
from rproxy.http._h1_writer import H1Writer
from rproxy.http._tunnel import Tunnel
from rproxy.http.chunked import ChunkedDecoder
from rproxy.http.errors import error_response
from rproxy.http.exchange import Exchange, Phase
from rproxy.http.framing import (
    ResponseHead,
)
from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool
from rproxy.http.upstream import UpstreamProtocol, end_stream

if TYPE_CHECKING:
    from rproxy.http.listener import HTTPProxyFactory

__all__ = ["H1Connection"]

#: a module name for the member (cheaper than the Enum lookup per request).
_DONE = Phase.DONE


class H1Connection(StreamProtocol, Codec):
    """
    One HTTP/1.1 client connection.

    A client may shut its write side (a FIN) once it has sent its requests:
    each request received whole is still answered, in order, then the
    connection closes.  A FIN half-way through a request is the client
    giving up: nothing more is sent, and the access event says 400 for a
    head cut short (as nginx logs it) or 499 for a body cut short.  In a
    tunnel after a 101 the FIN is passed on to the backend.  (Over TLS a FIN
    still ends the connection whole: Twisted's TLS layer does not pass
    half-closes on.)

    As an L{IPushProducer} it is what a backend connection pauses while it
    cannot take more of a request body.
    """

    def __init__(self, factory: HTTPProxyFactory):
        self.factory = factory
        self.settings = factory.settings
        self.clock = factory.clock
        self.client = ""
        self.exchange: Exchange | None = None
        self._buffer = bytearray()
        self._search_from = 0
        self._state = HEAD
        self._timer: IDelayedCall | None = None
        self._since = 0.0
        self._idle_wait = False
        #: an exchange is beginning (L{_begin} is running); the next
        #: request waits for it to return (C{_again}).
        self._beginning = False
        self._again = False
        #: close once the current response has been sent.
        self._closing = False
        #: C{_closing} because the client sent a FIN (not for a shutdown):
        #: requests it pipelined before the FIN are still answered.
        self._closing_for_eof = False
        #: the client shut its write side: nothing more will be read.
        self._read_closed = False
        self._paused = False
        self._paused_at = 0.0
        #: idle backend connections kept for this client only (pools that
        #: send PROXY headers); made on first use.
        self._own_keep_alive: ClientKeepAlive | None = None
        self._tunnel: Tunnel | None = None
        #: the HTTP/2 codec the connection was handed over to.
        self._h2: Any = None
        # The request body being read.
        self._body_left = 0
        self._decoder: ChunkedDecoder | None = None
        self._body_since = 0.0
        self._body_read = 0
        self._last_read = 0.0
        # The response being written (made with the transport).
        self._writer: H1Writer = H1Writer(None)

    # Connection -------------------------------------------------------------

    def connectionMade(self) -> None:
        self._writer = H1Writer(self.transport)
        self.factory.connections.add(self)
        no_delay(self.transport)
        peer = self.transport.getPeer()
        self.client = str(getattr(peer, "host", ""))
        self._since = self.clock.seconds()
        if self.settings.http2 is not None:
            self._state = SNIFF
        self._arm()

    # Timeouts ---------------------------------------------------------------
    #
    # One timer per connection, not one per request: the state says which
    # timeouts apply and since when, and the timer checks them when it
    # fires.  It never waits longer than the shortest timeout, so a deadline
    # set after it was armed is never missed.

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.clock.callLater(
                self.settings.shortest_timeout, self._tick
            )

    def _tick(self) -> None:
        _h1_timers.tick(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # Reading ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state >= TUNNEL:
            self._not_reading_requests(state, data)
            return
        self._buffer += data
        if state == HEAD:
            if self._idle_wait:
                # A new request began on a kept-alive connection: it has the
                # head timeout, not the (longer) keep-alive one, to arrive.
                self._idle_wait = False
                self._since = self.clock.seconds()
            _h1_reading.read_head(self)
        elif state == BODY:
            self._last_read = self.clock.seconds()
            _h1_reading.read_body(self)
        elif len(self._buffer) > self.settings.limits.max_head:
            self.pause_reading()  # pipelined requests wait for this response

    def _not_reading_requests(self, state: int, data: bytes) -> None:
        # Bytes for a tunnel, for the HTTP/2 codec, or the first bytes of a
        # connection that may be HTTP/2; none after the connection closed.
        if state == TUNNEL:
            if self._tunnel is not None:
                self._tunnel.from_client(data)
        elif state == HANDED_OVER:
            self._h2.dataReceived(data)
        elif state == SNIFF:
            _h1_sniff.sniff(self, data)

    # Flow control ----------------------------------------------------------

    def pause_reading(self) -> None:
        """
        Stop reading from the client (a full buffer, a busy backend, a
        suspended filter).
        """
        if not self._paused:
            self._paused = True
            self._paused_at = self.clock.seconds()
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """
        Read from the client again.  Time spent paused does not count
        against its request body's timeouts.
        """
        if self._paused and self._state != CLOSED:
            self._paused = False
            if self._state == BODY:
                paused_for = self.clock.seconds() - self._paused_at
                self._body_since += paused_for
                self._last_read += paused_for
            self.transport.resumeProducing()
            if self._state == BODY and self._buffer:
                _h1_reading.read_body(self)

    def pauseProducing(self) -> None:
        self.pause_reading()

    def resumeProducing(self) -> None:
        self.resume_reading()

    def stopProducing(self) -> None:
        self._abort()

    def producer(self) -> IPushProducer:
        """
        What a backend connection pauses while it cannot take more of the
        request body.
        """
        return self

    def body_forwarded(self) -> None:
        """
        The request body has all reached the backend: the client may be
        read again (pipelined requests, up to the head limit).
        """
        if self._state == WAIT and len(self._buffer) <= self.settings.limits.max_head:
            self.resume_reading()

    def keep_alive_for(self, private: bool) -> KeepAlivePool | ClientKeepAlive:
        """
        Where idle backend connections are kept: the listener's shared
        pool, or for connections that announced this client with a PROXY
        header (C{private}), this client's own.
        """
        if not private:
            shared: KeepAlivePool = self.factory.keep_alive
            return shared
        own = self._own_keep_alive
        if own is None:
            own = self._own_keep_alive = ClientKeepAlive(self.clock)
        return own

    def wake_by(self, when: float) -> None:
        """
        Make sure the connection's timer looks at its deadlines no later
        than C{when} (an exchange's own timeout may be shorter than any the
        listener knows).
        """
        timer = self._timer
        if timer is not None and timer.getTime() > when:
            timer.reset(max(when - self.clock.seconds(), 0.0))

    # Writing (the exchange's response events) --------------------------------

    def send_interim(self, exchange: Exchange, head: ResponseHead) -> None:
        self._writer.interim(exchange.request, head)

    def send_head(self, exchange: Exchange, head: ResponseHead) -> None:
        request = exchange.request
        assert request is not None
        keep_alive = request.keep_alive and (
            not self._closing or self._more_before_eof()
        )
        if (self._state == BODY and exchange.phase is _DONE) or (
            exchange.upstream_error is not None
        ):
            # A local answer before the request body was read: the rest of
            # the body is not read, so the connection cannot go on.  After
            # rproxy's own error for a failed backend it does not either.
            keep_alive = False
        self._writer.head(head, request, keep_alive)

    def send_body(self, data: Data) -> None:
        self._writer.body(data)

    def flush(self) -> None:
        """
        Send what the last read from the backend produced.
        """
        if not self._writer.flush() and self._state != CLOSED:
            self._slow_client()

    def _slow_client(self) -> None:
        # The client is slower than the backend: from now on the backend
        # connection is paused whenever the client's buffer is full
        # (registered only now, as most responses never need it).
        transport = self.transport
        exchange = self.exchange
        upstream = exchange.upstream if exchange is not None else None
        if (
            upstream is not None
            and upstream.transport is not None
            and getattr(transport, "producer", None) is None
        ):
            transport.registerProducer(upstream.transport, True)

    def send_end(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        exchange = self.exchange
        request = exchange.request if exchange is not None else None
        te_trailers = request is not None and request.te_trailers
        if not self._writer.end(trailers, te_trailers) and self._state != CLOSED:
            self._slow_client()
        end_stream(self.transport)

    def exchange_done(self, exchange: Exchange) -> None:
        """
        C{exchange}'s response has been sent: read the next request, or
        close.
        """
        if self.exchange is not exchange:
            return
        self.exchange = None
        writer = self._writer
        writer.sent = False
        keep = writer.keep_client and self._state != BODY
        if (not keep or self._closing) and not (
            keep and self._closing_for_eof and self._buffer
        ):
            self._close()
            return
        self._state = HEAD
        self.resume_reading()
        self._since = self.clock.seconds()
        if self._buffer:
            self._idle_wait = False
            _h1_reading.read_head(self)
        else:
            self._idle_wait = True

    def _more_before_eof(self) -> bool:
        """
        Whether the client sent more of a request before its FIN, so this
        response is not the last one read.
        """
        return self._closing_for_eof and bool(self._buffer.strip(b"\r\n"))

    def fail(self, exchange: Exchange, status: int) -> None:
        """
        C{exchange} failed: answer C{status} and close if the client has
        seen nothing of a response yet, else cut the connection.
        """
        self.exchange = None
        if self._writer.sent:
            exchange.record()
            self._abort()
            return
        self._writer.discard()
        exchange.status = status
        exchange.record()
        self._state = CLOSED
        send_now(self.transport, error_response(status))
        self._close()

    # Tunnels --------------------------------------------------------------

    def open_tunnel(
        self,
        exchange: Exchange,
        head: ResponseHead,
        upstream: UpstreamProtocol,
        rest: bytes,
    ) -> None:
        """
        Pass the 101 on and relay raw bytes both ways until either side
        closes or the tunnel is idle too long.
        """
        _h1_tunnel.open_tunnel(self, exchange, head, upstream, rest)

    def tunnel_data(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_backend(data)

    def tunnel_closed(self, exchange: Exchange) -> None:
        """
        The backend side of the tunnel closed.
        """
        _h1_tunnel.end_tunnel(self)
        if self._state != CLOSED:
            self._close()

    # Ending ---------------------------------------------------------------

    def _close(self) -> None:
        self._state = CLOSED
        self._cancel_timer()
        # A registered producer would be resumed instead of the connection
        # closed (see ITransport.loseConnection).
        end_stream(self.transport, resume=False)
        self.transport.loseConnection()

    def _abort(self) -> None:
        """
        Drop the client connection now.
        """
        _h1_tunnel.end_tunnel(self)
        self._state = CLOSED
        self._cancel_timer()
        self.transport.abortConnection()

    def abort(self) -> None:
        """
        Drop the client connection now, recording an exchange under way
        (each stream's, over HTTP/2).
        """
        if self._h2 is not None:
            self._h2.abort()
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.phase is not _DONE:
            exchange.give_up(exchange.status)
        self._abort()

    def shut_down(self, abort: bool) -> None:
        """
        Close at once if idle between requests; otherwise after the current
        response (or now, when C{abort}).  An HTTP/2 connection sends
        GOAWAY and closes once its streams have ended.
        """
        if self._h2 is not None:
            self._h2.shut_down(abort)
        elif abort:
            self.abort()
        elif (self._state == HEAD or self._state == SNIFF) and not self._buffer:
            self._close()
        else:
            self._closing = True
            self._closing_for_eof = False

    def readConnectionLost(self) -> None:
        """
        The client shut its write side (FIN): answer what it sent in full,
        then close; give up a request it stopped sending half-way, or one
        that waits in its pool's queue (a client that closed its connection
        looks the same, and its wait would only keep others waiting).
        """
        _h1_ending.read_closed(self)

    def writeConnectionLost(self) -> None:
        """
        Part of the half-close interface; never called, as rproxy does not
        half-close a client connection (a backend's FIN in a tunnel closes
        it whole).
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._h2 is not None:
            self._h2.connectionLost(reason)
        elif self._state == TUNNEL:
            exchange = self.exchange
            upstream = exchange.upstream if exchange is not None else None
            _h1_tunnel.end_tunnel(self)
            if upstream is not None and upstream.transport is not None:
                end_stream(upstream.transport, resume=False)
                upstream.transport.loseConnection()
        exchange, self.exchange = self.exchange, None
        self._state = CLOSED
        self._cancel_timer()
        if exchange is not None and exchange.phase is not _DONE:
            exchange.give_up(499)  # the client went away before its response
        self.factory.stats.connections_closed += 1
        if self._own_keep_alive is not None:
            self._own_keep_alive.close_all()
        self.factory.connections.discard(self)


classImplements(H1Connection, IHalfCloseableProtocol, IPushProducer)
