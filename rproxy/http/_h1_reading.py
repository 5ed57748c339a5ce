"""Reading requests on an HTTP/1.1 client connection: request heads
(pipelined ones one at a time), each one's exchange begun, and its body
(by length, or chunked and decoded) passed to the exchange."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.http import _h1_ending
from rproxy.http._h1_states import BODY, HEAD, WAIT
from rproxy.http.chunked import ChunkedDecoder, End, Trailers
from rproxy.http.exchange import Exchange
from rproxy.http.framing import (
    HTTPError,
    RequestHead,
    check_incomplete_head,
    find_head_end,
    parse_request_head,
)

if TYPE_CHECKING:
    from rproxy.http.h1 import H1Connection

__all__ = ["begin", "body_done", "read_body", "read_head"]


def read_head(conn: H1Connection) -> None:
    if conn._beginning:
        # An exchange answered at once (a filter's local reply) while
        # it began: the next request is read when that call returns,
        # not inside it (pipelined requests would recurse).
        conn._again = True
        return
    limits = conn.settings.limits
    buffer = conn._buffer
    while conn._state == HEAD:
        end = find_head_end(buffer, 0, conn._search_from)
        try:
            if end < 0:
                check_incomplete_head(buffer, 0, limits)
                if conn._read_closed:
                    _h1_ending.head_cut_short(conn)
                    return
                conn._search_from = max(len(buffer) - 3, 0)
                return
            head = parse_request_head(bytes(buffer[:end]), limits)
        except HTTPError as error:
            _h1_ending.reject(conn, error.status)
            return
        del buffer[:end]
        conn._search_from = 0
        conn._beginning = True
        try:
            begin(conn, head)
        finally:
            conn._beginning = False
        if not conn._again:
            return
        conn._again = False


def begin(conn: H1Connection, head: RequestHead) -> None:
    # Each request follows the listener's settings of the moment it
    # begins: a reload changes them for kept-alive connections too.
    conn.settings = settings = conn.factory.settings
    conn.exchange = exchange = Exchange(conn, settings, head)
    conn._writer.next_response()
    if head.body == "none":
        conn._state = WAIT
    else:
        conn._state = BODY
        conn._body_since = conn._last_read = exchange.started
        conn._body_read = 0
        if head.body == "length":
            conn._body_left = head.content_length or 0
            conn._decoder = None
        else:
            conn._decoder = ChunkedDecoder(settings.limits)
    exchange.begin()
    if conn._state == BODY and conn.exchange is exchange and conn._buffer:
        read_body(conn)


def read_body(conn: H1Connection) -> None:
    exchange = conn.exchange
    buffer = conn._buffer
    if exchange is None or not buffer or conn._paused:
        return
    if conn._decoder is None:
        count = min(conn._body_left, len(buffer))
        data = bytes(buffer[:count])
        del buffer[:count]
        conn._body_left -= count
        conn._body_read += count
        if count:
            exchange.request_body(data)
        if conn._body_left == 0 and conn.exchange is exchange:
            body_done(conn, exchange)
        elif conn._read_closed and not buffer and conn.exchange is exchange:
            _h1_ending.give_up(conn, 499)
        return
    data = bytes(buffer)
    buffer.clear()
    try:
        events = conn._decoder.feed(data)
    except HTTPError as error:
        exchange.fail(error.status)
        return
    for event in events:
        if conn.exchange is not exchange or conn._state != BODY:
            return
        if isinstance(event, bytes):
            conn._body_read += len(event)
            exchange.request_body(event)
        elif isinstance(event, Trailers):
            pass  # request trailers are not forwarded
        elif isinstance(event, End):
            buffer[:0] = event.rest
            body_done(conn, exchange)
            return
    if conn._read_closed and conn.exchange is exchange:
        _h1_ending.give_up(conn, 499)


def body_done(conn: H1Connection, exchange: Exchange) -> None:
    conn._state = WAIT
    conn._decoder = None
    exchange.request_end()
    if len(conn._buffer) > conn.settings.limits.max_head:
        conn.pause_reading()
