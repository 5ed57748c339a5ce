"""How an HTTP listener speaks HTTP/2: L{H2Settings}, its limits and flood
budgets, and L{h2_settings}, which makes them for a listener's config."""

from __future__ import annotations

from attrs import frozen

__all__ = ["H2Settings", "h2_settings"]


@frozen
class H2Settings:
    """
    HTTP/2 on one listener.  Each flood budget is a number of frames a
    client may send per C{flood_window} seconds (a leaky bucket: it drains
    at that rate); past it the connection gets GOAWAY (ENHANCE_YOUR_CALM)
    and is closed.

    @ivar prior_knowledge: a connection without TLS that opens with the
        HTTP/2 preface speaks HTTP/2 (C{h2c = true}); with TLS, HTTP/2 is
        chosen by ALPN.
    @ivar max_concurrent_streams: streams a client may have open at once
        (SETTINGS_MAX_CONCURRENT_STREAMS).
    @ivar stream_window: the receive window of each stream: request body
        bytes a client may send before the backend has taken them.
    @ivar connection_window: the receive window of the whole connection.
    @ivar max_header_list_size: bytes of one decoded header list
        (SETTINGS_MAX_HEADER_LIST_SIZE; an HPACK bomb stops here).
    @ivar max_header_block: bytes of one encoded header block, its HEADERS
        frame and every CONTINUATION frame (a CONTINUATION flood stops
        here).
    @ivar max_resets: streams a client may reset (Rapid Reset).
    @ivar max_settings: SETTINGS frames.
    @ivar max_pings: PING frames.
    @ivar max_priority: PRIORITY frames.
    @ivar max_empty_data: DATA frames with no data that do not end a stream.
    @ivar stall_timeout: seconds a response may wait for the client to open
        its window before the stream is reset.
    """

    prior_knowledge: bool = False
    max_concurrent_streams: int = 100
    stream_window: int = 65535
    connection_window: int = 1 << 20
    max_header_list_size: int = 65536
    max_header_block: int = 65536
    flood_window: float = 10.0
    max_resets: int = 200
    max_settings: int = 100
    max_pings: int = 100
    max_priority: int = 1000
    max_empty_data: int = 100
    stall_timeout: float = 30.0


def h2_settings(http2: bool, h2c: bool, *, tls: bool) -> H2Settings | None:
    """
    The HTTP/2 settings of a listener whose config says C{http2} and
    C{h2c}, or C{None} where it speaks HTTP/1.1 only: a TLS listener speaks
    HTTP/2 with C{http2} (by ALPN), one without TLS with C{h2c}.
    """
    if tls:
        return H2Settings() if http2 else None
    return H2Settings(prior_knowledge=True) if h2c else None
