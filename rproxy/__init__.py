"""rproxy: a reverse proxy and load balancer built on Twisted.

What an embedding Twisted program may import is listed in C{__all__}; the rest
of the package is private.  A TCP load balancer in a few lines::

    pool = Pool("web", [Backend.from_address("127.0.0.1:9001")], SmoothWeighted())
    HealthMonitor(pool, TCPCheck(reactor), reactor).startService()
    serverFromString(reactor, "tcp:8000").listen(TCPProxyFactory(pool, reactor))

An HTTP listener with a filter of your own::

    settings = HTTPSettings(listener="web", router=Router([Route("web")]),
                            filters=[MyFilter()])
    serverFromString(reactor, "tcp:8080").listen(
        HTTPProxyFactory(Registry([pool]), reactor, settings))
"""

from typing import Any

from rproxy._endpoints import client_endpoint
from rproxy._fds import FdLimit, raise_fd_limit
from rproxy._reactor import ProxyReactor
from rproxy._reactor import install as install_reactor
from rproxy.accesslog import AccessLog, access_events
from rproxy.acme.challenges import Challenges
from rproxy.attempts import BackendAttempt
from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.balancing import (
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    SmoothWeighted,
    TwoRandomChoices,
)
from rproxy.buildinfo import BuildInfo, build_info
from rproxy.config import Config, ConfigError, load_config
from rproxy.health import HealthMonitor, HTTPCheck, TCPCheck
from rproxy.http.exchange import Exchange, Phase
from rproxy.http.filters import HTTPFilter, LocalReply
from rproxy.http.filters.acme import AcmeChallenges
from rproxy.http.filters.headers import RequestHeaders, ResponseHeaders
from rproxy.http.filters.redirect import HTTPSRedirect
from rproxy.http.framing import Limits, RequestHead, ResponseHead
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.interfaces import (
    IBalancer,
    IHealthCheck,
    IHTTPFilter,
    IListenerFactory,
    IRegistry,
    IRouter,
)
from rproxy.outlier import OutlierDetector
from rproxy.policy import HashKey, OutlierPolicy, PoolPolicy
from rproxy.proxyprotocol import ProxyHeader, ProxyHeaderError
from rproxy.proxyprotocol.accept import ProxyHeaderFactory
from rproxy.service import ProxyService, ReloadError
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes
from rproxy.tls import ServerCertificate, ServerTLS, backend_tls, load_certificate

__all__ = [
    "AccessLog",
    "AcmeChallenges",
    "AcmeService",
    "AdminService",
    "AdminState",
    "Backend",
    "BackendAttempt",
    "BackendState",
    "BuildInfo",
    "Challenges",
    "Config",
    "ConfigError",
    "ConsistentHash",
    "Exchange",
    "FdLimit",
    "ForwardingPolicy",
    "HTTPCheck",
    "HTTPFilter",
    "HTTPProxyFactory",
    "HTTPSRedirect",
    "HTTPSettings",
    "HashKey",
    "HealthMonitor",
    "IBalancer",
    "IHTTPFilter",
    "IHealthCheck",
    "IListenerFactory",
    "IRegistry",
    "IRouter",
    "LeastConnections",
    "Limits",
    "LocalReply",
    "OutlierDetector",
    "OutlierPolicy",
    "Phase",
    "Pool",
    "PoolPolicy",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderFactory",
    "ProxyReactor",
    "ProxyService",
    "Registry",
    "ReloadError",
    "RequestHead",
    "RequestHeaders",
    "ResponseHead",
    "ResponseHeaders",
    "RoundRobin",
    "Route",
    "Router",
    "SNIProxyFactory",
    "SNIRoutes",
    "ServerCertificate",
    "ServerTLS",
    "SmoothWeighted",
    "TCPCheck",
    "TCPProxyFactory",
    "TwoRandomChoices",
    "access_events",
    "backend_tls",
    "build_info",
    "client_endpoint",
    "install_reactor",
    "load_certificate",
    "load_config",
    "raise_fd_limit",
]


def __getattr__(name: str) -> Any:
    # AcmeService pulls in the acme package (and requests), AdminService
    # prometheus-client and twisted.web: only on use.
    if name == "AcmeService":
        from rproxy.acme.service import AcmeService

        return AcmeService
    if name == "AdminService":
        from rproxy.admin import AdminService

        return AdminService
    raise AttributeError(f"module 'rproxy' has no attribute {name!r}")
