"""One HTTP/2 client connection: L{H2Connection}, the C{h2} library's state
machine driven by the bytes of a client connection handed over by the
HTTP/1.1 codec, one L{H2Stream} (and one L{Exchange}) per request.

The connection owns what is not any one stream's: the frames in and out,
the flood limits (L{FloodGuard}, C{max_concurrent_streams}, the header
list size), the client's write buffer (a full one pauses every stream's
backend), GOAWAY on shutdown, and one timer for every stream's deadlines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy.http.exchange import Exchange
from rproxy.http.h2.floods import FloodGuard
from rproxy.http.h2.mapping import Malformed, Refused, request_head
from rproxy.http.h2.stream import H2Stream
from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool

if TYPE_CHECKING:
    from rproxy.http.h1 import H1Connection
    from rproxy.http.listener import HTTPProxyFactory, HTTPSettings

__all__ = ["H2Connection"]

log = Logger(namespace="rproxy.http")

_Codes = h2.settings.SettingCodes


@implementer(IPushProducer)
class H2Connection:
    """
    A client connection speaking HTTP/2.

    It is not the transport's protocol: the L{H1Connection} that accepted
    the connection stays that and passes its bytes and its end on.  As an
    L{IPushProducer} registered with the client transport, it hears when the
    client reads too slowly (every stream's backend is paused then).

    @ivar streams: the open streams, by id.
    """

    def __init__(self, front: H1Connection) -> None:
        self.front = front
        self.factory: HTTPProxyFactory = front.factory
        self.clock: Any = front.clock
        self.client: str = front.client
        self.transport: Any = front.transport
        self.settings: HTTPSettings = front.settings
        h2s = self.settings.http2
        assert h2s is not None
        self.h2 = h2s
        self.stats = self.factory.h2_stats
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Requests are checked by rproxy.http.h2.mapping, so that a
            # malformed one resets its stream, not the connection.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            # Responses are built by rproxy.http.h2.mapping from heads the
            # HTTP/1.1 parser checked: lowercase names, values without
            # surrounding whitespace (h2's own pass costs ~15% per request).
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.machine = machine = h2.connection.H2Connection(config)
        machine.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                _Codes.MAX_CONCURRENT_STREAMS: h2s.max_concurrent_streams,
                _Codes.INITIAL_WINDOW_SIZE: h2s.stream_window,
                _Codes.MAX_HEADER_LIST_SIZE: h2s.max_header_list_size,
                _Codes.ENABLE_PUSH: 0,
            },
        )
        # Enforced from the first request, not only once the client has
        # acknowledged the SETTINGS.
        machine.decoder.max_header_list_size = h2s.max_header_list_size
        self.guard = FloodGuard(h2s)
        self.streams: dict[int, H2Stream] = {}
        #: the client transport's buffer is full.
        self.write_paused = False
        #: the last stream id a GOAWAY let through, once one was sent.
        self._goaway: int | None = None
        self._closed = False
        self._timer: IDelayedCall | None = None
        self._idle_since = self.clock.seconds()
        self._own_keep_alive: ClientKeepAlive | None = None

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (or closing) for rproxy."""
        return self._closed

    # Starting and reading ----------------------------------------------------

    def start(self, data: bytes) -> None:
        """
        Send the server preface (SETTINGS), then read C{data}, the bytes
        that came so far.
        """
        stats = self.stats
        stats.connections += 1
        stats.open_connections += 1
        machine = self.machine
        machine.initiate_connection()
        extra = self.h2.connection_window - 65535
        if extra > 0:
            machine.increment_flow_control_window(extra)
        self.transport.registerProducer(self, True)
        self.flush()
        self._arm()
        if data:
            self.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        flood = self.guard.feed(data, self.clock.seconds())
        if flood is not None:
            self._flooded(flood)
            return
        try:
            events = self.machine.receive_data(data)
        except h2.exceptions.DenialOfServiceError:
            # An HPACK bomb; h2 has queued GOAWAY (ENHANCE_YOUR_CALM).
            self._flooded("header_list", goaway=False)
            return
        except h2.exceptions.TooManyStreamsError:
            # h2 makes it a connection error (GOAWAY PROTOCOL_ERROR).
            self._flooded("concurrent_streams", goaway=False)
            return
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY for it.
            self._close_now()
            return
        for event in events:
            if self.closed:
                return
            self._event(event)
        self.flush()

    def _event(self, event: object) -> None:
        if isinstance(event, h2.events.RequestReceived):
            ended = event.stream_ended is not None
            self._request(event.stream_id, event.headers or [], ended)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            length = event.flow_controlled_length or 0
            if stream is None:
                self._acknowledge(event.stream_id, length)
            else:
                stream.data_received(event.data or b"", length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                self.stats.client_resets += 1
                self.stats.open_streams -= 1
                stream.reset_by_client()
                self._maybe_idle()
        elif isinstance(
            event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged
        ):
            stream_id = getattr(event, "stream_id", 0)
            if stream_id:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    stream.pump()
            else:
                self._pump_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client will open no more streams: finish those open.
            self.shut_down(False)

    def _request(self, stream_id: int, headers: Iterable[Any], ended: bool) -> None:
        self.stats.streams += 1
        if self._goaway is not None and stream_id > self._goaway:
            self.stats.stream_errors += 1
            self._reset_id(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        settings = self.settings = self.factory.settings
        stream = H2Stream(self, stream_id)
        stream.request_ended = ended
        self.streams[stream_id] = stream
        self.stats.open_streams += 1
        try:
            head = request_head(headers, ended, settings.limits)
        except Malformed:
            self.reset(stream, ErrorCodes.PROTOCOL_ERROR)
            return
        except Refused as refused:
            self.stats.requests += 1
            record = Exchange(stream, settings, None)
            stream.fail(record, refused.status)
            return
        self.stats.requests += 1
        stream.start(Exchange(stream, settings, head))

    # Writing --------------------------------------------------------------

    def send_headers(
        self, stream: H2Stream, headers: list[tuple[bytes, bytes]], *, end: bool
    ) -> None:
        """
        Send a HEADERS frame on C{stream}.
        """
        try:
            self.machine.send_headers(stream.stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            log.failure("HTTP/2 response headers refused", Failure())
            self.reset(stream, ErrorCodes.INTERNAL_ERROR)

    def send_data(self, stream: H2Stream, data: bytes, *, end: bool = False) -> bool:
        """
        Send a DATA frame (no larger than L{window} said) on C{stream};
        whether it could be (the client may have reset the stream in bytes
        read but not yet handled).
        """
        try:
            self.machine.send_data(stream.stream_id, data, end_stream=end)
        except h2.exceptions.StreamClosedError:
            stream.reset_by_client()
            return False
        return True

    def window(self, stream: H2Stream) -> int:
        """
        How many bytes of C{stream}'s body may go out now, in one frame.
        """
        machine = self.machine
        try:
            room = machine.local_flow_control_window(stream.stream_id)
        except h2.exceptions.StreamClosedError:
            return 0
        return min(room, machine.max_outbound_frame_size)

    def flush(self) -> None:
        """
        Write the frames made so far.
        """
        data = self.machine.data_to_send()
        if data and not self._closed:
            self.transport.write(data)

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.pump()
            if self.write_paused:
                break
        self.flush()

    def acknowledge(self, stream: H2Stream, length: int) -> None:
        """
        C{length} bytes of C{stream}'s DATA were taken: open the windows.
        """
        self._acknowledge(stream.stream_id, length)

    def _acknowledge(self, stream_id: int, length: int) -> None:
        if length and not self._closed:
            self.machine.acknowledge_received_data(length, stream_id)

    # The client transport as consumer (IPushProducer) ---------------------

    def pauseProducing(self) -> None:
        """
        The client does not read fast enough: no more DATA for now (each
        stream's backend is paused when its response waits), and no more
        frames read from the client (which could make more to write).
        """
        if not self.write_paused:
            self.write_paused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.write_paused and not self._closed:
            self.write_paused = False
            self.transport.resumeProducing()
            self._pump_all()

    def stopProducing(self) -> None:
        if not self._closed:
            self.abort()

    # Streams ending ---------------------------------------------------------

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        """
        Reset C{stream} with C{code} (rproxy's decision): its exchange is
        given up.
        """
        if self.streams.pop(stream.stream_id, None) is not None:
            self.stats.open_streams -= 1
        if code != ErrorCodes.NO_ERROR and code != ErrorCodes.REFUSED_STREAM:
            self.stats.stream_errors += 1
        stream.closed_by_rproxy()
        self._reset_id(stream.stream_id, code)
        self.flush()
        self._maybe_idle()

    def _reset_id(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.machine.reset_stream(stream_id, code)

    def stream_over(self, stream: H2Stream, answered: bool) -> None:
        """
        C{stream}'s response has all been sent.  A client still sending a
        request body is told to stop (RST_STREAM NO_ERROR, RFC 9113 8.1).
        """
        if self.streams.pop(stream.stream_id, None) is not None:
            self.stats.open_streams -= 1
        if not stream.request_ended:
            self._reset_id(stream.stream_id, ErrorCodes.NO_ERROR)
        self.flush()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self.streams:
            self._idle_since = self.clock.seconds()
            if self._goaway is not None:
                self._close_now()

    # Flow of time ---------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = self.clock.callLater(
                self.settings.shortest_timeout, self._tick
            )

    def wake_by(self, when: float) -> None:
        """
        Look at the deadlines no later than C{when}.
        """
        timer = self._timer
        if timer is not None and timer.getTime() > when:
            timer.reset(max(when - self.clock.seconds(), 0.0))

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self.clock.seconds()
        settings = self.settings
        if not self.streams and now >= self._idle_since + settings.keep_alive_timeout:
            self.shut_down(False)
            return
        stall = self.h2.stall_timeout
        soonest = settings.shortest_timeout
        for stream in list(self.streams.values()):
            blocked = stream.blocked_since
            if blocked is not None and now >= blocked + stall:
                self.stats.stalled += 1
                self.reset(stream, ErrorCodes.CANCEL)
                continue
            exchange = stream.exchange
            if exchange is None:
                continue
            if (
                stream.reading_body
                and not stream.paused
                and now >= stream.last_read + settings.request_body_timeout
            ):
                self.factory.stats.request_body_timeouts += 1
                exchange.fail(408)
                continue
            deadline = exchange.last_io + exchange.response_timeout
            if now >= deadline:
                exchange.timed_out()
                continue
            soonest = min(soonest, deadline - now)
        if not self._closed:
            self._timer = self.clock.callLater(max(soonest, 0.0), self._tick)
            self.flush()

    # Keep-alive ---------------------------------------------------------------

    def keep_alive_for(self, private: bool) -> KeepAlivePool | ClientKeepAlive:
        """
        Where idle backend connections are kept: the listener's shared
        pool, or this client's own for pools that send PROXY headers.
        """
        if not private:
            shared: KeepAlivePool = self.factory.keep_alive
            return shared
        own = self._own_keep_alive
        if own is None:
            own = self._own_keep_alive = ClientKeepAlive(self.clock)
        return own

    # Ending the connection ------------------------------------------------

    def _flooded(self, limit: str, goaway: bool = True) -> None:
        self.stats.floods[limit] += 1
        log.info(
            "HTTP/2 client {client} went past the {limit} limit: GOAWAY",
            client=self.client,
            limit=limit,
        )
        if goaway:
            self._send_goaway(ErrorCodes.ENHANCE_YOUR_CALM)
        self._close_now()

    def _send_goaway(self, code: ErrorCodes) -> None:
        # Written here, not by h2: after its own GOAWAY, h2 refuses to send
        # on the streams that are still to finish.
        self.flush()
        last = self.machine.highest_inbound_stream_id
        frame = GoAwayFrame(stream_id=0, last_stream_id=last, error_code=code)
        if not self._closed:
            self.transport.write(frame.serialize())
        self._goaway = last

    def shut_down(self, abort: bool) -> None:
        """
        Send GOAWAY and close once the open streams have ended (at once
        if there are none, or when C{abort}).
        """
        if self._closed:
            return
        if abort:
            self.abort()
            return
        if self._goaway is None:
            self._send_goaway(ErrorCodes.NO_ERROR)
        if not self.streams:
            self._close_now()

    def abort(self) -> None:
        """
        Drop the connection now, giving up every stream under way.
        """
        self._end_streams()
        self._closed = True
        self.transport.abortConnection()

    def _close_now(self) -> None:
        self.flush()
        self._end_streams()
        self._closed = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _end_streams(self) -> None:
        streams, self.streams = self.streams, {}
        self.stats.open_streams -= len(streams)
        for stream in streams.values():
            stream.closed_by_rproxy()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def connectionLost(self, reason: Failure) -> None:
        """
        The client connection is gone: every stream under way is given up
        (499).
        """
        self._end_streams()
        self._closed = True
        self.stats.open_connections -= 1
        if self._own_keep_alive is not None:
            self._own_keep_alive.close_all()
