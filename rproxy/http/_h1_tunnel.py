"""An HTTP/1.1 client connection after a 101: the switch passed on, raw
bytes relayed both ways (L{Tunnel}) until either side closes or the tunnel
is idle too long."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from rproxy.http._h1_states import TUNNEL
from rproxy.http._tunnel import Tunnel
from rproxy.http.framing import ResponseHead
from rproxy.http.messages import switching_head
from rproxy.http.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange
    from rproxy.http.h1 import H1Connection

__all__ = ["end_tunnel", "open_tunnel", "tunnel_idle"]


def open_tunnel(
    conn: H1Connection,
    exchange: Exchange,
    head: ResponseHead,
    upstream: UpstreamProtocol,
    rest: bytes,
) -> None:
    """
    Pass the 101 on and relay raw bytes both ways until either side
    closes or the tunnel is idle too long.
    """
    conn._cancel_timer()
    transport = conn.transport
    assert transport is not None
    transport.write(switching_head(head))
    conn._writer.sent = True
    conn._state = TUNNEL
    early = bytes(conn._buffer)
    conn._buffer.clear()
    conn._tunnel = Tunnel(
        transport,
        upstream,
        conn.clock,
        conn.settings.tunnel_timeout,
        partial(tunnel_idle, conn),
    )
    conn._tunnel.start(early, rest)
    if conn._read_closed:
        # The client sent its FIN while waiting for the 101.
        upstream.transport.loseWriteConnection()
        return
    conn.resume_reading()


def end_tunnel(conn: H1Connection) -> None:
    tunnel, conn._tunnel = conn._tunnel, None
    exchange, conn.exchange = conn.exchange, None
    if tunnel is not None:
        tunnel.stop()
        if exchange is not None:
            exchange.tunnel_ended(tunnel.bytes_in, tunnel.bytes_out)


def tunnel_idle(conn: H1Connection) -> None:
    exchange = conn.exchange
    upstream = exchange.upstream if exchange is not None else None
    end_tunnel(conn)
    if upstream is not None and upstream.transport is not None:
        upstream.transport.abortConnection()
    conn._abort()
