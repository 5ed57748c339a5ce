"""Demo backends for trying rproxy out, on each loopback backend address of
a config: a small web server for pools that HTTP listeners route to (it
answers every GET with its own address, and /healthz), an echo server
greeting with its own address for the others."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
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


class _Hello(Resource):
    isLeaf = True

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        path = request.path.decode("latin-1")
        return f"demo backend {self.name} here; you asked for {path}\n".encode()

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body: bytes = request.content.read()
        return body


def _http_pools(config: Config) -> set[str]:
    return {
        route.pool
        for listener in config.listeners
        if listener.protocol == "http"
        for route in listener.routes
    }


def demo_backends(config: Config, reactor: Any) -> MultiService:
    """
    A service running a demo server on every backend address of C{config}
    that is on loopback (others are left alone).
    """
    services = MultiService()
    seen: set[tuple[str, int]] = set()
    http_pools = _http_pools(config)
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
            factory: Any
            if pool.name in http_pools:
                factory = Site(_Hello(backend.name))
                factory.noisy = False
            else:
                factory = _EchoFactory(backend.name)
            service = StreamServerEndpointService(endpoint, factory)
            service._raiseSynchronously = True
            service.setServiceParent(services)
    return services
