"""Test doubles and a clock-driven harness for code that plugs into rproxy:
your own HTTP filters, balancers, health checks, or a program embedding it.

Nothing here opens a socket or touches the global reactor.  Time is a
L{Clock} the test advances; backends are L{FakeEndpoints} whose connects the
test completes (L{Attempt.succeed}) or fails; clients and backend
connections are L{HalfCloseTransport}s the test reads and writes.

L{HTTPHarness} puts an HTTP listener (L{HTTPProxyFactory}) between them, so
a filter is tested through the real codec and exchange::

    from rproxy.http.filters import HTTPFilter, LocalReply
    from rproxy.testing import HTTPHarness

    class Deny(HTTPFilter):
        def request_head(self, exchange, head):
            if head.target.startswith(b"/admin"):
                return LocalReply(403, body=b"no\\n")
            return None

    harness = HTTPHarness(filters=[Deny()])
    client = harness.request("GET", "/admin")
    assert client.response().status == 403
    assert harness.endpoints.attempts == []       # no backend was asked

    client = harness.request("GET", "/")
    harness.backend_responds(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    assert client.response().body == b"hi"
    harness.close()           # closes what is open; fails if timers are left

The fakes are also usable on their own, as rproxy's own tests use them for
the TCP and SNI fronts and the backend attempt machine: L{FakeEndpoints} is an
C{endpoint_for} (C{backend, preface -> IStreamClientEndpoint}),
L{connect} attaches a transport to a protocol, and L{captured_access}
collects access events.
"""

from rproxy.testing._fakes import (
    Attempt,
    FakeEndpoints,
    HalfCloseTransport,
    captured_access,
    connect,
)
from rproxy.testing._harness import Client, HTTPHarness
from rproxy.testing._http import Response, parse_responses, request_bytes

__all__ = [
    "Attempt",
    "Client",
    "FakeEndpoints",
    "HTTPHarness",
    "HalfCloseTransport",
    "Response",
    "captured_access",
    "connect",
    "parse_responses",
    "request_bytes",
]
