"""One listening endpoint of the proxy as a service: TLS termination in front
of the factory if asked, and a graceful stop that drains open connections."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from rproxy._proxy_accept import ProxyHeaderFactory
from rproxy.http.listener import HTTPProxyFactory
from rproxy.sni import SNIProxyFactory
from rproxy.tcp import TCPProxyFactory
from rproxy.tls import ServerTLS

__all__ = ["ListenerService"]

log = Logger(namespace="rproxy.service")


class ListenerService(Service):
    """
    Listens on a server endpoint with a proxy factory, behind TLS
    termination if given C{tls}.  Stopping it stops listening at once, then
    gives open connections C{grace} seconds to finish before dropping them.

    With C{accept_proxy} (the trusted senders and the timeout of a
    L{ProxyHeaderFactory}), every connection starts with a PROXY header,
    read before TLS.
    """

    def __init__(
        self,
        name: str,
        description: str,
        factory: TCPProxyFactory | HTTPProxyFactory | SNIProxyFactory,
        reactor: Any,
        grace: float,
        tls: ServerTLS | None = None,
        accept_proxy: tuple[tuple[str, ...], float] | None = None,
    ):
        self.listener = name
        self.description = description
        self.factory = factory
        self.tls = tls
        self.accept_proxy = accept_proxy
        self.grace = grace
        self._reactor = reactor
        self.port: IListeningPort | None = None
        #: the address bound, once started; kept after stopping.
        self.bound: IAddress | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = serverFromString(self._reactor, self.description)
        factory: Any = self.factory
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
            factory.noisy = False
            # Twisted's default TLS transport holds small writes until the
            # next reactor iteration to merge them; the proxy already sends
            # each response's parts as one write, so that only adds a timer
            # per response.
            factory.protocol = TLSMemoryBIOProtocol
        if self.accept_proxy is not None:
            trusted, timeout = self.accept_proxy
            factory = ProxyHeaderFactory(
                factory,
                trusted,
                self._reactor,
                connections=self.factory.connections,
                timeout=timeout,
                listener=self.listener,
            )
        listening: Deferred[IListeningPort] = endpoint.listen(factory)
        result: list[IListeningPort | Failure] = []
        listening.addBoth(result.append)
        if not result:
            raise RuntimeError(
                f"listener {self.listener}: {self.description} did not bind"
            )
        outcome = result[0]
        if isinstance(outcome, Failure):
            raise SystemExit(
                f"rproxy: listener {self.listener!r} cannot listen on "
                f"{self.description!r}: {outcome.getErrorMessage()}"
            )
        self.port = outcome
        host = self.bound = outcome.getHost()
        factory = self.factory
        serves = "HTTP routes"
        if isinstance(factory, TCPProxyFactory):
            serves = f"pool {factory.pool.name}"
        elif isinstance(factory, SNIProxyFactory):
            serves = "SNI routes"
        log.info(
            "listener {listener} on {address} ({bound}) serving {serves}",
            listener=self.listener,
            address=self.description,
            bound=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
            serves=serves,
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        return Deferred.fromCoroutine(self._stop(port))

    async def _stop(self, port: IListeningPort | None) -> None:
        if port is not None:
            await maybeDeferred(port.stopListening)
        tracker = self.factory.connections
        log.info(
            "listener {listener} stopped accepting; {open} connections open, "
            "waiting up to {grace}s for them",
            listener=self.listener,
            open=len(tracker),
            grace=self.grace,
        )
        await tracker.drain(self.grace, self._reactor)
        if isinstance(self.factory, HTTPProxyFactory):
            self.factory.keep_alive.close_all()
