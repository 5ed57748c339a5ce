"""rproxy: a reverse proxy and load balancer built on Twisted.

What an embedding Twisted program may import is listed in C{__all__}; the rest
of the package is private.  A TCP load balancer in a few lines::

    pool = Pool("web", [Backend.from_address("127.0.0.1:9001")], SmoothWeighted())
    HealthMonitor(pool, TCPCheck(reactor), reactor).startService()
    serverFromString(reactor, "tcp:8000").listen(TCPProxyFactory(pool, reactor))
"""

from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.balancing import (
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    SmoothWeighted,
    TwoRandomChoices,
    make_balancer,
)
from rproxy.config import Config, ConfigError, load_config
from rproxy.health import HealthMonitor, HTTPCheck, TCPCheck
from rproxy.interfaces import IBalancer, IHealthCheck, IRegistry
from rproxy.service import ProxyService
from rproxy.tcp import TCPProxyFactory

__all__ = [
    "AdminState",
    "Backend",
    "BackendState",
    "Config",
    "ConfigError",
    "ConsistentHash",
    "HTTPCheck",
    "HealthMonitor",
    "IBalancer",
    "IHealthCheck",
    "IRegistry",
    "LeastConnections",
    "Pool",
    "ProxyService",
    "Registry",
    "RoundRobin",
    "SmoothWeighted",
    "TCPCheck",
    "TCPProxyFactory",
    "TwoRandomChoices",
    "load_config",
    "make_balancer",
]
