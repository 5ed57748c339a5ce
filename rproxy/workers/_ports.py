"""Listening sockets bound once, in the supervisor, and adopted by workers.

L{hold} is the supervisor's L{PortSource}: it binds a listener's endpoint
and stops accepting on it, so that the socket only queues connections for
the workers.  L{Adopted} is a worker's: it makes a Twisted port from a
descriptor the supervisor handed over (L{IReactorSocket.adoptStreamPort}).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.python.failure import Failure

from rproxy.service._listeners import ListenerService

__all__ = ["ACCEPTS_PER_WAKE", "Adopted", "Handed", "handed", "hold"]

#: connections a worker accepts each time the shared socket is readable
#: (nginx's default, C{multi_accept off}): the workers all wake for a new
#: connection, and the first back in its event loop takes the next one, so
#: a burst of connections (a load balancer's, wrk's) spreads over the
#: workers instead of going to whichever woke first (Twisted's ports accept
#: up to a hundred at a time).
ACCEPTS_PER_WAKE = 1


@frozen
class Handed:
    """
    One bound listening socket: the listener's name and endpoint, its
    descriptor (in the process that holds it) and address family.
    """

    name: str
    listen: str
    fd: int
    family: int

    def to_json(self, fd: int | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "fd": self.fd if fd is None else fd,
            "family": self.family,
        }


def hold(reactor: Any) -> Any:
    """
    The supervisor's port source: bind, then never accept.
    """

    def listen(name: str, description: str, factory: IProtocolFactory) -> Any:
        endpoint = serverFromString(reactor, description)
        result: list[IListeningPort | Failure] = []
        listening: Deferred[IListeningPort] = endpoint.listen(factory)
        listening.addBoth(result.append)
        if not result:
            raise OSError(f"{description} did not bind at once")
        port = result[0]
        if isinstance(port, Failure):
            raise OSError(port.getErrorMessage())
        # The socket stays open and listening; the workers accept.
        port.stopReading()  # type: ignore[attr-defined]
        return port

    return listen


def handed(listeners: Mapping[str, ListenerService]) -> list[Handed]:
    """
    The sockets the supervisor's listeners hold now.
    """
    sockets = []
    for name, service in list(listeners.items()):
        port: Any = service.port
        if port is None:
            continue
        family = getattr(port, "addressFamily", socket.AF_INET)
        sockets.append(Handed(name, service.description, port.fileno(), family))
    return sockets


def _accept_few(port: Any) -> None:
    """
    Make C{port} accept at most L{ACCEPTS_PER_WAKE} connections per wake.
    """
    read = getattr(port, "doRead", None)
    if read is None:
        return

    def doRead() -> Any:
        port.numberAccepts = ACCEPTS_PER_WAKE
        return read()

    port.doRead = doRead


class Adopted:
    """
    A worker's port source: the listening sockets handed to it, by listener
    name and endpoint, each adopted once (then its descriptor is closed: the
    port holds a copy).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._sockets: dict[tuple[str, str], tuple[int, int]] = {}

    def add(self, name: str, listen: str, fd: int, family: int) -> None:
        """
        Keep descriptor C{fd} (owned from now on) for listener C{name} on
        C{listen}.
        """
        old = self._sockets.pop((name, listen), None)
        if old is not None:
            os.close(old[0])
        self._sockets[(name, listen)] = (fd, family)

    def __contains__(self, key: object) -> bool:
        return key in self._sockets

    def __call__(
        self, name: str, description: str, factory: IProtocolFactory
    ) -> IListeningPort:
        fd, family = self._sockets.pop((name, description))
        try:
            port: IListeningPort = self._reactor.adoptStreamPort(fd, family, factory)
        finally:
            os.close(fd)
        _accept_few(port)
        return port

    def close(self) -> None:
        """
        Close every descriptor not adopted.
        """
        for fd, _ in self._sockets.values():
            os.close(fd)
        self._sockets.clear()
