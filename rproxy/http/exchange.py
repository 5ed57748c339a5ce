"""One HTTP request and its response: L{Exchange}.

An exchange owns what was asked (the parsed head), where it went (route,
pool, backend, the upstream connection, the backends tried), what came back
(status, bytes), how long it took, and one explicit L{Phase}.  The access log,
the counters and the filters read it.  It never writes wire bytes: the codec
it belongs to (L{rproxy.http._codec.Codec}: an HTTP/1.1 connection or an
HTTP/2 stream) turns request bytes into
calls on it and its neutral response events (a L{ResponseHead}, body bytes,
an end with trailers) back into bytes.

Filters (L{rproxy.http.filters}) run only where the listener or the route has
some: an exchange without filters allocates nothing for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from rproxy._fastwrite import Data
from rproxy.attempts import AttemptState, BackendAttempt
from rproxy.backends import Backend, Pool
from rproxy.http import _answers, _connecting, _switch
from rproxy.http._phase import BODY_BUFFER, FRESH_REUSE, Phase, retryable
from rproxy.http._record import count, emit
from rproxy.http.filters import LocalReply
from rproxy.http.filters._chain import (
    BODY,
    END,
    HEAD,
    NO_FILTERS,
    REQUEST,
    RESPONSE,
    FilterChain,
    Pipe,
)
from rproxy.http.framing import RequestHead, ResponseHead, copy_head
from rproxy.http.headers import forward_response_headers
from rproxy.http.messages import response_trailers
from rproxy.http.routing import Route
from rproxy.http.upstream import UpstreamFactory, UpstreamProtocol

if TYPE_CHECKING:
    from rproxy.http._codec import Codec
    from rproxy.http.listener import HTTPSettings

__all__ = ["BODY_BUFFER", "Exchange", "Phase", "retryable"]

# Module names for the members: an Enum member lookup costs ten times a
# global one, and these run on every request.
_FILTERING = Phase.FILTERING
_CONNECTING = Phase.CONNECTING
_PROXYING = Phase.PROXYING
_TUNNEL = Phase.TUNNEL
_DONE = Phase.DONE


class Exchange:
    """
    One request on a client connection, from its head to the end of its
    response.

    @ivar request: the request head as the client sent it (filters may
        change it in place before it is routed).
    @ivar target: the request-target sent upstream (a route may strip a
        prefix).
    @ivar response: the final response head, once there is one.
    @ivar status: what the client got: a status, or C{"-"} before anything.
    @ivar notes: a dict filters may keep their own per-request state in
        (made on first use).
    @ivar upstream_error: why rproxy answers itself because the backend
        failed (the response filters see that answer as a response head),
        or C{None}.
    """

    # What most exchanges never change is a class default: an exchange is
    # made per request, and each attribute set in __init__ costs it.
    target: bytes = b""
    route: Route | None = None
    pool: Pool | None = None
    backend: Backend | None = None
    upstream: UpstreamProtocol | None = None
    response: ResponseHead | None = None
    #: the backends tried, in order (the attempt's list, once there is one).
    tried: Sequence[Backend] = ()
    status: int | str = "-"
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_time: float | None = None
    phase: Phase = _FILTERING
    #: the final response head was handed to the codec.
    response_started: bool = False
    _upstream_started: float = 0.0
    _attempt: BackendAttempt | None = None
    #: request body bytes held until a backend connection is attached.
    _held: list[bytes] | None = None
    _held_size: int = 0
    #: the request body reached the backend connection, whole.
    _request_sent: bool = False
    #: the request body has all arrived from the client.
    _request_ended: bool = False
    _trailers: list[tuple[bytes, bytes]] | tuple[()] = ()
    #: a 101 that came before the request body was all sent.
    _switch: tuple[ResponseHead, bytearray] | None = None
    _chain: FilterChain = NO_FILTERS
    _requests: Pipe | None = None
    _responses: Pipe | None = None
    #: the backend connection a suspended response filter paused.
    _paused_upstream: Any = None
    _notes: dict[str, Any] | None = None
    _recorded: bool = False
    upstream_error: str | None = None
    #: the response is rproxy's own (a filter's answer or an error), not a
    #: backend's.
    _local: bool = False

    def __init__(
        self, codec: Codec, settings: HTTPSettings, request: RequestHead | None
    ) -> None:
        self.codec = codec
        self.factory = codec.factory
        self.settings = settings
        self.clock = codec.clock
        self.client = codec.client
        self.request = request
        self.started = self.last_io = self.clock.seconds()

    @property
    def notes(self) -> dict[str, Any]:
        if self._notes is None:
            self._notes = {}
        return self._notes

    @property
    def response_timeout(self) -> float:
        """
        How long this exchange may go without a byte moving: its pool's
        response timeout, or the listener's before a pool is chosen.
        """
        attempt = self._attempt
        if attempt is not None:
            return attempt.policy.response_timeout
        return self.settings.response_timeout

    # Request side ------------------------------------------------------------

    def begin(self) -> None:
        """
        The request head is in: run the listener's filters, route, run the
        route's filters, then send it to a backend.
        """
        head = self.request
        assert head is not None
        chain = self.settings.filters
        if chain.request_head:
            hooks: list[Any] = [*chain.request_head, self._route_hook]
            self._requests = self._request_pipe(hooks)
            self._requests.push(HEAD, head)
        elif _connecting.route(self, head):
            if self._chain.requests:
                self._after_route(head)
            else:
                self.phase = _CONNECTING
                _connecting.connect(self)

    def _request_pipe(self, heads: Sequence[Any]) -> Pipe:
        chain = self._chain
        return Pipe(self, REQUEST, (heads, chain.request_body, chain.request_end))

    def _route_hook(self, _: Exchange, head: RequestHead) -> None:
        # Routing as the last listener hook: the route's hooks follow it.
        pipe = self._requests
        assert pipe is not None
        if not _connecting.route(self, head):
            pipe.close()
            return
        chain = self._chain
        listener_hooks = len(self.settings.filters.request_head)
        heads = pipe.hooks[HEAD]
        assert isinstance(heads, list)  # begin() made it a list to grow
        heads.extend(chain.request_head[listener_hooks:])
        pipe.hooks = (heads, chain.request_body, chain.request_end)

    def _after_route(self, head: RequestHead) -> None:
        chain = self._chain
        if chain.requests:
            self._requests = self._request_pipe(chain.request_head)
            self._requests.push(HEAD, head)
        else:
            self._head_filtered(head)

    def _head_filtered(self, head: RequestHead) -> None:
        self.phase = _CONNECTING
        _connecting.connect(self)

    def request_body(self, data: bytes) -> None:
        """
        Request body bytes from the codec (decoded if chunked).
        """
        self.bytes_in += len(data)
        self.last_io = self.clock.seconds()
        if self._requests is not None:
            self._requests.push(BODY, data)
        else:
            self._send_body(data)

    def request_end(self) -> None:
        """
        The request body has all arrived.
        """
        if self._requests is not None:
            self._requests.push(END, None)
        else:
            self._send_end(None)

    def _send_body(self, data: bytes) -> None:
        upstream = self.upstream
        held = self._held
        if upstream is not None and not held:
            upstream.send_body(data)
            return
        if held is None:
            held = self._held = []
        held.append(data)
        self._held_size += len(data)
        if self._held_size > BODY_BUFFER:
            self.codec.pause_reading()

    def _send_end(self, _: object) -> None:
        self._request_ended = True
        if self.upstream is not None and not self._held:
            self._body_sent()

    def _body_sent(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        upstream.end_body()
        self._request_sent = True
        self.last_io = self.clock.seconds()
        # The client may have been paused by a full backend connection.
        upstream.stop_producer(resume=False)
        self.codec.body_forwarded()
        if self._switch is not None:
            _switch.complete_switch(self)

    def _resume_client(self) -> None:
        if self._held_size <= BODY_BUFFER:
            self.codec.resume_reading()

    # Backend side ------------------------------------------------------------

    def _gave_up(self, status: int) -> None:
        _answers.gave_up(self, status)

    @property
    def queued(self) -> bool:
        """
        Whether the request waits in its pool's queue for a backend to have
        room.
        """
        attempt = self._attempt
        return attempt is not None and attempt.state is AttemptState.QUEUED

    def _upstream_factory(self, backend: Backend) -> UpstreamFactory:
        attempt = self._attempt
        assert attempt is not None
        return UpstreamFactory(backend, announced=bool(attempt.preface))

    def _reuse(self, backend: Backend) -> UpstreamProtocol | None:
        attempt, request = self._attempt, self.request
        assert attempt is not None and request is not None
        private = attempt.policy.send_proxy is not None
        return self.codec.keep_alive_for(private).take(
            backend, None if retryable(request) else FRESH_REUSE
        )

    def _connected(self, backend: Backend, upstream: UpstreamProtocol) -> None:
        self.backend = backend
        if self.phase is _DONE:
            upstream.transport.loseConnection()
            return
        _connecting.attach(self, upstream)

    def _release_backend(self) -> None:
        attempt = self._attempt
        if attempt is not None:
            attempt.cancel()

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.release_timeout()
        self._release_backend()

    # What the upstream connection reports (IResponseSink) --------------------

    def interim_response(self, head: ResponseHead) -> None:
        self.last_io = self.clock.seconds()
        self.codec.send_interim(self, head)

    def response_head(self, head: ResponseHead) -> None:
        now = self.last_io = self.clock.seconds()
        self.status = head.status
        self.upstream_time = now - self._upstream_started
        head.headers = forward_response_headers(
            head.headers, via=self.settings.policy.via
        )
        if self._chain.responses:
            # Filters may change the head (a new body length): the backend
            # connection reads the body as its own copy says.
            head = self.response = copy_head(head)
            self._response_pipe().push(HEAD, head)
        else:
            self.response = head
            self.response_started = True
            self.codec.send_head(self, head)

    def _response_pipe(self) -> Pipe:
        pipe = self._responses
        if pipe is None:
            chain = self._chain
            pipe = self._responses = Pipe(
                self,
                RESPONSE,
                (chain.response_head, chain.response_body, chain.response_end),
            )
        return pipe

    # What the filter pipes report (PipeOwner) -------------------------------

    def pipe_deliver(self, side: int, kind: int, value: Any) -> None:
        if side == REQUEST:
            if kind == HEAD:
                self._head_filtered(value)
            elif kind == BODY:
                self._send_body(value)
            else:
                self._send_end(value)
        elif kind == HEAD:
            self._start_response(value)
        elif kind == BODY:
            self.codec.send_body(value)
        else:
            self._end_response(value)

    def pipe_local(self, side: int, reply: LocalReply, hook: Any) -> None:
        chain = self._chain if self.route is not None else self.settings.filters
        through = chain.outer(hook)
        if side == REQUEST:
            self.reply(reply, through)
        else:
            _answers.replace_response(self, reply, through)

    def pipe_failed(self, failure: Failure) -> None:
        _answers.filter_failed(self, failure)

    def pipe_pause(self, side: int) -> None:
        if side == REQUEST:
            self.codec.pause_reading()
        else:
            self._pause_upstream()

    def pipe_resume(self, side: int) -> None:
        if side == REQUEST:
            self._resume_client()
        else:
            self._resume_upstream()

    def _start_response(self, head: ResponseHead) -> None:
        self.response_started = True
        self.status = head.status
        self.codec.send_head(self, head)

    def response_body(self, data: Data) -> None:
        self.bytes_out += len(data)
        self.last_io = self.clock.seconds()
        if self._responses is not None:
            self._responses.push(BODY, data)
        else:
            self.codec.send_body(data)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._trailers = response_trailers(headers)

    def flush_output(self) -> None:
        self.codec.flush()

    def response_end(self) -> None:
        if self._responses is not None:
            # Filters may change the trailers in place.
            self._responses.push(END, list(self._trailers))
        else:
            self._end_response(self._trailers)

    def _end_response(self, trailers: list[tuple[bytes, bytes]] | tuple[()]) -> None:
        self.phase = _DONE
        codec = self.codec
        codec.send_end(trailers)
        if self._local:
            self.record()
            codec.exchange_done(self)
            return
        upstream = self.upstream
        self.upstream = None
        attempt = self._attempt
        assert attempt is not None
        # A whole response: the backend's run of failures (connects, resets,
        # garbage, timeouts) is over.
        attempt.finished()
        if self._paused_upstream is not None:
            self._resume_upstream()  # a response filter held the end
        if upstream is not None:
            if not self._request_sent:
                # The backend answered before the request body was all sent:
                # neither connection can carry another request.
                upstream.reusable = False
                upstream.stop_producer(resume=False)
            policy = attempt.policy
            codec.keep_alive_for(upstream.announced).put(
                upstream, policy.keep_alive_max_idle, policy.keep_alive_timeout
            )
        self.record()
        codec.exchange_done(self)

    def upstream_failed(self, reason: str, status: int) -> None:
        _connecting.upstream_failed(self, reason, status)

    # Protocol switches -------------------------------------------------------

    def switched(self, head: ResponseHead, rest: bytes) -> None:
        """The backend switched protocols (see L{_switch.switched})."""
        _switch.switched(self, head, rest)

    def tunnel_data(self, data: bytes) -> None:
        _switch.tunnel_data(self, data)

    def tunnel_closed(self) -> None:
        _switch.tunnel_closed(self)

    def tunnel_ended(self, bytes_in: int, bytes_out: int) -> None:
        """The tunnel closed (either side, or idle): record it."""
        _switch.tunnel_ended(self, bytes_in, bytes_out)

    # Local answers and failures ----------------------------------------------

    def reply(self, reply: LocalReply, through: FilterChain = NO_FILTERS) -> None:
        """Answer C{reply} instead of proxying (see L{_answers.reply})."""
        _answers.reply(self, reply, through)

    def fail(self, status: int) -> None:
        """The exchange failed: answer C{status} (see L{_answers.fail})."""
        _answers.fail(self, status)

    def give_up(self, status: int | str) -> None:
        """The client stopped: record C{status} (see L{_answers.give_up})."""
        _answers.give_up(self, status)

    def timed_out(self) -> None:
        """Nothing moved for the response timeout (see L{_answers.timed_out})."""
        _answers.timed_out(self)

    def _pause_upstream(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            self._paused_upstream = upstream.transport
            upstream.transport.pauseProducing()
        # A filter suspended again after it let some body through.
        self.codec.flush()

    def _resume_upstream(self) -> None:
        # Resume the connection that was paused (the response may have
        # ended meanwhile: self.upstream is gone), and send what the filters
        # let through (no read from the backend is under way to flush it).
        transport, self._paused_upstream = self._paused_upstream, None
        if transport is not None and not transport.disconnecting:
            transport.resumeProducing()
        self.codec.flush()

    def record(self) -> None:
        """
        Count the exchange and emit its access event, once.
        """
        if self._recorded:
            return
        self._recorded = True
        count(self)
        emit(self)
        # The attempt and the pipes call back into the exchange: dropping
        # them here frees the whole exchange by reference counting, without
        # waiting for (and paying for) the cyclic garbage collector.
        self._attempt = None
        for pipe in (self._requests, self._responses):
            if pipe is not None:
                pipe.close()
        self._requests = self._responses = None
