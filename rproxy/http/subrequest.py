"""Requests rproxy sends on its own, with no client waiting: a cache's
background refresh (stale-while-revalidate).  L{background_request} runs a
request through the same listener settings as a client's (routing, the
route's filters, its pool, retries, keep-alive) and drops the response once
the filters have seen it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger

from rproxy._fastwrite import Data
from rproxy.http.exchange import Exchange, Phase
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.h1 import H1Connection

if TYPE_CHECKING:
    from rproxy.http._codec import Codec
    from rproxy.http.upstream import UpstreamProtocol

__all__ = ["background_request"]

log = Logger(namespace="rproxy.http")

_DONE = Phase.DONE


class _Addresses:
    """
    What a backend attempt reads of a client transport (the addresses a
    PROXY header announces), for a request with no client connection: the
    addresses of the connection whose request caused it.
    """

    def __init__(self, peer: Any, host: Any) -> None:
        self._peer = peer
        self._host = host

    def getPeer(self) -> Any:  # noqa: N802 (Twisted's name)
        return self._peer

    def getHost(self) -> Any:  # noqa: N802 (Twisted's name)
        return self._host


class _Headless(H1Connection):
    """
    The codec of one background request: it reads nothing and writes
    nothing; it ends the request when its response ended or failed, and
    times it out as a client connection would.
    """

    def __init__(self, parent: Codec, done: Deferred[None]) -> None:
        H1Connection.__init__(self, parent.factory)
        self.client = parent.client
        transport = parent.transport
        self.transport = _Addresses(
            transport.getPeer() if transport is not None else None,
            transport.getHost() if transport is not None else None,
        )
        self._done: Deferred[None] | None = done
        self._watch: IDelayedCall | None = None

    def start(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._check()
        exchange.begin()

    def _check(self) -> None:
        # Wakes at the exchange's response timeout after its last I/O.
        self._watch = None
        exchange = self.exchange
        if exchange is None or exchange.phase is _DONE:
            return
        timeout = exchange.response_timeout
        idle = self.clock.seconds() - exchange.last_io
        if idle >= timeout:
            exchange.timed_out()
            return
        self._watch = self.clock.callLater(timeout - idle, self._check)

    def _finish(self) -> None:
        self.exchange = None
        watch, self._watch = self._watch, None
        if watch is not None and watch.active():
            watch.cancel()
        done, self._done = self._done, None
        if done is not None:
            done.callback(None)

    # What the exchange calls on its codec ---------------------------------

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def producer(self) -> IPushProducer:
        return self

    def body_forwarded(self) -> None:
        pass

    def wake_by(self, when: float) -> None:
        pass

    def send_interim(self, exchange: Exchange, head: ResponseHead) -> None:
        pass

    def send_head(self, exchange: Exchange, head: ResponseHead) -> None:
        pass

    def send_body(self, data: Data) -> None:
        pass

    def flush(self) -> None:
        pass

    def send_end(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        pass

    def exchange_done(self, exchange: Exchange) -> None:
        self._finish()

    def fail(self, exchange: Exchange, status: int) -> None:
        exchange.status = status
        exchange.record()
        self._finish()

    def open_tunnel(
        self,
        exchange: Exchange,
        head: ResponseHead,
        upstream: UpstreamProtocol,
        rest: bytes,
    ) -> None:
        # Nothing asked for a switch; a backend that switches anyway is cut.
        upstream.transport.loseConnection()
        exchange.tunnel_ended(0, 0)
        self._finish()


def background_request(
    exchange: Exchange, head: RequestHead, notes: Mapping[str, Any]
) -> Deferred[None]:
    """
    Send C{head} (a request without a body) through the listener settings
    C{exchange} ran under, with no client: routed, filtered and proxied as
    a client's request, its response read and dropped once the response
    filters have seen it.  The new exchange's C{notes} start as a copy of
    C{notes}.

    @return: fires (never fails) when the request has ended.
    """
    if head.body != "none":
        raise ValueError("a background request has no body")
    done: Deferred[None] = Deferred()
    codec = _Headless(exchange.codec, done)
    request = Exchange(codec, exchange.settings, head)
    request.notes.update(notes)
    try:
        codec.start(request)
    except Exception:
        log.failure("background request for {target} failed", target=head.target)
        codec._finish()
    return done
