"""Test doubles shared by the unit tests: endpoints whose connects the test
fires, and a transport that records half-closes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy.accesslog import access_events
from rproxy.backends import Backend


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
    it is closed.
    """

    def __init__(self, peer: str = "192.0.2.7", port: int = 40000) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, port))
        self.write_closed = False
        self.aborted = False
        self.protocol: Protocol | None = None
        self._lost = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def loseConnection(self) -> None:
        super().loseConnection()
        self.finish(Failure(ConnectionDone("closed")))

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def finish(self, reason: Failure) -> None:
        """
        Deliver connectionLost to the protocol, once.
        """
        if not self._lost and self.protocol is not None:
            self._lost = True
            self.protocol.connectionLost(reason)


def connect(protocol: Protocol, transport: HalfCloseTransport) -> HalfCloseTransport:
    """
    Attach C{transport} to C{protocol} and call connectionMade.
    """
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


class Attempt:
    """
    One connect to a fake endpoint, which the test completes or fails.
    """

    def __init__(
        self, backend: Backend, factory: Factory, preface: bytes = b""
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
        protocol = self.factory.buildProtocol(None)
        self.protocol = protocol
        self.transport = connect(protocol, HalfCloseTransport("127.0.0.1", 9000))
        self.deferred.callback(protocol)
        return self.transport

    def fail(self, error: Exception) -> None:
        """
        Fail the connect with C{error}.
        """
        self.deferred.errback(error)


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
            def connect(self, factory: Factory) -> Deferred[Any]:
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
