"""rproxy: a reverse proxy and load balancer built on Twisted.

What an embedding Twisted program may import is listed in C{__all__}; the rest
of the package is private.  A TCP load balancer in a few lines::

    pool = Pool("web", [Backend.from_address("127.0.0.1:9001")], SmoothWeighted())
    HealthMonitor(pool, TCPCheck(reactor), reactor).startService()
    serverFromString(reactor, "tcp:8000").listen(TCPProxyFactory(pool, reactor))
"""

from typing import Any

from rproxy._endpoints import HandshakeEndpoint, client_endpoint
from rproxy._reactor import ProxyReactor
from rproxy._reactor import install as install_reactor
from rproxy.accesslog import AccessEvents, AccessLog, access_events
from rproxy.acme.challenges import Challenges
from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.balancing import (
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    SmoothWeighted,
    TwoRandomChoices,
    make_balancer,
)
from rproxy.buildinfo import BuildInfo, build_info
from rproxy.config import Config, ConfigError, load_config
from rproxy.health import HealthMonitor, HTTPCheck, TCPCheck
from rproxy.http.framing import Limits
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.interfaces import IBalancer, IHealthCheck, IRegistry, IRouter
from rproxy.proxyprotocol import ProxyHeader, ProxyHeaderError
from rproxy.proxyprotocol.accept import ProxyHeaderFactory
from rproxy.service import ProxyService, ReloadError
from rproxy.stats import LatencyHistogram, ListenerStats
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes
from rproxy.tls import ServerCertificate, ServerTLS, backend_tls, load_certificate

__all__ = [
    "AccessEvents",
    "AccessLog",
    "AcmeService",
    "AdminService",
    "AdminState",
    "Backend",
    "BackendState",
    "BuildInfo",
    "Challenges",
    "Config",
    "ConfigError",
    "ConsistentHash",
    "ForwardingPolicy",
    "HTTPCheck",
    "HTTPProxyFactory",
    "HTTPSettings",
    "HandshakeEndpoint",
    "HealthMonitor",
    "IBalancer",
    "IHealthCheck",
    "IRegistry",
    "IRouter",
    "LatencyHistogram",
    "LeastConnections",
    "Limits",
    "ListenerStats",
    "Pool",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderFactory",
    "ProxyReactor",
    "ProxyService",
    "Registry",
    "ReloadError",
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
    "make_balancer",
]


def __getattr__(name: str) -> Any:
    # AcmeService pulls in the acme package (and requests), AdminService
    # prometheus-client and twisted.web: only on use.
    if name == "AcmeService":
        from rproxy.acme import AcmeService

        return AcmeService
    if name == "AdminService":
        from rproxy.admin import AdminService

        return AdminService
    raise AttributeError(f"module 'rproxy' has no attribute {name!r}")
