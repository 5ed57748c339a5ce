"""The fakes: endpoints whose connects the test completes or fails, a
transport that records half-closes and closes its protocol, and the access
events of a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy.accesslog import access_events
from rproxy.backends import Backend

__all__ = [
    "Attempt",
    "FakeEndpoints",
    "HalfCloseTransport",
    "captured_access",
    "connect",
]


@contextmanager
def captured_access() -> Iterator[list[dict[str, Any]]]:
    """
    Collect the access events emitted inside the block.
    """
    events: list[dict[str, Any]] = []
    access_events.add_observer(events.append)  # type: ignore[arg-type]
    try:
        yield events
    finally:
        access_events.remove_observer(events.append)  # type: ignore[arg-type]


class HalfCloseTransport(StringTransport):
    """
    A StringTransport that records half-closes and tells its protocol when
    it is closed (C{connectionLost}, once).

    @ivar write_closed: C{loseWriteConnection} was called.
    @ivar aborted: C{abortConnection} was called.
    """

    def __init__(self, peer: str = "192.0.2.7", port: int = 40000) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, port))
        self.write_closed = False
        self.aborted = False
        self.protocol: IProtocol | None = None
        self._lost = False

    def loseWriteConnection(self) -> None:  # noqa: N802
        self.write_closed = True

    def loseConnection(self) -> None:  # noqa: N802
        super().loseConnection()
        self.finish(Failure(ConnectionDone("closed")))

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True
        self.loseConnection()

    def finish(self, reason: Failure) -> None:
        """
        Deliver connectionLost to the protocol, once (the peer closed, or
        the connection broke with C{reason}).
        """
        if not self._lost and self.protocol is not None:
            self._lost = True
            self.protocol.connectionLost(reason)

    @property
    def paused(self) -> bool:
        """
        Whether the protocol paused reading from this transport.
        """
        return self.producerState == "paused"


def connect(protocol: IProtocol, transport: HalfCloseTransport) -> HalfCloseTransport:
    """
    Attach C{transport} to C{protocol} and call connectionMade.
    """
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


class Attempt:
    """
    One connect to a fake endpoint, which the test completes or fails.

    @ivar transport: the backend side's transport once connected: what the
        proxy sent the backend is its C{value()}.
    @ivar protocol: the proxy's protocol for this backend connection.
    """

    def __init__(
        self, backend: Backend, factory: IProtocolFactory, preface: bytes = b""
    ) -> None:
        self.backend = backend
        self.factory = factory
        #: what the endpoint was asked to send first (a PROXY header).
        self.preface = preface
        self.cancelled = False
        self.deferred: Deferred[Any] = Deferred(self._cancel)
        self.transport: HalfCloseTransport | None = None
        self.protocol: Any = None

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True

    def succeed(self) -> HalfCloseTransport:
        """
        Complete the connect; return the backend side's transport.
        """
        address = IPv4Address("TCP", self.backend.host, self.backend.port)
        protocol: Any = self.factory.buildProtocol(address)
        self.protocol = protocol
        self.transport = connect(protocol, HalfCloseTransport("127.0.0.1", 9000))
        self.deferred.callback(protocol)
        return self.transport

    def fail(self, error: Exception) -> None:
        """
        Fail the connect with C{error}.
        """
        self.deferred.errback(error)

    @property
    def received(self) -> bytes:
        """
        What the proxy sent the backend on this connection so far.
        """
        assert self.transport is not None, "the connect was not completed"
        return bytes(self.transport.value())

    def respond(self, data: bytes) -> None:
        """
        The backend sends C{data} (completing the connect first if needed).
        """
        assert not self.cancelled, "the proxy cancelled this connect"
        if self.transport is None:
            self.succeed()
        self.protocol.dataReceived(data)


class FakeEndpoints:
    """
    An C{endpoint_for} whose endpoints record every connect as an L{Attempt}.
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def __call__(self, backend: Backend, preface: bytes = b"") -> IStreamClientEndpoint:
        owner = self

        @implementer(IStreamClientEndpoint)
        class _Endpoint:
            def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
                attempt = Attempt(backend, factory, preface)
                owner.attempts.append(attempt)
                return attempt.deferred

        return _Endpoint()

    @property
    def last(self) -> Attempt:
        """
        The latest attempt.
        """
        return self.attempts[-1]
