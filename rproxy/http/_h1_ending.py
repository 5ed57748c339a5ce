"""How an HTTP/1.1 client connection ends early: a request that cannot be
read (rproxy answers and closes), a client that gave up half-way, and a
client's FIN (its half-close)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.http._h1_states import BODY, CLOSED, HANDED_OVER, HEAD, SNIFF, TUNNEL
from rproxy.http._phase import Phase
from rproxy.http.exchange import Exchange

if TYPE_CHECKING:
    from rproxy.http.h1 import H1Connection

__all__ = ["give_up", "head_cut_short", "read_closed", "reject"]

_DONE = Phase.DONE


def reject(conn: H1Connection, status: int) -> None:
    """
    Answer C{status} ourselves and close the connection: a request that
    cannot be read (no exchange began, or it is ended now).
    """
    exchange = conn.exchange
    if exchange is not None and exchange.phase is not _DONE:
        exchange.fail(status)
        return
    record = Exchange(conn, conn.settings, None)
    record.status = status
    conn.fail(record, status)


def give_up(conn: H1Connection, status: int) -> None:
    """
    The client sent a FIN half-way through a request: record C{status},
    answer nothing more and close.
    """
    exchange, conn.exchange = conn.exchange, None
    sent = conn._writer.sent
    if exchange is not None:
        exchange.give_up(status)
    else:
        record = Exchange(conn, conn.settings, None)
        record.give_up(status)
    if sent:
        conn._abort()
    else:
        conn._close()


def head_cut_short(conn: H1Connection) -> None:
    """
    Nothing more will come, and the buffer holds no whole request head:
    a partial one was given up; mere empty lines are no request.
    """
    if conn._buffer.strip(b"\r\n"):
        give_up(conn, 400)
    else:
        conn._close()


def read_closed(conn: H1Connection) -> None:
    """
    The client shut its write side (FIN): answer what it sent in full,
    then close; give up a request it stopped sending half-way, or one
    that waits in its pool's queue (a client that closed its connection
    looks the same, and its wait would only keep others waiting).
    """
    if conn._read_closed or conn._state == CLOSED:
        # Resuming a half-closed transport reads the FIN again.
        return
    conn._read_closed = True
    state = conn._state
    if state == HANDED_OVER:
        conn._h2.shut_down(False)  # the streams it sent are answered
    elif state == TUNNEL:
        exchange = conn.exchange
        upstream = exchange.upstream if exchange is not None else None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.loseWriteConnection()
    elif state in (HEAD, SNIFF):
        head_cut_short(conn)
    elif state == BODY:
        if conn._paused and conn._buffer:
            # What it sent before the FIN waits to be read: judge the
            # body once it has been.
            conn._closing = conn._closing_for_eof = True
            return
        give_up(conn, 499)
    elif conn.exchange is not None and conn.exchange.queued:
        give_up(conn, 499)
    elif not conn._closing:
        # A whole request is being answered.
        conn._closing = True
        conn._closing_for_eof = True
