"""Building the parts of the proxy from the config's models: pools with their
backends' TLS, health checks, TLS listeners' certificates, HTTP listener
settings, the access log.  L{rproxy.service.ProxyService} puts them
together, at start and on reload."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime

from rproxy.accesslog import AccessLog, AccessLogService
from rproxy.backends import Pool
from rproxy.balancing import make_balancer
from rproxy.config import Config, HealthConfig, ListenerConfig, PoolConfig
from rproxy.config._tls import BackendTLSConfig, ListenerTLSConfig
from rproxy.health import HTTPCheck, TCPCheck
from rproxy.http.filters import IHTTPFilter
from rproxy.http.filters.rules import RuleSet
from rproxy.http.framing import Limits
from rproxy.http.h2.settings import h2_settings
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPSettings
from rproxy.http.routing import Router
from rproxy.interfaces import IHealthCheck
from rproxy.limits.limiter import Limiter
from rproxy.outlier import OutlierDetector
from rproxy.service._admission import routes_with_access
from rproxy.service._caches import route_with_filters
from rproxy.service._limits import limit_filters, route_with_limits
from rproxy.service._pool_update import TLSFor, new_backend, pool_policy
from rproxy.service._rules import with_rules
from rproxy.tls import ServerCertificate, ServerTLS, backend_tls, load_certificate

__all__ = [
    "access_log_service",
    "build_check",
    "build_pool",
    "client_tls",
    "http_settings",
    "listener_certificates",
    "server_tls",
    "tls_problem",
]


def build_pool(
    config: PoolConfig,
    clock: IReactorTime,
    tls_for: TLSFor | Literal["from config"] = "from config",
) -> Pool:
    """
    A L{Pool} with the backends, balancer, thresholds and policy of
    C{config}, and its outlier detector (on C{clock}).

    @param tls_for: the backends' TLS settings if already made by
        L{client_tls} (None for none); by default made from C{config.tls}.
    """
    if tls_for == "from config":
        tls_for = None if config.tls is None else client_tls(config.tls)
    pool = Pool(
        config.name,
        [new_backend(b, tls_for) for b in config.backends],
        make_balancer(config.balance),
        rise=config.health.rise,
        fall=config.health.fall,
        policy=pool_policy(config),
        now=clock.seconds,
    )
    OutlierDetector(pool, clock)  # pool.outlier: ejects by the pool's policy
    return pool


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


def server_tls(
    config: ListenerTLSConfig, *, http: bool, http2: bool = False
) -> ServerTLS:
    """
    The certificates (read now) and settings of a TLS listener; ALPN offers
    C{http/1.1} on an http listener, and C{h2} before it with C{http2}.

    @raise ValueError: naming a file that cannot be used.
    @raise OpenSSL.SSL.Error: if OpenSSL refuses a certificate.
    """
    return ServerTLS(
        listener_certificates(config),
        profile=config.profile,
        min_version=config.min_version,
        alpn=((b"h2", b"http/1.1") if http2 else (b"http/1.1",)) if http else (),
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
    filters: Sequence[IHTTPFilter] = (),
    *,
    tls: bool | None = None,
    limits: Mapping[str, Limiter] | None = None,
    caches: Mapping[str, Any] = {},
    auth: Any = None,
    rules: Mapping[str, RuleSet] | None = None,
) -> HTTPSettings:
    """
    The settings of an HTTP listener, with each pool's backend timeouts and
    keep-alive limits.

    @param filters: the listener's built-in filters (ACME challenges, the
        redirect to https), before its header rewriting.
    @param tls: whether the connections are TLS; by default, whether the
        listener has C{tls}.
    @param limits: the running rate limits the listener and its routes
        name, by name.
    @param caches: the running caches routes name, by name.
    @param auth: the running forward-auth filters
        (L{rproxy.service._auth.RunningAuth}), for routes with C{auth}.
    @param rules: the request rule sets its routes may name.
    """
    timeouts = config.timeouts
    for_route = None if auth is None else partial(auth.filter_for, listener.name)
    via = b"1.1 rproxy" if listener.via else None
    secure = listener.tls is not None if tls is None else tls
    hsts = listener.tls.hsts if secure and listener.tls is not None else None
    return HTTPSettings(
        listener=listener.name,
        scheme=b"https" if secure else b"http",
        add_response_headers=(
            ((b"Strict-Transport-Security", hsts.encode("ascii")),) if hsts else ()
        ),
        filters=(
            *filters,
            *limit_filters(listener.limit, limits or {}),
            *listener.headers.filters(),
        ),
        # A route's address lists go first, then its rules and its rate
        # limits, before its forward auth and its cache can answer.
        router=Router(
            routes_with_access(
                with_rules(
                    [
                        route_with_limits(
                            route_with_filters(r, caches, for_route), limits or {}
                        )
                        for r in listener.routes
                    ],
                    rules or {},
                )
            )
        ),
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
        request_body_timeout=timeouts.request_body,
        request_body_min_rate=listener.min_body_rate,
        keep_alive_timeout=timeouts.keep_alive,
        response_timeout=timeouts.response,
        tunnel_timeout=timeouts.tunnel,
        http2=h2_settings(listener.http2, listener.h2c, tls=secure),
    )


def tls_problem(error: Exception) -> str:
    """
    What is wrong with a certificate, for a reload's error list.
    """
    if isinstance(error, SSL.Error):
        reasons = [r[2] for r in error.args[0] if len(r) > 2] if error.args else []
        return "OpenSSL refuses the certificate: " + (
            "; ".join(str(r) for r in reasons) or str(error)
        )
    return str(error)


def access_log_service(config: Config, reactor: Any) -> AccessLogService | None:
    """
    The access log C{config} asks for, not started; None if it asks for none.
    """
    if config.access_log is None:
        return None
    return AccessLogService(
        AccessLog(config.access_log.path, config.access_log.format, reactor)
    )
