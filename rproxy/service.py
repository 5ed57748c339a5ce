"""Builds the running proxy from a L{Config}: registry, health monitors and
listeners, under one L{MultiService}."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.accesslog import AccessLog, AccessLogService
from rproxy.backends import Backend, Pool, Registry
from rproxy.balancing import make_balancer
from rproxy.config import Config, HealthConfig, ListenerConfig, PoolConfig
from rproxy.health import HealthMonitor, HTTPCheck, TCPCheck
from rproxy.http.framing import Limits
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Router
from rproxy.interfaces import IHealthCheck
from rproxy.tcp import TCPProxyFactory

log = Logger(namespace="rproxy.service")


def build_pool(config: PoolConfig, clock: IReactorTime) -> Pool:
    """
    A L{Pool} with the backends, balancer and thresholds of C{config}.
    """
    backends = [
        Backend(
            b.host,
            b.port,
            name=b.name,
            weight=b.weight,
            max_connections=b.max_connections,
            backup=b.backup,
        )
        for b in config.backends
    ]
    return Pool(
        config.name,
        backends,
        make_balancer(config.balance),
        rise=config.health.rise,
        fall=config.health.fall,
        connect_tries=config.connect_tries,
        hash_key=config.hash_key,
        now=clock.seconds,
    )


def build_check(reactor: Any, health: HealthConfig) -> IHealthCheck | None:
    """
    The active check C{health} asks for, or None for C{check = "none"}.
    """
    if health.check == "tcp":
        return TCPCheck(reactor, port=health.port, timeout=health.timeout)
    if health.check == "http":
        return HTTPCheck(
            reactor,
            path=health.path,
            expect_status=health.expect_status,
            host=health.host,
            port=health.port,
            timeout=health.timeout,
        )
    return None


def http_settings(config: Config, listener: ListenerConfig) -> HTTPSettings:
    """
    The settings of an HTTP listener, with each pool's backend timeouts and
    keep-alive limits.
    """
    timeouts = config.timeouts
    via = b"1.1 rproxy" if listener.via else None
    return HTTPSettings(
        listener=listener.name,
        router=Router(listener.routes),
        policy=ForwardingPolicy(
            trusted=listener.trusted_proxies,
            x_forwarded=listener.x_forwarded,
            forwarded=listener.forwarded,
            via=via,
            preserve_host=listener.preserve_host,
        ),
        limits=Limits(
            max_head=listener.max_header_size,
            max_headers=listener.max_headers,
            max_target=listener.max_target,
            max_body=listener.max_body,
        ),
        remove_response_headers=frozenset(
            name.encode() for name in listener.remove_response_headers
        ),
        request_head_timeout=timeouts.request_head,
        keep_alive_timeout=timeouts.keep_alive,
        connect_timeout=timeouts.connect,
        response_timeout=timeouts.response,
        tunnel_timeout=timeouts.tunnel,
        pool_timeouts={
            pool.name: (pool.timeouts.connect, pool.timeouts.response)
            for pool in config.pools
        },
        pool_keep_alive={
            pool.name: (pool.keep_alive.max_idle, pool.keep_alive.idle_timeout)
            for pool in config.pools
        },
    )


class ListenerService(Service):
    """
    Listens on a server endpoint with a proxy factory.  Stopping it stops
    listening at once, then gives open connections C{grace} seconds to
    finish before dropping them.
    """

    def __init__(
        self,
        name: str,
        description: str,
        factory: TCPProxyFactory | HTTPProxyFactory,
        reactor: Any,
        grace: float,
    ):
        self.listener = name
        self.description = description
        self.factory = factory
        self.grace = grace
        self._reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = serverFromString(self._reactor, self.description)
        listening: Deferred[IListeningPort] = endpoint.listen(self.factory)
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
        host = outcome.getHost()
        factory = self.factory
        serves = (
            f"pool {factory.pool.name}"
            if isinstance(factory, TCPProxyFactory)
            else "HTTP routes"
        )
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


class ProxyService(MultiService):
    """
    The whole proxy for one L{Config}: one health monitor per pool, one
    listener per listener, sharing one L{Registry}, and the access log if
    the config names one.  The access log starts before the listeners and
    stops after they have drained, so it records every connection.
    """

    def __init__(self, config: Config, reactor: Any):
        super().__init__()
        self.config = config
        self.access_log: AccessLogService | None = None
        if config.access_log is not None:
            self.access_log = AccessLogService(
                AccessLog(config.access_log.path, config.access_log.format, reactor)
            )
        self.registry = Registry()
        self.monitors: dict[str, HealthMonitor] = {}
        self.listeners: dict[str, ListenerService] = {}
        for pool_config in config.pools:
            pool = build_pool(pool_config, reactor)
            self.registry.add(pool)
            monitor = HealthMonitor(
                pool,
                build_check(reactor, pool_config.health),
                reactor,
                interval=pool_config.health.interval,
                timeout=pool_config.health.timeout,
            )
            monitor.setName(f"health:{pool.name}")
            monitor.setServiceParent(self)
            self.monitors[pool.name] = monitor
        for listener in config.listeners:
            factory = self._factory(listener, reactor)
            service = ListenerService(
                listener.name, listener.listen, factory, reactor, config.shutdown_grace
            )
            service.setName(f"listener:{listener.name}")
            service.setServiceParent(self)
            self.listeners[listener.name] = service

    def _factory(
        self, listener: ListenerConfig, reactor: Any
    ) -> TCPProxyFactory | HTTPProxyFactory:
        config = self.config
        if listener.protocol == "http":
            return HTTPProxyFactory(
                self.registry, reactor, http_settings(config, listener)
            )
        assert listener.pool is not None
        pool_config = config.pool(listener.pool)
        return TCPProxyFactory(
            self.registry.get(listener.pool),
            reactor,
            listener=listener.name,
            connect_timeout=pool_config.timeouts.connect,
            idle_timeout=pool_config.timeouts.idle,
        )

    def startService(self) -> None:
        if self.access_log is not None:
            self.access_log.startService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        stopping: Deferred[None] = super().stopService()
        access_log = self.access_log
        if access_log is not None:

            def stop_log(result: object) -> object:
                access_log.stopService()
                return result

            stopping.addBoth(stop_log)
        return stopping
