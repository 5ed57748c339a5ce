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

__all__ = ["Adopted", "Handed", "handed", "hold"]


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
        return port

    def close(self) -> None:
        """
        Close every descriptor not adopted.
        """
        for fd, _ in self._sockets.values():
            os.close(fd)
        self._sockets.clear()
