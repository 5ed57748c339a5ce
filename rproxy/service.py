"""Builds the running proxy from a L{Config}: registry, health monitors and
listeners, under one L{MultiService}."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.logger import Logger

from rproxy._challenges import Challenges
from rproxy._listener_service import ListenerService
from rproxy._tls_config import BackendTLSConfig, ListenerTLSConfig
from rproxy.accesslog import AccessLog, AccessLogService
from rproxy.backends import Backend, Pool, Registry
from rproxy.balancing import make_balancer
from rproxy.config import Config, HealthConfig, ListenerConfig, PoolConfig
from rproxy.health import HealthMonitor, HTTPCheck, TCPCheck
from rproxy.http.framing import Limits
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.local import Answer, acme_challenges, first_answer, https_redirect
from rproxy.http.routing import Router
from rproxy.interfaces import IHealthCheck
from rproxy.sni import SNIProxyFactory, SNIRoutes
from rproxy.tcp import TCPProxyFactory
from rproxy.tls import ServerCertificate, ServerTLS, backend_tls, load_certificate

log = Logger(namespace="rproxy.service")


def build_pool(config: PoolConfig, clock: IReactorTime) -> Pool:
    """
    A L{Pool} with the backends, balancer and thresholds of C{config}.
    """
    tls_for = None if config.tls is None else client_tls(config.tls)
    backends = [
        Backend(
            b.host,
            b.port,
            name=b.name,
            weight=b.weight,
            max_connections=b.max_connections,
            backup=b.backup,
            tls=None if tls_for is None else tls_for(b.host),
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
        send_proxy=config.send_proxy,
    )


def client_tls(
    config: BackendTLSConfig,
) -> Callable[[str], IOpenSSLClientConnectionCreator]:
    """
    What makes the client TLS connection creator for a backend at a host of
    a pool with the TLS settings C{config}.  The client certificate is read
    once, and backends verified as the same name share one creator (and one
    reading of the CA file).
    """
    client = None
    if config.cert is not None:
        client = load_certificate(config.cert, config.key)
    creators: dict[str, IOpenSSLClientConnectionCreator] = {}

    def for_host(host: str) -> IOpenSSLClientConnectionCreator:
        name = config.server_name or host
        if name not in creators:
            creators[name] = backend_tls(
                name, verify=config.verify, ca=config.ca, client_certificate=client
            )
        return creators[name]

    return for_host


def listener_certificates(config: ListenerTLSConfig) -> list[ServerCertificate]:
    """
    The certificates a TLS listener's files hold, read now.

    @raise ValueError: naming a file that cannot be used.
    """
    return [load_certificate(c.cert, c.key) for c in config.certificates]


def server_tls(config: ListenerTLSConfig, *, http: bool) -> ServerTLS:
    """
    The certificates and settings of a TLS listener; ALPN offers
    C{http/1.1} on an http listener.
    """
    return ServerTLS(
        listener_certificates(config),
        min_version=config.min_version,
        alpn=(b"http/1.1",) if http else (),
    )


def build_check(
    reactor: Any, health: HealthConfig, send_proxy: str | None = None
) -> IHealthCheck | None:
    """
    The active check C{health} asks for, or None for C{check = "none"};
    with C{send_proxy}, it opens with a PROXY header of that version.
    """
    if health.check == "tcp":
        return TCPCheck(
            reactor, port=health.port, timeout=health.timeout, send_proxy=send_proxy
        )
    if health.check == "http":
        return HTTPCheck(
            reactor,
            path=health.path,
            expect_status=health.expect_status,
            host=health.host,
            port=health.port,
            timeout=health.timeout,
            send_proxy=send_proxy,
        )
    return None


def http_settings(
    config: Config,
    listener: ListenerConfig,
    answer: Answer | None = None,
    *,
    tls: bool | None = None,
) -> HTTPSettings:
    """
    The settings of an HTTP listener, with each pool's backend timeouts and
    keep-alive limits.

    @param answer: requests answered without proxying (ACME challenges).
    @param tls: whether the connections are TLS; by default, whether the
        listener has C{tls}.
    """
    timeouts = config.timeouts
    via = b"1.1 rproxy" if listener.via else None
    secure = listener.tls is not None if tls is None else tls
    hsts = listener.tls.hsts if secure and listener.tls is not None else None
    return HTTPSettings(
        listener=listener.name,
        scheme=b"https" if secure else b"http",
        add_response_headers=(
            ((b"Strict-Transport-Security", hsts.encode("ascii")),) if hsts else ()
        ),
        answer=answer,
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


class ProxyService(MultiService):
    """
    The whole proxy for one L{Config}: one health monitor per pool, one
    listener per listener, sharing one L{Registry}, and the access log if
    the config names one.  The access log starts before the listeners and
    stops after they have drained, so it records every connection.

    A TLS listener's certificates are in C{tls[name]}; L{reload_certificates}
    reads their files again.  With C{[acme]}, C{acme} obtains and renews a
    certificate, every plain HTTP listener answers its challenges from
    C{challenges}, and every TLS listener serves it.
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
        self.tls: dict[str, ServerTLS] = {}
        self.challenges = Challenges()
        self.acme: Service | None = None
        for pool_config in config.pools:
            pool = build_pool(pool_config, reactor)
            self.registry.add(pool)
            monitor = HealthMonitor(
                pool,
                build_check(reactor, pool_config.health, pool_config.send_proxy),
                reactor,
                interval=pool_config.health.interval,
                timeout=pool_config.health.timeout,
            )
            monitor.setName(f"health:{pool.name}")
            monitor.setServiceParent(self)
            self.monitors[pool.name] = monitor
        for listener in config.listeners:
            factory = self._factory(listener, reactor)
            tls = None
            if listener.tls is not None:
                tls = server_tls(listener.tls, http=listener.protocol == "http")
                self.tls[listener.name] = tls
            accept = None
            if listener.accept_proxy:
                accept = (listener.trusted_proxies, config.timeouts.proxy_header)
            self._listen(listener.name, listener.listen, factory, reactor, tls, accept)
            if listener.tls is not None and listener.tls.redirect_http_from:
                self._listen(
                    f"{listener.name}:redirect",
                    listener.tls.redirect_http_from,
                    self._redirect_factory(listener, reactor),
                    reactor,
                    None,
                    accept,
                )
        if config.acme is not None:
            from rproxy.acme import AcmeService

            self.acme = AcmeService(
                config.acme, reactor, self.challenges, self.install_certificate
            )
            self.acme.setName("acme")
            self.acme.setServiceParent(self)

    def _listen(
        self,
        name: str,
        description: str,
        factory: TCPProxyFactory | HTTPProxyFactory | SNIProxyFactory,
        reactor: Any,
        tls: ServerTLS | None,
        accept_proxy: tuple[tuple[str, ...], float] | None = None,
    ) -> None:
        service = ListenerService(
            name,
            description,
            factory,
            reactor,
            self.config.shutdown_grace,
            tls,
            accept_proxy,
        )
        service.setName(f"listener:{name}")
        service.setServiceParent(self)
        self.listeners[name] = service

    def _answer(self) -> Answer | None:
        if self.config.acme is None:
            return None
        return acme_challenges(self.challenges)

    def _redirect_factory(
        self, listener: ListenerConfig, reactor: Any
    ) -> HTTPProxyFactory:
        def https_port() -> int | None:
            # The bound port (the file may say 0): the https listener binds
            # before its redirect listener, so it is known by any request.
            bound = self.listeners[listener.name].bound
            return getattr(bound, "port", None)

        redirect = https_redirect(https_port)
        acme = self._answer()
        answer = redirect if acme is None else first_answer(acme, redirect)
        settings = http_settings(self.config, listener, answer, tls=False)
        return HTTPProxyFactory(self.registry, reactor, settings)

    def install_certificate(self, certificate: ServerCertificate) -> None:
        """
        Serve C{certificate} (obtained by ACME) on every TLS listener, for
        new handshakes.
        """
        for tls in self.tls.values():
            tls.install(certificate)
        log.info(
            "certificate for {names} (until {not_after}) installed on {count} "
            "TLS listeners",
            names=", ".join(certificate.names),
            not_after=certificate.not_after.isoformat(),
            count=len(self.tls),
        )

    def reload_certificates(self) -> bool:
        """
        Read every TLS listener's certificate files again and serve them to
        new handshakes; connections already open keep theirs.  If any file
        cannot be used, nothing changes and the problems are logged.

        @return: whether the new certificates were installed.
        """
        fresh: dict[str, list[ServerCertificate]] = {}
        problems = []
        for listener in self.config.listeners:
            if listener.tls is None:
                continue
            try:
                fresh[listener.name] = listener_certificates(listener.tls)
            except ValueError as e:
                problems.append(f"listener {listener.name}: {e}")
        if problems:
            log.error(
                "certificates not reloaded, the old ones stay in use: {problems}",
                problems="; ".join(problems),
            )
            return False
        for name, certificates in fresh.items():
            self.tls[name].replace_files(certificates)
        log.info(
            "certificates reloaded for listeners {listeners}",
            listeners=", ".join(fresh) or "(none)",
        )
        return True

    def _factory(
        self, listener: ListenerConfig, reactor: Any
    ) -> TCPProxyFactory | HTTPProxyFactory | SNIProxyFactory:
        config = self.config
        if listener.protocol == "http":
            answer = self._answer() if listener.tls is None else None
            return HTTPProxyFactory(
                self.registry, reactor, http_settings(config, listener, answer)
            )
        if listener.sni_routes:
            return SNIProxyFactory(
                self.registry,
                SNIRoutes.from_routes(listener.sni_routes, listener.pool),
                reactor,
                listener=listener.name,
                client_hello_timeout=config.timeouts.client_hello,
                pool_timeouts={
                    pool.name: (pool.timeouts.connect, pool.timeouts.idle)
                    for pool in config.pools
                },
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
