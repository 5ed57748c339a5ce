"""The timers of an HTTP/1.1 client connection: one timer per connection,
whose state says which timeouts apply (the request head's, keep-alive, the
request body's read timeout and minimum rate, the exchange's response
timeout) and since when."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.http._h1_ending import reject
from rproxy.http._h1_states import BODY, HEAD, SNIFF, WAIT

if TYPE_CHECKING:
    from rproxy.http.h1 import H1Connection

__all__ = ["BODY_RATE_GRACE", "body_too_slow", "tick"]

#: seconds a request body may take before its minimum rate applies: after
#: them it must have come at C{request_body_min_rate} on average.
BODY_RATE_GRACE = 5.0


def tick(conn: H1Connection) -> None:
    conn._timer = None
    state = conn._state
    now = conn.clock.seconds()
    settings = conn.settings
    if state in (HEAD, SNIFF):
        timeout = (
            settings.keep_alive_timeout
            if conn._idle_wait
            else settings.request_head_timeout
        )
        if now >= conn._since + timeout:
            if conn._buffer:
                reject(conn, 408)
            else:
                conn._close()
            return
        remaining = conn._since + timeout - now
    elif state in (BODY, WAIT):
        exchange = conn.exchange
        if exchange is None:
            return
        if state == BODY and not conn._paused and body_too_slow(conn, now):
            return
        deadline = exchange.last_io + exchange.response_timeout
        if now >= deadline:
            exchange.timed_out()
            return
        remaining = deadline - now
    else:
        return
    conn._timer = conn.clock.callLater(
        min(remaining, settings.shortest_timeout), conn._tick
    )


def body_too_slow(conn: H1Connection, now: float) -> bool:
    """
    Answer 408 to a client that stopped sending its body, or sends it
    more slowly than the minimum rate.
    """
    settings = conn.settings
    stats = conn.factory.stats
    if now - conn._last_read >= settings.request_body_timeout:
        stats.request_body_timeouts += 1
    elif settings.request_body_min_rate and now >= (
        conn._body_since
        + BODY_RATE_GRACE
        + conn._body_read / settings.request_body_min_rate
    ):
        stats.request_body_too_slow += 1
    else:
        return False
    exchange = conn.exchange
    assert exchange is not None
    exchange.fail(408)
    return True
