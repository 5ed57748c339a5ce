"""L{StreamProtocol}: what Twisted's C{Protocol} gives a stream protocol,
written out so that the hot-path protocols built on it compile to native
classes with mypyc (a compiled class cannot inherit from an interpreted one,
and Twisted's is interpreted)."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import classImplements

__all__ = ["StreamProtocol"]


class StreamProtocol:
    """
    The base of rproxy's own stream protocols: the C{IProtocol} methods
    Twisted's C{Protocol} has, doing what they do there.

    Subclasses declare further interfaces with C{classImplements} after the
    class (a class decorator would keep mypyc from compiling it natively).
    """

    transport: Any = None
    connected: int = 0

    def makeConnection(self, transport: Any) -> None:
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        """The connection is up."""

    def dataReceived(self, data: bytes) -> None:
        """Bytes arrived."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The connection is gone."""

    def logPrefix(self) -> str:
        return type(self).__name__


classImplements(StreamProtocol, IProtocol)
