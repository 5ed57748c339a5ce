"""Where an HTTP/1.1 client connection is: the states of
L{rproxy.http.h1.H1Connection}, as plain ints (compared per read)."""

from __future__ import annotations

from typing import Final

__all__ = ["BODY", "CLOSED", "HANDED_OVER", "HEAD", "SNIFF", "TUNNEL", "WAIT"]

#: reading a request head.
HEAD: Final = 0
#: reading a request body.
BODY: Final = 1
#: the request read whole, its response under way.
WAIT: Final = 2
#: relaying raw bytes after a 101.  This state and those after it are
#: looked at apart from the three above, by one comparison per read.
TUNNEL: Final = 3
#: closed.
CLOSED: Final = 4
#: the first bytes of a connection that may speak HTTP/2 (ALPN or prior
#: knowledge) are awaited.
SNIFF: Final = 5
#: the connection speaks HTTP/2: its bytes go to the HTTP/2 codec.
HANDED_OVER: Final = 6
