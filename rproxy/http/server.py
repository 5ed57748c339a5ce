"""The HTTP/1.1 front protocol: strict request framing, routing, streaming to
a backend connection and back, keep-alive and pipelining.

One request is handled at a time per client connection; pipelined requests
wait in a bounded buffer and are answered in order.  Request and response
bodies stream through with backpressure (each transport the other's producer
while a body flows).  What the client sent is re-framed, never forwarded in an
ambiguous form: a chunked body is decoded and chunked again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._fastwrite import Data, no_delay, send_now, send_parts
from rproxy.accesslog import access_events
from rproxy.backends import Backend, Pool
from rproxy.health import describe_failure
from rproxy.http._tunnel import Tunnel
from rproxy.http.chunked import (
    ChunkedDecoder,
    End,
    Trailers,
    encode_chunk,
    encode_last_chunk,
)
from rproxy.http.errors import error_response
from rproxy.http.framing import (
    HTTPError,
    RequestHead,
    ResponseHead,
    check_incomplete_head,
    find_head_end,
    parse_request_head,
)
from rproxy.http.messages import (
    header,
    request_head,
    response_head,
    response_trailers,
    switching_head,
)
from rproxy.http.upstream import UpstreamFactory, UpstreamProtocol

if TYPE_CHECKING:
    from rproxy.http.listener import HTTPProxyFactory

log = Logger(namespace="rproxy.http")

#: methods whose request may be sent again after a backend failed mid-way.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
#: a request that could not be sent again only goes out on a pooled backend
#: connection idle for less than this: an older one may be closing just now
#: (backends' own keep-alive timeouts can be as short as two seconds).
FRESH_REUSE = 1.0
#: request body bytes held while the backend is being connected.
_BODY_BUFFER = 1 << 16

_HEAD, _BODY, _WAIT, _TUNNEL, _CLOSED = range(5)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _end_stream(consumer: Any, resume: bool = True) -> None:
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


class HTTPFrontProtocol(Protocol):
    """
    One client connection.
    """

    def __init__(self, factory: HTTPProxyFactory):
        self.factory = factory
        self.settings = factory.settings
        self.clock = factory.clock
        self.client = ""
        self._buffer = bytearray()
        self._search_from = 0
        self._state = _HEAD
        self._timer: IDelayedCall | None = None
        self._tunnel: Tunnel | None = None
        #: response bytes gathered while one read from the backend is handled,
        #: sent in one go (a head and a small body in one packet).
        self._out: list[Data] = []
        self._idle_wait = False
        self._closing = False
        self._paused = False
        self._new_exchange()

    def _new_exchange(self) -> None:
        self.request: RequestHead | None = None
        self.target = b""
        self.pool: Pool | None = None
        self.backend: Backend | None = None
        self.upstream: UpstreamProtocol | None = None
        self.tried: list[Backend] = []
        self.status: int | str = "-"
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = 0.0
        self.upstream_time: float | None = None
        self._from_pool = False
        self._holding = False
        self._connecting: Any = None
        self._response_started = False
        self._sent_continue = False
        self._chunk_out = False
        self._keep_client = True
        self._trailers: list[tuple[bytes, bytes]] = []
        self._body_left = 0
        self._decoder: ChunkedDecoder | None = None

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

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        self._timer = None
        settings = self.settings
        state = self._state
        if state == _HEAD:
            deadline = self._since + (
                settings.keep_alive_timeout
                if self._idle_wait
                else settings.request_head_timeout
            )
        elif state in (_BODY, _WAIT):
            pool = self.pool.name if self.pool is not None else ""
            deadline = self._last_io + settings.timeouts_for(pool)[1]
        else:
            return
        remaining = deadline - self.clock.seconds()
        if remaining > 0:
            self._timer = self.clock.callLater(
                min(remaining, settings.shortest_timeout), self._tick
            )
        elif state == _HEAD:
            if self._buffer:
                self._reject(408)
            else:
                self._close()
        else:
            self._exchange_timed_out()

    def dataReceived(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        if self._state == _TUNNEL:
            if self._tunnel is not None:
                self._tunnel.from_client(data)
            return
        self._buffer += data
        if self._state == _HEAD:
            if self._idle_wait:
                # A new request began on a kept-alive connection: it has the
                # head timeout, not the (longer) keep-alive one, to arrive.
                self._idle_wait = False
                self._since = self.clock.seconds()
            self._read_head()
        elif self._state == _BODY:
            self._last_io = self.clock.seconds()
            if self.upstream is not None:
                self._pump_body()
            elif len(self._buffer) > _BODY_BUFFER:
                self._pause()
        elif len(self._buffer) > self.settings.limits.max_head:
            self._pause()  # pipelined requests wait for this response

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # Request head -----------------------------------------------------------

    def _read_head(self) -> None:
        limits = self.settings.limits
        buffer = self._buffer
        end = find_head_end(buffer, 0, self._search_from)
        try:
            if end < 0:
                check_incomplete_head(buffer, 0, limits)
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
        self.status = status
        if self.started == 0.0:
            self.started = self.clock.seconds()
        self._state = _CLOSED
        if self._connecting is not None:
            self._connecting.cancel()
        self._drop_upstream()
        send_now(self.transport, error_response(status))
        self._emit()
        self._close()

    def _begin(self, head: RequestHead) -> None:
        self.request = head
        self.started = self._last_io = self.clock.seconds()
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
            self._state = _WAIT
        else:
            self._state = _BODY
            if head.body == "length":
                self._body_left = head.content_length or 0
            else:
                self._decoder = ChunkedDecoder(self.settings.limits)
        self._connect()

    # Backend connection ----------------------------------------------------

    def _hash_key(self, pool: Pool) -> str | None:
        key = pool.hash_key
        if key.startswith("header:") and self.request is not None:
            value = header(self.request.headers, key[7:].lower().encode())
            return value.decode("latin-1") if value is not None else None
        return self.client

    def _connect(self) -> None:
        pool = self.pool
        assert pool is not None
        backend = None
        if len(self.tried) < pool.connect_tries:
            backend = pool.pick(self._hash_key(pool), self.tried)
        if backend is None:
            self._reject(503 if not self.tried else 502)
            return
        self.tried.append(backend)
        self.backend = backend
        pool.acquire(backend)
        self._holding = True
        request = self.request
        assert request is not None
        retryable = request.method in IDEMPOTENT and request.body == "none"
        upstream = self.factory.keep_alive.take(
            backend, None if retryable else FRESH_REUSE
        )
        if upstream is not None:
            self._from_pool = True
            self._attach(upstream)
            return
        self._from_pool = False
        connecting = self.factory.endpoint_for(backend).connect(
            UpstreamFactory(backend)
        )
        connecting.addTimeout(self.settings.timeouts_for(pool.name)[0], self.clock)
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)
        connecting.addErrback(self._bug)

    def _connected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        if self._state == _CLOSED:
            upstream.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._attach(upstream)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        backend, pool = self.backend, self.pool
        assert backend is not None and pool is not None
        self._release_backend()
        if self._state == _CLOSED:
            return
        reason = describe_failure(failure)
        log.info(
            "connect to {backend} in pool {pool} failed: {reason}",
            backend=backend.name,
            pool=pool.name,
            reason=reason,
        )
        pool.report_failure(backend, reason)
        self._connect()

    def _bug(self, failure: Failure) -> None:
        log.failure("bug in the HTTP proxy; closing the connection", failure)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _attach(self, upstream: UpstreamProtocol) -> None:
        head, pool, backend = self.request, self.pool, self.backend
        assert head is not None and pool is not None and backend is not None
        pool.report_success(backend)
        self.upstream = upstream
        upstream.start(self, head.method, upgrade=head.upgrade is not None)
        settings = self.settings
        upstream.write(
            request_head(
                head,
                self.target,
                backend_address=backend.address.encode(),
                client_ip=self.client,
                scheme=settings.scheme,
                policy=settings.policy,
            )
        )
        self._upstream_started = self.clock.seconds()
        if self._state == _WAIT:
            self._request_sent()
            return
        upstream.transport.registerProducer(self.transport, True)  # type: ignore[union-attr]
        self._resume()
        self._pump_body()

    # Request body ----------------------------------------------------------

    def _pump_body(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        buffer = self._buffer
        if not buffer:
            return
        if self._decoder is None:
            count = min(self._body_left, len(buffer))
            data = bytes(buffer[:count])
            del buffer[:count]
            self._body_left -= count
            self.bytes_in += count
            upstream.write(data)
            if self._body_left == 0:
                self._request_sent()
            return
        data = bytes(buffer)
        buffer.clear()
        try:
            events = self._decoder.feed(data)
        except HTTPError as error:
            self._fail_request(error.status)
            return
        for event in events:
            if isinstance(event, bytes):
                self.bytes_in += len(event)
                upstream.write(encode_chunk(event))
            elif isinstance(event, Trailers):
                pass  # request trailers are not forwarded
            elif isinstance(event, End):
                upstream.write(encode_last_chunk())
                buffer[:0] = event.rest
                self._request_sent()
                return

    def _fail_request(self, status: int) -> None:
        """
        The client's body is malformed or too large: drop the backend
        connection and answer C{status}.
        """
        if self._response_started:
            self._drop_upstream()
            self._abort()
        else:
            self._reject(status)

    def _request_sent(self) -> None:
        self._state = _WAIT
        self._last_io = self.clock.seconds()
        if self.upstream is not None:
            # The client may have been paused by a full backend connection.
            _end_stream(self.upstream.transport, resume=not self._paused)
        if self._buffer and len(self._buffer) > self.settings.limits.max_head:
            self._pause()

    def _exchange_timed_out(self) -> None:
        """
        Nothing moved for the response timeout: a client that stopped
        sending its body gets 408, a backend that has not started answering
        504, and a response that stalled midway is cut.
        """
        if self._state == _BODY and not self._response_started:
            self._fail_request(408)
            return
        backend, pool = self.backend, self.pool
        if backend is not None and pool is not None and self._holding:
            pool.report_failure(backend, "no response in time")
        self._drop_upstream()
        if self._response_started:
            self._abort()
        else:
            self._reject(504)

    # Response (the upstream reports here) ----------------------------------

    def interim_response(self, head: ResponseHead) -> None:
        request = self.request
        self._last_io = self.clock.seconds()
        if (
            head.status == 100
            and request is not None
            and request.expect_continue
            and request.version >= (1, 1)
            and not self._sent_continue
        ):
            self._sent_continue = True
            self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def response_head(self, head: ResponseHead) -> None:
        self._last_io = self.clock.seconds()
        request = self.request
        assert request is not None
        self.status = head.status
        self.upstream_time = self.clock.seconds() - self._upstream_started
        settings = self.settings
        data, self._chunk_out, self._keep_client = response_head(
            head,
            request,
            keep_alive=request.keep_alive and not self._closing,
            remove=settings.remove_response_headers,
            via=settings.policy.via,
        )
        transport = self.transport
        assert transport is not None
        self._out.append(data)
        self._response_started = True

    # Upgrade tunnel -------------------------------------------------------

    def switched(self, head: ResponseHead, rest: bytes) -> None:
        """
        The backend switched protocols: pass the 101 on and relay raw bytes
        both ways until either side closes or the tunnel is idle too long.
        """
        self._cancel_timer()
        self.status = 101
        self.upstream_time = self.clock.seconds() - self._upstream_started
        settings = self.settings
        transport, upstream = self.transport, self.upstream
        assert transport is not None and upstream is not None
        transport.write(
            switching_head(
                head, remove=settings.remove_response_headers, via=settings.policy.via
            )
        )
        self._state = _TUNNEL
        self._response_started = True
        early = bytes(self._buffer)
        self._buffer.clear()
        _end_stream(upstream.transport, resume=False)
        self._tunnel = Tunnel(
            transport, upstream, self.clock, settings.tunnel_timeout, self._tunnel_idle
        )
        self._tunnel.start(early, rest)
        self._resume()

    def tunnel_data(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_backend(data)

    def tunnel_closed(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            _end_stream(upstream.transport, resume=False)
        self._end_tunnel()
        self._release_backend()
        if self._state != _CLOSED:
            self._emit()
            self._close()

    def _end_tunnel(self) -> None:
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.stop()
            self.bytes_in += tunnel.bytes_in
            self.bytes_out += tunnel.bytes_out

    def _tunnel_idle(self) -> None:
        self._end_tunnel()
        self._drop_upstream()
        self._emit()
        self._abort()

    def response_body(self, data: Data) -> None:
        self.bytes_out += len(data)
        self._last_io = self.clock.seconds()
        self._out.append(encode_chunk(data) if self._chunk_out else data)

    def flush_output(self) -> None:
        """
        Send what the last read from the backend produced.
        """
        out = self._out
        if not out:
            return
        transport = self.transport
        sent = send_parts(transport, out)
        out.clear()
        if not sent and self._state != _CLOSED:
            # The client is slower than the backend: from now on the
            # backend connection is paused whenever the client's buffer is
            # full (registered only now, as most responses never need it).
            upstream = self.upstream
            if (
                upstream is not None
                and upstream.transport is not None
                and getattr(transport, "producer", None) is None
            ):
                transport.registerProducer(upstream.transport, True)  # type: ignore[union-attr]

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        request = self.request
        if request is not None and request.te_trailers:
            self._trailers = response_trailers(
                headers, remove=self.settings.remove_response_headers
            )

    def response_end(self) -> None:
        transport = self.transport
        assert transport is not None
        if self._chunk_out:
            self._out.append(encode_last_chunk(self._trailers))
        self.flush_output()
        _end_stream(transport)
        upstream = self.upstream
        self.upstream = None
        self._release_backend()
        still_sending = self._state == _BODY
        if upstream is not None:
            if still_sending:
                # The backend answered before the request body was all sent:
                # neither connection can carry another request.
                upstream.reusable = False
                _end_stream(upstream.transport, resume=False)
            max_idle, idle_timeout = self.settings.keep_alive_for(
                self.pool.name if self.pool is not None else ""
            )
            self.factory.keep_alive.put(upstream, max_idle, idle_timeout)
        self._emit()
        keep = self._keep_client and not still_sending
        self._new_exchange()
        if not keep or self._closing:
            self._state = _CLOSED
            self._close()
            return
        self._state = _HEAD
        self._resume()
        self._since = self.clock.seconds()
        if self._buffer:
            self._idle_wait = False
            self._read_head()
        else:
            self._idle_wait = True

    def upstream_failed(self, reason: str, status: int) -> None:
        upstream, backend, pool, request = (
            self.upstream,
            self.backend,
            self.pool,
            self.request,
        )
        assert pool is not None and backend is not None and request is not None
        self.upstream = None
        self._release_backend()
        if self._state == _CLOSED:
            return
        received = upstream is not None and upstream.received_any
        if self._from_pool and not received:
            # A reused connection the backend had closed meanwhile: not the
            # backend's fault, and the same backend may be asked again.
            self.tried.remove(backend)
        else:
            pool.report_failure(backend, reason)
        retry = (
            not self._response_started
            and not received
            and request.method in IDEMPOTENT
            and request.body == "none"
        )
        if retry:
            self._connect()
        elif self._response_started:
            self._abort()
        else:
            self._reject(status)

    # Ending ------------------------------------------------------------------

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.release_timeout()
        self._release_backend()

    def _release_backend(self) -> None:
        if self._holding and self.pool is not None and self.backend is not None:
            self._holding = False
            self.pool.release(self.backend)

    def _close(self) -> None:
        self._state = _CLOSED
        self._cancel_timer()
        # A registered producer would be resumed instead of the connection
        # closed (see ITransport.loseConnection).
        _end_stream(self.transport, resume=False)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _abort(self) -> None:
        """
        Drop the client connection now, recording the exchange if one was
        under way.
        """
        self._end_tunnel()
        if self.request is not None:
            self._emit()
        self._state = _CLOSED
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
        elif self._state == _HEAD and not self._buffer:
            self._close()
        else:
            self._closing = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._state == _TUNNEL:
            self._end_tunnel()
            upstream = self.upstream
            self.upstream = None
            self._release_backend()
            if upstream is not None and upstream.transport is not None:
                _end_stream(upstream.transport, resume=False)
                upstream.transport.loseConnection()
            self._emit()
        in_flight = self.request is not None and self._state not in (_CLOSED, _TUNNEL)
        self._state = _CLOSED
        self._cancel_timer()
        if self._connecting is not None:
            self._connecting.cancel()
        if in_flight:
            self.status = 499  # the client went away before its response
            self._drop_upstream()
            self._emit()
        self.factory.connections.discard(self)

    def _emit(self) -> None:
        request = self.request
        if not access_events.active or (request is None and self.status == "-"):
            self.request = None
            return
        access_events.emit(
            "{client} {method} {path} {status}",
            client=self.client,
            listener=self.settings.listener,
            protocol="http",
            method=request.method.decode("latin-1") if request else None,
            path=request.target.decode("latin-1") if request else None,
            version=f"HTTP/{request.version[0]}.{request.version[1]}"
            if request
            else None,
            status=self.status,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            pool=self.pool.name if self.pool else None,
            backend=self.backend.name if self.backend else None,
            upstream_time=self.upstream_time,
            duration=self.clock.seconds() - self.started,
            referer=header(request.headers, b"referer") if request else None,
            user_agent=header(request.headers, b"user-agent") if request else None,
        )
        self.request = None
