"""An exchange whose backend switched protocols (a 101): the switch waits
for the request body, the 101 goes through the response filters, and the
codec relays raw bytes both ways until either side closes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from rproxy.http._answers import filter_failed
from rproxy.http._phase import Phase
from rproxy.http.framing import ResponseHead
from rproxy.http.headers import forward_response_headers

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "complete_switch",
    "open_tunnel",
    "switched",
    "tunnel_closed",
    "tunnel_data",
    "tunnel_ended",
]

_TUNNEL = Phase.TUNNEL
_DONE = Phase.DONE


def switched(exchange: Exchange, head: ResponseHead, rest: bytes) -> None:
    """
    The backend switched protocols.  A 101 may come before the request
    body was all sent: the client still sends the rest of it before any
    byte of the new protocol, and it must reach the backend framed as
    announced, so the switch waits for the body and the backend
    connection is not read until then.
    """
    attempt, upstream = exchange._attempt, exchange.upstream
    assert attempt is not None and upstream is not None
    attempt.succeeded()
    exchange.upstream_time = exchange.clock.seconds() - exchange._upstream_started
    if not exchange._request_sent:
        exchange._switch = (head, bytearray(rest))
        upstream.transport.pauseProducing()
        return
    open_tunnel(exchange, head, rest)


def complete_switch(exchange: Exchange) -> None:
    switch, exchange._switch = exchange._switch, None
    upstream = exchange.upstream
    assert switch is not None and upstream is not None
    upstream.transport.resumeProducing()
    open_tunnel(exchange, switch[0], bytes(switch[1]))


def open_tunnel(exchange: Exchange, head: ResponseHead, rest: bytes) -> None:
    upstream = exchange.upstream
    assert upstream is not None
    head.headers = forward_response_headers(
        head.headers,
        via=exchange.settings.policy.via,
        keep_upgrade=True,
    )
    for hook in exchange._chain.response_head:
        # A 101 can only be changed: there is no waiting for it or
        # answering in its place once the backend has switched.
        try:
            result = hook(exchange, head)
            if result is not None:
                raise TypeError(f"a response_head hook returned {result!r} for a 101")
        except Exception:
            filter_failed(exchange, Failure())
            return
    exchange.status = 101
    exchange.phase = _TUNNEL
    exchange.response_started = True
    upstream.stop_producer(resume=False)
    exchange.codec.open_tunnel(exchange, head, upstream, rest)


def tunnel_data(exchange: Exchange, data: bytes) -> None:
    if exchange._switch is not None:
        exchange._switch[1].extend(data)  # held until the request body is sent
    else:
        exchange.codec.tunnel_data(data)


def tunnel_closed(exchange: Exchange) -> None:
    upstream, exchange.upstream = exchange.upstream, None
    if upstream is not None:
        upstream.stop_producer(resume=False)
    if exchange._switch is not None:
        # Switched, then gone before the request body was through: the
        # client has seen nothing of it.
        exchange._switch = None
        exchange._release_backend()
        if exchange.phase is not _DONE:
            exchange.fail(502)
        return
    exchange._release_backend()
    exchange.codec.tunnel_closed(exchange)


def tunnel_ended(exchange: Exchange, bytes_in: int, bytes_out: int) -> None:
    """
    The tunnel closed (either side, or idle): record it.
    """
    exchange.bytes_in += bytes_in
    exchange.bytes_out += bytes_out
    exchange.phase = _DONE
    exchange.upstream = None
    exchange._release_backend()
    exchange.record()
