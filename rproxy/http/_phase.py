"""Where an exchange is (L{Phase}), and the facts about requests that its
retries and reuse of backend connections depend on."""

from __future__ import annotations

from enum import Enum

from rproxy.http.framing import RequestHead

__all__ = ["BODY_BUFFER", "FRESH_REUSE", "IDEMPOTENT", "Phase", "retryable"]

#: methods whose request may be sent again after a backend failed mid-way.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: a request that could not be sent again only goes out on a pooled backend
#: connection idle for less than this: an older one may be closing just now
#: (backends' own keep-alive timeouts can be as short as two seconds).
FRESH_REUSE = 1.0

#: request body bytes held while the backend is being connected (or a
#: filter is deciding) before the client is paused.
BODY_BUFFER = 1 << 16


def retryable(request: RequestHead) -> bool:
    """
    Whether C{request} may be sent again after it reached a backend: an
    idempotent method and no body.
    """
    return request.method in IDEMPOTENT and request.body == "none"


class Phase(Enum):
    """
    Where an exchange is.

    C{FILTERING}: request-head filters are running (or suspended);
    C{CONNECTING}: a backend is being connected; C{PROXYING}: the request
    is with a backend, the response awaited or relayed; C{TUNNEL}: the
    backend switched protocols (101) and bytes flow raw; C{DONE}: the
    exchange ended (answered, failed or given up).
    """

    FILTERING = "filtering"
    CONNECTING = "connecting"
    PROXYING = "proxying"
    TUNNEL = "tunnel"
    DONE = "done"


# Module names for the members: an Enum member lookup costs ten times a
# global one, and these run on every request.
_FILTERING = Phase.FILTERING
_CONNECTING = Phase.CONNECTING
_PROXYING = Phase.PROXYING
_TUNNEL = Phase.TUNNEL
_DONE = Phase.DONE
