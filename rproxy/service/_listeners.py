"""One listening endpoint of the proxy as a service: TLS termination in front
of the factory if asked, a factory that a reload may replace while the port
stays open, and a graceful stop that drains open connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from rproxy._fds import FdBudget
from rproxy.admission import Admission
from rproxy.admission.accept import AdmissionFactory, Refusals
from rproxy.interfaces import IListenerFactory
from rproxy.proxyprotocol.accept import ProxyHeaderFactory
from rproxy.tls import ServerTLS

__all__ = ["ListenerService", "PortSource"]

#: Where a listener gets its listening port instead of binding its endpoint
#: (a worker process adopts the socket its supervisor bound): called with the
#: listener's name, its endpoint description and the factory to serve; raises
#: L{OSError} or L{KeyError} if it has no port for them.
PortSource = Callable[[str, str, IProtocolFactory], IListeningPort]

log = Logger(namespace="rproxy.service")


class _Accept(Factory):
    """
    What the listening port calls for each connection: whatever front the
    listener has now (its proxy factory, behind TLS if it has any), so that
    a reload can change both without closing the port.
    """

    noisy = False

    def __init__(self, listener: ListenerService) -> None:
        self.listener = listener

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        listener = self.listener
        if listener.fds is not None and not listener.admit():
            # The port closes the socket at once: the client is told, not
            # left waiting in the backlog.
            return None
        # Every front is a Factory, whose protocols are Protocols.
        protocol = listener.front.buildProtocol(cast(IAddress, addr))
        return cast(Protocol | None, protocol)


class ListenerService(Service):
    """
    Listens on a server endpoint with a proxy factory, behind TLS
    termination if given C{tls}.  Stopping it stops listening at once, then
    gives open connections C{grace} seconds to finish before dropping them.

    With C{accept_proxy} (the trusted senders and the timeout of a
    L{ProxyHeaderFactory}), every connection starts with a PROXY header,
    read before TLS.

    L{replace} gives new connections another factory's settings, TLS and
    PROXY header settings while the port stays open; connections already
    accepted keep theirs, and are still drained on stop (the factory in use
    decides, in L{IListenerFactory.reconfigure}, whether it takes the new
    settings or hands its connections and counters to the new factory).

    With C{fds}, the process's descriptor budget, each connection is
    accepted only if the budget admits it (L{FdBudget.admit}); one it does
    not is closed at once, and the listener logs when it starts refusing
    and when it accepts again.

    With C{admission}, the listener's connection limits and address lists
    are enforced when each connection arrives (L{AdmissionFactory}); a
    reload may change them (L{replace}) and the accept rate carries on.

    @ivar refused: connections closed at accept for want of descriptors.
    @ivar refusals: what the listener keeps about its other refusals.
    """

    def __init__(
        self,
        name: str,
        description: str,
        factory: IListenerFactory,
        reactor: Any,
        grace: float,
        tls: ServerTLS | None = None,
        accept_proxy: tuple[tuple[str, ...], float] | None = None,
        fds: FdBudget | None = None,
        admission: Admission | None = None,
        ports: PortSource | None = None,
    ):
        self.listener = name
        self.ports = ports
        self.fds = fds
        self.admission = admission
        self.refusals = Refusals(name)
        self.refused = 0
        self._refusing = 0
        self.description = description
        self.grace = grace
        self.factory = factory
        self.tls = tls
        self.accept_proxy = accept_proxy
        self._reactor = reactor
        self.front: IProtocolFactory = self._front()
        self.port: IListeningPort | None = None
        #: the address bound, once started; kept after stopping.
        self.bound: IAddress | None = None

    def _front(self) -> IProtocolFactory:
        front: IProtocolFactory = self.factory
        if self.tls is not None:
            tls = TLSMemoryBIOFactory(self.tls, False, front)
            tls.noisy = False
            # Twisted's default TLS transport holds small writes until the
            # next reactor iteration to merge them; the proxy already sends
            # each response's parts as one write, so that only adds a timer
            # per response.
            tls.protocol = TLSMemoryBIOProtocol
            front = tls
        proxied = self.accept_proxy is not None
        if self.admission is not None and (self.admission.per_client or not proxied):
            front = self._gate(front, accept=not proxied, client=True)
        if self.accept_proxy is not None:
            trusted, timeout = self.accept_proxy
            front = ProxyHeaderFactory(
                front,
                trusted,
                self._reactor,
                connections=self.factory.connections,
                timeout=timeout,
                listener=self.listener,
                stats=self.factory.stats,
            )
            if self.admission is not None and self.admission.at_accept:
                front = self._gate(front, accept=True, client=False)
        return front

    def _gate(
        self, front: IProtocolFactory, *, accept: bool, client: bool
    ) -> IProtocolFactory:
        assert self.admission is not None
        factory = self.factory
        protocol = factory.describe().protocol
        return AdmissionFactory(
            front,
            self.admission,
            connections=factory.connections,
            stats=factory.stats,
            clock=self._reactor,
            refusals=self.refusals,
            protocol="tcp" if protocol == "sni" else protocol,
            answer_http=protocol == "http" and self.tls is None,
            accept=accept,
            client=client,
            after_proxy=self.accept_proxy is not None and not accept,
        )

    def replace(
        self,
        factory: IListenerFactory,
        tls: ServerTLS | None,
        accept_proxy: tuple[tuple[str, ...], float] | None = None,
        admission: Admission | None = None,
    ) -> None:
        """
        Serve new connections with C{factory}'s settings, behind C{tls} if
        not None, after a PROXY header if C{accept_proxy}, with the
        connection limits and address lists of C{admission}.
        """
        if factory is not self.factory:
            # Open connections, and the listener's counters, carry over.
            self.factory = self.factory.reconfigure(factory)
        self.tls = tls
        self.accept_proxy = accept_proxy
        if admission is not None and self.admission is not None:
            admission.adopt(self.admission)
        self.admission = admission
        self.front = self._front()

    def privilegedStartService(self) -> None:
        if self.port is not None:
            # Bound already: a reload binds a new listener before adding it
            # to the running proxy, which starts it again.
            return
        super().privilegedStartService()
        outcome = self._listen()
        if isinstance(outcome, Failure):
            raise SystemExit(
                f"rproxy: listener {self.listener!r} cannot listen on "
                f"{self.description!r}: {outcome.getErrorMessage()}"
            )
        self.port = outcome
        if self.fds is not None:
            self.fds.add_listener(
                self, self.listener, lambda: len(self.factory.connections)
            )
        host = self.bound = outcome.getHost()
        serves = self.factory.describe()
        log.info(
            "listener {listener} on {address} ({bound}) serving {protocol} to {pools}",
            listener=self.listener,
            address=self.description,
            bound=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
            protocol=serves.protocol,
            pools=", ".join(serves.pools) or "no pool",
        )

    def _listen(self) -> IListeningPort | Failure:
        if self.ports is not None:
            try:
                return self.ports(self.listener, self.description, _Accept(self))
            except (OSError, KeyError) as error:
                return Failure(error)
        endpoint = serverFromString(self._reactor, self.description)
        listening: Deferred[IListeningPort] = endpoint.listen(_Accept(self))
        result: list[IListeningPort | Failure] = []
        listening.addBoth(result.append)
        if not result:
            raise RuntimeError(
                f"listener {self.listener}: {self.description} did not bind"
            )
        return result[0]

    def admit(self) -> bool:
        """
        Whether the budget admits another connection now; logs the first
        refusal of a run of them, and the first admission after one.
        """
        assert self.fds is not None
        fds = self.fds
        if fds.admit(self):
            if self._refusing:
                log.info(
                    "listener {listener} accepting again after refusing "
                    "{count} connections",
                    listener=self.listener,
                    count=self._refusing,
                )
                self._refusing = 0
            return True
        self.refused += 1
        if not self._refusing:
            log.warn(
                "listener {listener} refusing connections: {free} of {limit} "
                "file descriptors free, {held} held by this listener (its "
                "share {share}, {floor} always kept free, {reserve} more for "
                "listeners under their share)",
                listener=self.listener,
                free=fds.free(),
                limit=fds.limit,
                held=fds.held(self),
                share=fds.share(),
                floor=fds.floor,
                reserve=fds.reserve,
            )
        self._refusing += 1
        return False

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
        await self.factory.drain(self.grace)
        if self.fds is not None:
            self.fds.remove_listener(self)
