"""The state one HTTP client connection keeps, per connection and per
request, shared by the parts of L{rproxy.http.server.HTTPFrontProtocol}.

The front protocol is split by concern into this base, the backend side of
an exchange (L{rproxy.http._backend_side}) and the response side
(L{rproxy.http._response_side}); each part is a class the protocol inherits,
so a request costs no extra objects or indirection on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol

from rproxy._fastwrite import Data
from rproxy.accesslog import access_events
from rproxy.backends import Backend, Pool
from rproxy.http._tunnel import Tunnel
from rproxy.http.chunked import ChunkedDecoder
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool
from rproxy.http.messages import header
from rproxy.http.upstream import UpstreamProtocol
from rproxy.stats import LATENCY_BUCKETS, NO_RESPONSE

if TYPE_CHECKING:
    from rproxy.http.listener import HTTPProxyFactory

#: methods whose request may be sent again after a backend failed mid-way.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def retryable(request: RequestHead) -> bool:
    """
    Whether C{request} may be sent again after it reached a backend: an
    idempotent method and no body.
    """
    return request.method in IDEMPOTENT and request.body == "none"


#: where a connection is: reading a request head, sending a request body,
#: waiting for (or relaying) the response, tunnelling after a 101, closed.
HEAD, BODY, WAIT, TUNNEL, CLOSED = range(5)


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


class FrontState(Protocol):
    """
    A client connection's state and the small operations every part of the
    front protocol uses.  Not used on its own.
    """

    _last_io: float
    _since: float
    _upstream_started: float

    def __init__(self, factory: HTTPProxyFactory):
        self.factory = factory
        self.settings = factory.settings
        self.clock = factory.clock
        self.client = ""
        self._buffer = bytearray()
        self._search_from = 0
        self._state = HEAD
        self._timer: IDelayedCall | None = None
        self._tunnel: Tunnel | None = None
        #: a 101 that came before the request body was all sent: its head
        #: and the backend's bytes after it, held until the body is through.
        self._switch: tuple[ResponseHead, bytearray] | None = None
        #: response bytes gathered while one read from the backend is handled,
        #: sent in one go (a head and a small body in one packet).
        self._out: list[Data] = []
        #: body bytes of a re-chunked response read in this pass, framed as
        #: one chunk when sent.
        self._chunk_parts: list[Data] = []
        self._idle_wait = False
        #: close once the current response has been sent.
        self._closing = False
        #: C{_closing} because the client sent a FIN (not for a shutdown):
        #: requests it pipelined before the FIN are still answered.
        self._closing_for_eof = False
        #: the client shut its write side: nothing more will be read.
        self._read_closed = False
        self._paused = False
        #: idle backend connections kept for this client only (pools that
        #: send PROXY headers); made on first use.
        self._own_keep_alive: ClientKeepAlive | None = None
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

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

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

    def _emit(self) -> None:
        """
        The exchange has ended: count it, and emit its access event if
        anyone records them.
        """
        request = self.request
        status = self.status
        if request is None and status == "-":
            return
        self._count(status)
        if not access_events.active:
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

    def _count(self, status: int | str) -> None:
        # Inlined status_class and LatencyHistogram.observe: once per request.
        index = (
            status // 100 - 1
            if type(status) is int and 100 <= status < 600
            else NO_RESPONSE
        )
        stats = self.factory.stats
        stats.requests[index] += 1
        bytes_in, bytes_out = self.bytes_in, self.bytes_out
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out
        backend = self.backend
        if backend is None:
            return
        backend.bytes_in += bytes_in
        backend.bytes_out += bytes_out
        upstream_time = self.upstream_time
        if upstream_time is None:
            backend.responses[NO_RESPONSE] += 1
            return
        backend.responses[index] += 1
        latency = backend.latency
        latency.counts[bisect_left(LATENCY_BUCKETS, upstream_time)] += 1
        latency.sum += upstream_time

    # Defined by HTTPFrontProtocol ----------------------------------------

    def _reject(self, status: int) -> None:
        raise NotImplementedError

    def _give_up(self, status: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _read_head(self) -> None:
        raise NotImplementedError

    def _end_tunnel(self) -> None:
        raise NotImplementedError

    def _keep_alive_for(
        self, pool: Pool, upstream: UpstreamProtocol | None = None
    ) -> KeepAlivePool | ClientKeepAlive:
        raise NotImplementedError

    def _complete_switch(self) -> None:
        raise NotImplementedError
