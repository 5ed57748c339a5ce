"""The HTTP/2 codec of rproxy's HTTP listeners, built on the C{h2} library:
a connection (L{H2Connection}) whose every stream (L{H2Stream}) is the
codec of one L{rproxy.http.exchange.Exchange}, on the same routes, filters,
pools and backend connections as an HTTP/1.1 request.

An HTTP/1.1 connection hands itself over at its first bytes: when TLS
negotiated C{h2} (ALPN), or on a listener with C{h2c = true} when they are
the HTTP/2 connection preface (L{rproxy.http._h1_sniff})."""

from rproxy.http.h2.connection import H2Connection
from rproxy.http.h2.settings import H2Settings, h2_settings
from rproxy.http.h2.stats import H2Stats
from rproxy.http.h2.stream import H2Stream

__all__ = ["H2Connection", "H2Settings", "H2Stats", "H2Stream", "h2_settings"]
