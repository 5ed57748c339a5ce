"""Tests for rproxy.service: a validated config turned into listener settings."""

from __future__ import annotations

import tomllib

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from rproxy.backends import BackendState, Pool, Registry
from rproxy.config import Config, KeepAliveConfig, parse_config
from rproxy.http.keepalive import KeepAlivePool
from rproxy.http.listener import HTTPProxyFactory
from rproxy.service import ProxyService, build_pool, http_settings
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

KEEP_ALIVE_CONFIG = """
[pools.web]
backends = ["10.0.0.1:80"]
[pools.web.keep_alive]
max_idle = 0
idle_timeout = 4

[pools.api]
backends = ["10.0.0.2:80"]
[pools.api.keep_alive]
idle_timeout = 2.5

[pools.db]
backends = ["10.0.0.3:5432"]

[[listeners]]
name = "public"
protocol = "http"
listen = "tcp:8080"
pool = "web"

[[listeners.routes]]
path_prefix = "/api/"
pool = "api"
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "c.toml")


def _keep_alive(pool: Pool) -> tuple[int, float]:
    return pool.policy.keep_alive_max_idle, pool.policy.keep_alive_timeout


def test_pool_policies_carry_each_pools_keep_alive_limits() -> None:
    """
    Every pool's C{keep_alive} table, or its defaults, reaches its policy
    as (max idle per backend, idle timeout).
    """
    config = parse(KEEP_ALIVE_CONFIG)
    pools = {pool.name: build_pool(pool, Clock()) for pool in config.pools}
    assert _keep_alive(pools["web"]) == (0, 4.0)
    assert _keep_alive(pools["api"]) == (256, 2.5)
    assert _keep_alive(pools["db"]) == (256, 30.0)


def test_keep_alive_config_defaults_are_the_keep_alive_pools_own() -> None:
    """
    The documented config defaults are those a L{KeepAlivePool} uses when
    no pool overrides them.
    """
    pool = KeepAlivePool(Clock())
    default = KeepAliveConfig()
    assert (pool.max_idle, pool.idle_timeout) == (
        default.max_idle,
        default.idle_timeout,
    )


def test_proxy_service_gives_its_pools_the_keep_alive_limits() -> None:
    """
    The pools L{ProxyService} runs, which HTTP listeners read, have the
    configured keep-alive limits.
    """
    service = ProxyService(parse(KEEP_ALIVE_CONFIG), MemoryReactorClock())
    assert _keep_alive(service.registry.get("web")) == (0, 4.0)
    assert _keep_alive(service.registry.get("api")) == (256, 2.5)


def _proxied_get(config: Config, path: bytes) -> tuple[HTTPProxyFactory, Clock]:
    """
    Proxy one keep-alive GET for C{path} through the config's HTTP listener
    on fake endpoints; return its factory and clock, the response complete.
    """
    clock = Clock()
    endpoints = FakeEndpoints()
    factory = HTTPProxyFactory(
        Registry([build_pool(pool, clock) for pool in config.pools]),
        clock,
        http_settings(config, config.listeners[0]),
        endpoint_for=endpoints,
    )
    proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
    client = connect(proto, HalfCloseTransport())
    proto.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    endpoints.last.succeed()
    endpoints.last.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert client.value().startswith(b"HTTP/1.1 200 OK\r\n")
    client.loseConnection()
    return factory, clock


def test_max_idle_zero_closes_backend_connections_after_a_response() -> None:
    """
    A pool with C{max_idle = 0} keeps no idle backend connection.
    """
    factory, clock = _proxied_get(parse(KEEP_ALIVE_CONFIG), b"/")
    (backend,) = factory.registry.get("web").backends
    assert factory.keep_alive.idle_count(backend) == 0
    assert clock.getDelayedCalls() == []


def test_idle_backend_connection_is_closed_after_the_pools_idle_timeout() -> None:
    """
    A pool's C{idle_timeout} is how long its idle backend connections live.
    """
    factory, clock = _proxied_get(parse(KEEP_ALIVE_CONFIG), b"/api/")
    (backend,) = factory.registry.get("api").backends
    assert factory.keep_alive.idle_count(backend) == 1
    clock.advance(2.4)
    assert factory.keep_alive.idle_count(backend) == 1
    clock.advance(0.1)
    assert factory.keep_alive.idle_count(backend) == 0
    assert clock.getDelayedCalls() == []


def test_http_forget_drops_idle_connections_to_those_backends() -> None:
    """
    L{HTTPProxyFactory.forget} (a reload removed or moved the backend)
    closes the idle connections kept to it.
    """
    factory, _ = _proxied_get(parse(KEEP_ALIVE_CONFIG), b"/api/")
    (backend,) = factory.registry.get("api").backends
    assert factory.keep_alive.idle_count(backend) == 1
    factory.forget([backend])
    assert factory.keep_alive.idle_count(backend) == 0


def test_http_drain_closes_idle_backend_connections() -> None:
    """
    Once its clients are gone, a drained HTTP listener closes the backend
    connections it kept for reuse, and leaves no timer behind.
    """
    factory, clock = _proxied_get(parse(KEEP_ALIVE_CONFIG), b"/api/")
    (backend,) = factory.registry.get("api").backends
    assert factory.keep_alive.idle_count(backend) == 1
    done = factory.drain(5.0)
    assert done.called
    assert factory.keep_alive.idle_count(backend) == 0
    assert clock.getDelayedCalls() == []


def _two_backend_pool(check: str, second: str = "10.0.0.2:80") -> Config:
    return parse(
        f"""
[pools.web]
backends = [
  {{ address = "10.0.0.1:80", name = "a" }},
  {{ address = "{second}", name = "b" }},
]
health = {{ check = "{check}", rise = 2 }}

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "web"
"""
    )


def _started_with_a(check: str) -> ProxyService:
    """A proxy whose pool C{web} has backend a only."""
    config = _two_backend_pool(check)
    first = attrs.evolve(config.pools[0], backends=config.pools[0].backends[:1])
    return ProxyService(attrs.evolve(config, pools=(first,)), MemoryReactorClock())


def test_backend_added_by_reload_waits_for_rise_checks() -> None:
    """
    A backend a reload adds to a checked pool is down, "not checked yet",
    and no candidate, until C{rise} checks pass; one whose address changed
    is new too.  Those present from the start are up at once.
    """
    service = _started_with_a("tcp")
    pool = service.registry.get("web")
    a = pool.get("a")
    assert a.state is BackendState.UP
    for config in (_two_backend_pool("tcp"), _two_backend_pool("tcp", "10.0.0.3:80")):
        service.apply(config)
        b = pool.get("b")
        assert (b.state, b.reason) == (BackendState.DOWN, "not checked yet")
        assert pool.candidates() == [a]
    pool.record_check(b, True, "passed")
    assert pool.candidates() == [a]
    pool.record_check(b, True, "passed")
    assert (b.state, b.reason) == (BackendState.UP, "2 checks passed")
    assert pool.candidates() == [a, b]


def test_backend_added_by_reload_without_checks_is_up_at_once() -> None:
    """With C{check = "none"} there is nothing to wait for."""
    service = _started_with_a("none")
    service.apply(_two_backend_pool("none"))
    pool = service.registry.get("web")
    assert [b.state for b in pool.candidates()] == [BackendState.UP] * 2
