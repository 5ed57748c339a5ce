"""Demo backends for trying rproxy out: an echo server on each loopback
backend address of a config, each greeting with its own address."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from rproxy.config import Config


@implementer(IHalfCloseableProtocol)
class _Echo(Protocol):
    def __init__(self, name: str):
        self.name = name

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            f"demo backend {self.name} here; I echo what you send\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        # The client has finished sending: answer what is left, then close.
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class _EchoFactory(Factory):
    def __init__(self, name: str):
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> _Echo:
        return _Echo(self.name)


def demo_backends(config: Config, reactor: Any) -> MultiService:
    """
    A service running an echo server on every backend address of C{config}
    that is on loopback (others are left alone).
    """
    services = MultiService()
    seen: set[tuple[str, int]] = set()
    for pool in config.pools:
        for backend in pool.backends:
            key = (backend.host, backend.port)
            try:
                ip = ipaddress.ip_address(backend.host)
            except ValueError:
                continue
            if not ip.is_loopback or key in seen:
                continue
            seen.add(key)
            endpoint_type = (
                TCP4ServerEndpoint if ip.version == 4 else TCP6ServerEndpoint
            )
            endpoint = endpoint_type(reactor, backend.port, interface=backend.host)
            service = StreamServerEndpointService(endpoint, _EchoFactory(backend.name))
            service._raiseSynchronously = True
            service.setServiceParent(services)
    return services
