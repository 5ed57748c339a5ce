"""The HTTP/1.1 front protocol: strict request framing, routing, streaming to
a backend connection and back, keep-alive and pipelining.

One request is handled at a time per client connection; pipelined requests
wait in a bounded buffer and are answered in order.  Request and response
bodies stream through with backpressure (each transport the other's producer
while a body flows).  What the client sent is re-framed, never forwarded in an
ambiguous form: a chunked body is decoded and chunked again.

The protocol is one class made of three parts: L{FrontState} (the state),
L{BackendSide} (getting the request to a backend) and L{ResponseSide}
(relaying the response); this module has the connection's lifecycle, its
timeouts and the reading of request heads.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy._fastwrite import no_delay, send_now
from rproxy.http._backend_side import BackendSide
from rproxy.http._front_state import (
    BODY,
    CLOSED,
    HEAD,
    TUNNEL,
    WAIT,
    end_stream,
)
from rproxy.http._response_side import ResponseSide
from rproxy.http.chunked import ChunkedDecoder
from rproxy.http.errors import error_response
from rproxy.http.framing import (
    HTTPError,
    RequestHead,
    check_incomplete_head,
    find_head_end,
    parse_request_head,
)

__all__ = ["HTTPFrontProtocol"]

#: request body bytes held while the backend is being connected.
_BODY_BUFFER = 1 << 16


@implementer(IHalfCloseableProtocol)
class HTTPFrontProtocol(ResponseSide, BackendSide):
    """
    One client connection.

    A client may shut its write side (a FIN) once it has sent its requests:
    each request received whole is still answered, in order, then the
    connection closes.  A FIN half-way through a request is the client
    giving up: nothing more is sent, and the access event says 400 for a
    head cut short (as nginx logs it) or 499 for a body cut short.  In a
    tunnel after a 101 the FIN is passed on to the backend.  (Over TLS a FIN
    still ends the connection whole: Twisted's TLS layer does not pass
    half-closes on.)
    """

    # Connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        no_delay(self.transport)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.client = str(getattr(peer, "host", ""))
        self._since = self.clock.seconds()
        self._arm()

    # Timeouts ----------------------------------------------------------------
    #
    # One timer per connection, not one per request: the state says which
    # timeout applies and since when (the head timeout from the request's
    # first byte, the keep-alive timeout from the end of the last response,
    # the response timeout from the last byte moved), and the timer checks it
    # when it fires.  It never waits longer than the shortest timeout, so a
    # deadline set after it was armed is never missed.

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.clock.callLater(
                self.settings.shortest_timeout, self._tick
            )

    def _tick(self) -> None:
        self._timer = None
        settings = self.settings
        state = self._state
        if state == HEAD:
            deadline = self._since + (
                settings.keep_alive_timeout
                if self._idle_wait
                else settings.request_head_timeout
            )
        elif state in (BODY, WAIT):
            pool = self.pool.name if self.pool is not None else ""
            deadline = self._last_io + settings.timeouts_for(pool)[1]
        else:
            return
        remaining = deadline - self.clock.seconds()
        if remaining > 0:
            self._timer = self.clock.callLater(
                min(remaining, settings.shortest_timeout), self._tick
            )
        elif state == HEAD:
            if self._buffer:
                self._reject(408)
            else:
                self._close()
        else:
            self._exchange_timed_out()

    def dataReceived(self, data: bytes) -> None:
        if self._state == CLOSED:
            return
        if self._state == TUNNEL:
            if self._tunnel is not None:
                self._tunnel.from_client(data)
            return
        self._buffer += data
        if self._state == HEAD:
            if self._idle_wait:
                # A new request began on a kept-alive connection: it has the
                # head timeout, not the (longer) keep-alive one, to arrive.
                self._idle_wait = False
                self._since = self.clock.seconds()
            self._read_head()
        elif self._state == BODY:
            self._last_io = self.clock.seconds()
            if self.upstream is not None:
                self._pump_body()
            elif len(self._buffer) > _BODY_BUFFER:
                self._pause()
        elif len(self._buffer) > self.settings.limits.max_head:
            self._pause()  # pipelined requests wait for this response

    # Request head -----------------------------------------------------------

    def _read_head(self) -> None:
        limits = self.settings.limits
        buffer = self._buffer
        end = find_head_end(buffer, 0, self._search_from)
        try:
            if end < 0:
                check_incomplete_head(buffer, 0, limits)
                if self._read_closed:
                    self._head_cut_short()
                    return
                self._search_from = max(len(buffer) - 3, 0)
                return
            head = parse_request_head(bytes(buffer[:end]), limits)
        except HTTPError as error:
            self._reject(error.status)
            return
        del buffer[:end]
        self._search_from = 0
        self._begin(head)

    def _reject(self, status: int) -> None:
        """
        Answer C{status} ourselves and close the connection.
        """
        self._answer_and_close(status, error_response(status))

    def _answer_and_close(self, status: int, response: bytes) -> None:
        """
        Send C{response}, our own (recorded as C{status}), and close.
        """
        self._end_exchange(status)
        send_now(self.transport, response)
        self._emit()
        self._close()

    def _end_exchange(self, status: int) -> None:
        """
        Stop the exchange under way, if any, to be recorded as C{status};
        no more is read from the client.
        """
        self.status = status
        if self.started == 0.0:
            self.started = self.clock.seconds()
        self._state = CLOSED
        if self._connecting is not None:
            self._connecting.cancel()
        self._drop_upstream()

    def _give_up(self, status: int) -> None:
        """
        The client sent a FIN half-way through a request: record C{status},
        answer nothing more and close.
        """
        response_started = self._response_started
        self._end_exchange(status)
        self._emit()
        if response_started:
            self._abort()
        else:
            self._close()

    def _head_cut_short(self) -> None:
        """
        Nothing more will come, and the buffer holds no whole request head:
        a partial one was given up; mere empty lines are no request.
        """
        if self._buffer.strip(b"\r\n"):
            self._give_up(400)
        else:
            self._close()

    def _begin(self, head: RequestHead) -> None:
        self.request = head
        self.started = self._last_io = self.clock.seconds()
        # Each request follows the listener's settings of the moment it
        # begins: a reload changes them for kept-alive connections too.
        self.settings = self.factory.settings
        answer = self.settings.answer
        if answer is not None and (local := answer(head)) is not None:
            self._answer_and_close(*local)
            return
        match = self.settings.router.route(head.host, head.target)
        if match is None:
            self._reject(404)
            return
        self.target = match.target
        try:
            self.pool = self.factory.registry.get(match.route.pool)
        except KeyError:
            self._reject(503)
            return
        if head.body == "none":
            self._state = WAIT
        else:
            self._state = BODY
            if head.body == "length":
                self._body_left = head.content_length or 0
            else:
                self._decoder = ChunkedDecoder(self.settings.limits)
        self._connect()

    # Ending ------------------------------------------------------------------

    def _close(self) -> None:
        self._state = CLOSED
        self._cancel_timer()
        # A registered producer would be resumed instead of the connection
        # closed (see ITransport.loseConnection).
        end_stream(self.transport, resume=False)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _abort(self) -> None:
        """
        Drop the client connection now, recording the exchange if one was
        under way.
        """
        self._end_tunnel()
        if self.request is not None:
            self._emit()
        self._state = CLOSED
        self._cancel_timer()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def shut_down(self, abort: bool) -> None:
        """
        Close at once if idle between requests; otherwise after the current
        response (or now, when C{abort}).
        """
        if abort:
            self._drop_upstream()
            self._abort()
        elif self._state == HEAD and not self._buffer:
            self._close()
        else:
            self._closing = True
            self._closing_for_eof = False

    def readConnectionLost(self) -> None:
        """
        The client shut its write side (FIN): answer what it sent in full,
        then close; give up a request it stopped sending half-way.
        """
        if self._read_closed or self._state == CLOSED:
            # Resuming a half-closed transport reads the FIN again.
            return
        self._read_closed = True
        state = self._state
        if state == TUNNEL:
            upstream = self.upstream
            if upstream is not None and upstream.transport is not None:
                upstream.transport.loseWriteConnection()  # type: ignore[attr-defined]
        elif state == HEAD:
            self._head_cut_short()
        elif state == BODY and (
            self.upstream is not None
            or (self._decoder is None and len(self._buffer) < self._body_left)
        ):
            # Streaming to a backend, the body is forwarded as it comes, so
            # it is unfinished; or it is plainly short of its length.
            self._give_up(499)
        elif not self._closing:
            # A whole request is being answered (or its body, buffered while
            # a backend is connected, is judged once it is sent).
            self._closing = True
            self._closing_for_eof = True

    def writeConnectionLost(self) -> None:
        """
        Part of the half-close interface; never called, as rproxy does not
        half-close a client connection (a backend's FIN in a tunnel closes
        it whole).
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._state == TUNNEL:
            self._end_tunnel()
            upstream = self.upstream
            self.upstream = None
            self._release_backend()
            if upstream is not None and upstream.transport is not None:
                end_stream(upstream.transport, resume=False)
                upstream.transport.loseConnection()
            self._emit()
        in_flight = self.request is not None and self._state not in (CLOSED, TUNNEL)
        self._state = CLOSED
        self._cancel_timer()
        if self._connecting is not None:
            self._connecting.cancel()
        if in_flight:
            self.status = 499  # the client went away before its response
            self._drop_upstream()
            self._emit()
        self.factory.stats.connections_closed += 1
        if self._own_keep_alive is not None:
            self._own_keep_alive.close_all()
        self.factory.connections.discard(self)
