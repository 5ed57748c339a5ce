"""Enforcing a listener's L{Admission} when a connection arrives: the
L{AdmissionFactory} that a listener's front is wrapped in, and what a
refused connection gets.

The factory's C{buildProtocol} is the first code that sees a connection,
with its peer's address, before a byte is read: no TLS handshake, no PROXY
header.  A refused connection of a TCP listener, or of any TLS listener
(nothing can be said before a handshake), is closed at once: the listening
port closes the socket without making a transport for it.  One of a plain
HTTP listener is sent a short response (403, 429 or 503, with
C{Connection: close}) as soon as it is made, without its request being
read; its write side is then shut and whatever it sends is thrown away
until it closes, for up to L{LINGER} seconds, so that the response is not
lost to a reset (a socket closed with unread bytes sends one).

With PROXY protocol the listener wraps twice: the rules about the
connection (the listener's total, the accept rate) are checked on the
proxy's address before the header, the rules about the client (the lists,
its open connections) on the address the header announces.

Each refusal is counted in the listener's
L{rproxy.stats.ListenerStats.refused} and is one access event naming the
key that refused it (C{refused_by}); the log says when a listener starts
refusing for a reason, then at most every L{LOG_EVERY} seconds how many it
refused since.
"""

from __future__ import annotations

import math
from typing import Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._tracking import ConnectionTracker
from rproxy.accesslog import access_events
from rproxy.admission.gate import Admission, Refusal
from rproxy.stats import ListenerStats

__all__ = [
    "LINGER",
    "LOG_EVERY",
    "AdmissionFactory",
    "RefusalAnswer",
    "Refusals",
    "refusal_response",
]

log = Logger(namespace="rproxy.admission")

#: the most seconds a refused HTTP client is given to read its response.
LINGER = 2.0
#: the most refused HTTP clients of one listener reading their response at
#: once; past it, one is closed as soon as its response is written.
MAX_LINGERING = 256
#: the least seconds between two log events about one kind of refusal.
LOG_EVERY = 10.0

_REASONS = {403: b"Forbidden", 429: b"Too Many Requests", 503: b"Service Unavailable"}
_BODIES = {
    "full": b"too many connections, try again later\n",
    "per_ip": b"too many connections from your address\n",
    "rate": b"too many new connections from your address\n",
    "denied": b"forbidden\n",
}
_SAYS = {
    "full": "the listener is full ({open} open, max_connections {limit})",
    "per_ip": "{client} has max_connections_per_ip ({limit}) open",
    "rate": "{client} connects faster than accept_rate_per_ip",
    "denied": "{client} is refused by the {refused_by} list",
}


def refusal_response(refusal: Refusal) -> bytes:
    """
    The whole HTTP response a plain HTTP client refused with C{refusal} is
    sent: a short plain-text body, C{Connection: close}, and a
    C{Retry-After} (whole seconds, rounded up) when the accept rate says
    when it may connect again.
    """
    status = refusal.status
    body = _BODIES[refusal.reason]
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"Content-Type: text/plain; charset=utf-8",
        b"Cache-Control: no-store",
        b"Connection: close",
        b"Content-Length: %d" % len(body),
    ]
    if refusal.retry_after is not None:
        lines.append(b"Retry-After: %d" % max(1, math.ceil(refusal.retry_after)))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Refusals:
    """
    What one listener keeps about its refusals across reloads: when it last
    logged each kind, how many since, and the refused HTTP clients still
    reading their answer.
    """

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self.lingering: set[RefusalAnswer] = set()
        self._logged: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, refusal: Refusal, client: str, now: float, **fields: Any) -> None:
        """
        A connection from C{client} was refused at C{now}: log it if this
        kind was not logged in the last L{LOG_EVERY} seconds.
        """
        reason = refusal.reason
        count = self._since.get(reason, 0) + 1
        last = self._logged.get(reason)
        if last is not None and now - last < LOG_EVERY:
            self._since[reason] = count
            return
        self._logged[reason] = now
        self._since[reason] = 0
        log.warn(
            "listener {listener} refusing connections: "
            + _SAYS[reason]
            + " ({count} refused for this since last said)",
            listener=self.listener,
            client=client,
            refused_by=refusal.refused_by,
            count=count,
            **fields,
        )


class RefusalAnswer(Protocol):
    """
    Sends a refused plain HTTP client its response as soon as it connects,
    shuts the write side, and throws away what the client sends until it
    closes or L{LINGER} seconds pass (see the module docstring).
    """

    _timer: IDelayedCall | None = None

    def __init__(self, response: bytes, clock: Any, refusals: Refusals) -> None:
        self.response = response
        self.clock = clock
        self.refusals = refusals

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.response)
        lingering = self.refusals.lingering
        shut = getattr(transport, "loseWriteConnection", None)
        if shut is None or len(lingering) >= MAX_LINGERING:
            transport.loseConnection()
            return
        lingering.add(self)
        shut()
        self._timer = self.clock.callLater(LINGER, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """
        The request is not read.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.refusals.lingering.discard(self)


class _Close(Protocol):
    """
    Closes the connection at once: a refusal after a PROXY header, when the
    port has already made a transport.
    """

    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class AdmissionFactory(Factory):
    """
    Builds C{wrapped}'s protocol for each connection C{admission} lets in;
    refuses the others as the module docstring says.

    @param connections: the listener's open connections (its total, and per
        client).
    @param stats: the listener's counters.
    @param refusals: the listener's refusal log and lingering answers.
    @param protocol: C{"http"} or C{"tcp"}, for access events.
    @param answer_http: answer refused connections with an HTTP response
        (a plain HTTP listener) rather than closing them.
    @param accept: check the rules about the connection (total, rate).
    @param client: check the rules about the client (lists, per client).
    @param after_proxy: the connection sent a PROXY header first, and so
        was counted open while it did: a refused one counts as closed.
    """

    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        admission: Admission,
        *,
        connections: ConnectionTracker,
        stats: ListenerStats,
        clock: Any,
        refusals: Refusals,
        protocol: str = "tcp",
        answer_http: bool = False,
        accept: bool = True,
        client: bool = True,
        after_proxy: bool = False,
    ) -> None:
        self.wrapped = wrapped
        self.admission = admission
        self.connections = connections
        self.stats = stats
        self.clock = clock
        self.refusals = refusals
        self.protocol_name = protocol
        self.answer_http = answer_http
        self.accept = accept
        self.client = client
        self.after_proxy = after_proxy

    def startFactory(self) -> None:
        self.wrapped.doStart()

    def stopFactory(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        host = getattr(addr, "host", "")
        host = host if isinstance(host, str) else ""
        connections = self.connections
        refusal = self.admission.check(
            host,
            len(connections),
            connections.open_from,
            self.clock.seconds(),
            accept=self.accept,
            client=self.client,
        )
        if refusal is None:
            # Every front is a Factory, whose protocols are Protocols.
            return cast(
                Protocol | None, self.wrapped.buildProtocol(cast(IAddress, addr))
            )
        return self._refuse(refusal, host)

    def _refuse(self, refusal: Refusal, host: str) -> Protocol | None:
        stats = self.stats
        stats.refused[refusal.reason] += 1
        if self.after_proxy:
            stats.connections_closed += 1
        response = refusal_response(refusal) if self.answer_http else b""
        if access_events.active:
            access_events.emit(
                "{client} refused on listener {listener} by {refused_by}",
                client=host,
                listener=self.refusals.listener,
                protocol=self.protocol_name,
                status=refusal.status if response else "refused",
                refused_by=refusal.refused_by,
                bytes_in=0,
                bytes_out=len(response),
                duration=0.0,
            )
        admission = self.admission
        limit = (
            admission.max_connections
            if refusal.reason == "full"
            else admission.max_per_client
        )
        self.refusals.note(
            refusal, host, self.clock.seconds(), open=len(self.connections), limit=limit
        )
        if response:
            return RefusalAnswer(response, self.clock, self.refusals)
        if self.after_proxy:
            return _Close()
        return None
