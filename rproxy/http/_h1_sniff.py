"""The first bytes of a client connection on a listener that speaks HTTP/2
too: the connection goes on as HTTP/1.1, or is handed over to the HTTP/2
codec (L{rproxy.http.h2}) when TLS negotiated C{h2} or, where prior
knowledge is allowed, the bytes begin with the HTTP/2 connection preface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.http._h1_states import HANDED_OVER, HEAD

if TYPE_CHECKING:
    from rproxy.http.h1 import H1Connection

__all__ = ["PREFACE", "hand_over", "sniff"]

#: what a client speaking HTTP/2 sends first (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def sniff(conn: H1Connection, data: bytes) -> None:
    """
    The first bytes of a connection on a listener that speaks HTTP/2:
    hand the connection to the HTTP/2 codec if TLS negotiated C{h2}, or
    (where prior knowledge is allowed) if it begins with the HTTP/2
    connection preface; otherwise read HTTP/1.1 requests.
    """
    http2 = conn.settings.http2
    negotiated = getattr(conn.transport, "negotiatedProtocol", None)
    if negotiated == b"h2":
        hand_over(conn, data)
        return
    if negotiated is None and http2 is not None and http2.prior_knowledge:
        buffer = conn._buffer
        buffer += data
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            return  # too few bytes to tell yet
        data = bytes(buffer)
        buffer.clear()
        if data.startswith(PREFACE):
            hand_over(conn, data)
            return
    conn._state = HEAD
    conn.dataReceived(data)


def hand_over(conn: H1Connection, data: bytes) -> None:
    from rproxy.http.h2 import H2Connection

    conn._cancel_timer()
    conn._state = HANDED_OVER
    conn._h2 = H2Connection(conn)
    conn._h2.start(data)
