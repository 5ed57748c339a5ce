"""The admin interface: status page, JSON status, Prometheus metrics, and
drain / disable / enable / weight controls and config reload over HTTP.

L{AdminService} listens on the C{[admin]} endpoint with a twisted.web
L{Site}; what each path answers is in L{rproxy.admin._web}.  It reads the
live registry and listeners at every request (a config reload adds and
removes pools, backends and listeners), and samples their counters every few
seconds to show rates.  Stopping it closes the connections open to it, so a
client cannot keep control after a reload removed or replaced it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import generate_latest
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from rproxy.admin._metrics import ProxyCollector, metrics_registry
from rproxy.admin._status import RateSampler, Snapshot, snapshot
from rproxy.admin._web import AdminResource
from rproxy.backends import Registry
from rproxy.config._admin import AdminConfig
from rproxy.service._listeners import ListenerService

__all__ = ["AdminService"]

log = Logger(namespace="rproxy.admin")

#: seconds between two samples of the counters the rates are worked out from.
SAMPLE_INTERVAL = 5.0
#: seconds a client has, from connecting or from its previous answer, to send
#: a whole request (like the HTTP listeners' C{request_head} timeout).
HEAD_TIMEOUT = 10.0
#: the bytes an HTTP method (a token) is made of.
_TOKEN = (
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
#: longer than any method a client sends (the admin knows GET, HEAD, POST).
_MAX_METHOD = 32


def _no_reload() -> list[str]:
    return ["reload is not available"]


class _AdminChannel(HTTPChannel):
    """
    An HTTP/1.1 connection to the admin interface, in its site's
    C{channels} while open.

    Twisted's timeout (the site's C{timeout}, L{HEAD_TIMEOUT}) runs from
    the connection and from each answer, and is not restarted by every
    chunk received, so a client that trickles its request is closed when it
    ends too.  A connection whose first bytes cannot begin a request line
    (a TLS handshake, binary noise) is answered 400 and closed at once;
    Twisted answers a whole bad request line so too.
    """

    site: _AdminSite
    #: the start of the first request line, until its method is known good.
    _opening: bytes | None = b""
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def resetTimeout(self) -> None:  # noqa: N802 (Twisted's name)
        """
        Not on data: the timer restarts only when an answer is done.
        """

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._opening is not None:
            opening = (self._opening + data).lstrip(b"\r\n")
            method, space, _ = opening.partition(b" ")
            if method.translate(None, _TOKEN) or len(method) > _MAX_METHOD:
                self._refuse()
                return
            self._opening = None if space else opening
        super().dataReceived(data)

    def _refuse(self) -> None:
        self._refused = True
        assert self.transport is not None
        peer = self.transport.getPeer()
        log.info(
            "admin: {peer} sent no HTTP request, closed",
            peer=str(getattr(peer, "host", None) or peer),
        )
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channels.discard(self)
        super().connectionLost(reason)

    def close(self) -> None:
        """
        Close now if no request is under way, else once it is answered.
        """
        if not self.requests:
            self.loseConnection()
            return
        self.persistent = False
        for request in self.requests:
            if not request.startedWriting:
                request.setHeader(b"connection", b"close")


class _AdminSite(Site):
    """
    A L{Site} that knows its open connections, to close them.
    """

    # HTTP/1.1 only: no HTTP/2 negotiation (HTTPFactory types it for that).
    protocol = _AdminChannel  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels: set[_AdminChannel] = set()

    def close_connections(self) -> None:
        for channel in list(self.channels):
            channel.close()


class AdminService(Service):
    """
    The admin interface of one proxy.

    @param config: where to listen and the control token.
    @param registry: the proxy's pools; looked up at every request.
    @param listeners: the proxy's listeners by name; looked up at every
        request, so a reload may add and remove entries.
    @param reactor: provides L{IReactorTime} (the rates' clock and the
        timestamps' "now") and what C{config.listen} needs to listen.
    @param reload: reads the config again and applies it, returning its
        problems (empty when the new config is in use).  Called at request
        time, so it may be any callable that looks up the real one then.
    @param limits: the running rate limits by name (their counters are in
        the metrics); looked up at every scrape.
    @param discovery: the discovering pools' L{DiscoveryState}s by pool
        name (in the status and the metrics); looked up when asked for.
    @param sample_interval: seconds between counter samples for the rates.
    @param head_timeout: seconds a client has to send a whole request, from
        connecting or from its previous answer; then it is closed.

    @ivar token: what control requests must send; None for no check.  A
        reload may set a new one.
    @ivar metrics: the Prometheus registry the metrics are generated from
        (its own, not the process-wide default).
    @ivar bound: the address listened on, once started.
    @ivar group: with workers (L{rproxy.workers}), what adds the workers'
        counters to the status and the metrics (C{status(own)} and
        C{metrics(own_registry)}); None in a single process.
    @ivar stopped: True once stopped (until started again): open connections
        are closed, after the answer to a request under way, and a request
        that still arrives is answered 503.
    """

    def __init__(
        self,
        config: AdminConfig,
        registry: Registry,
        listeners: Mapping[str, ListenerService],
        reactor: Any,
        reload: Callable[[], list[str]] = _no_reload,
        *,
        caches: Mapping[str, Any] | None = None,
        limits: Mapping[str, Any] | None = None,
        discovery: Mapping[str, Any] | None = None,
        sample_interval: float = SAMPLE_INTERVAL,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        self.config = config
        self.token = config.token
        self.registry = registry
        self.listeners = listeners
        self.clock: IReactorTime = reactor
        self.reload = reload
        self.caches: Mapping[str, Any] = caches if caches is not None else {}
        self.discovery: Mapping[str, Any] = discovery if discovery is not None else {}
        self.rates = RateSampler(reactor)
        self.metrics = metrics_registry(
            ProxyCollector(
                self._pools,
                listeners,
                self.caches,
                limits=limits,
                discovery=self.discovery,
            )
        )
        self.site = _AdminSite(
            AdminResource(self), timeout=head_timeout, reactor=reactor
        )
        self.site.noisy = False
        self.port: IListeningPort | None = None
        self.bound: IAddress | None = None
        self.stopped = False
        self.group: Any = None
        self._reactor = reactor
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = reactor
        self._sample_interval = sample_interval

    def _pools(self) -> Registry:
        return self.registry

    def sample(self) -> None:
        """
        Sample the counters now (for the rates).
        """
        self.rates.sample(self.registry, self.listeners)

    def status(self) -> Snapshot:
        """
        Every listener, pool and backend now, as the JSON status shows them.
        """
        status = snapshot(
            self.registry,
            self.listeners,
            self.rates,
            self.clock.seconds(),
            self.discovery,
        )
        status["caches"] = [
            {"name": name, **cache.snapshot()}
            for name, cache in list(self.caches.items())
        ]
        if self.group is not None:
            status = self.group.status(status)
        return status

    def metrics_text(self) -> bytes:
        """
        The Prometheus text exposition of C{metrics} (with the workers'
        counters when there is a C{group}).
        """
        if self.group is not None:
            text: bytes = self.group.metrics(self.metrics)
            return text
        return generate_latest(self.metrics)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is not None:
            return
        endpoint = serverFromString(self._reactor, self.config.listen)
        result: list[IListeningPort | Failure] = []
        endpoint.listen(self.site).addBoth(result.append)
        if not result:
            raise RuntimeError(f"admin: {self.config.listen} did not bind")
        outcome = result[0]
        if isinstance(outcome, Failure):
            raise SystemExit(
                f"rproxy: the admin interface cannot listen on "
                f"{self.config.listen!r}: {outcome.getErrorMessage()}"
            )
        self.port = outcome
        self.bound = host = outcome.getHost()
        log.info(
            "admin interface on {address} ({bound}), control token {token}",
            address=self.config.listen,
            bound=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
            token="required" if self.token is not None else "not required",
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()
        self.stopped = False
        self._sampler.start(self._sample_interval, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.stopped = True
        if self._sampler.running:
            self._sampler.stop()
        port, self.port = self.port, None
        stopping = None if port is None else port.stopListening()
        self.site.close_connections()
        return succeed(None) if stopping is None else stopping
