"""The running rate limits: built from [limits.NAME], put on the routes and
listeners that name them, kept across a reload while their settings stay,
their Redis stores connected while the proxy runs, and their counters in
/metrics."""

from __future__ import annotations

import tomllib
from typing import Any

from prometheus_client.exposition import generate_latest
from twisted.internet.testing import MemoryReactorClock

from rproxy.admin._metrics import ProxyCollector, metrics_registry
from rproxy.config import Config, parse_config
from rproxy.http.filters.limits import RateLimit
from rproxy.service import ProxyService

CONFIG = """
[pools.web]
backends = ["10.0.0.1:80"]

[limits.per_ip]
rate = "20/s"
burst = 40

[limits.all]
rate = "1000/s"
key = "header:host"
{extra}

[[listeners]]
name = "public"
protocol = "http"
listen = "tcp:0"
pool = "web"
limit = ["all"]

[[listeners.routes]]
path_prefix = "/api/"
pool = "web"
limit = ["per_ip"]
"""


def parse(extra: str = "") -> Config:
    return parse_config(tomllib.loads(CONFIG.format(extra=extra)), "c.toml")


def settings(service: ProxyService) -> Any:
    return service.listeners["public"].factory.settings


def test_routes_and_listeners_get_the_filters_they_name() -> None:
    """A route's limit is its first filter; a listener's is among its own."""
    service = ProxyService(parse(), MemoryReactorClock())
    routes = settings(service).router.routes
    (limit,) = [f for f in routes[0].filters if isinstance(f, RateLimit)]
    assert limit.limiter is service.limits.limiters["per_ip"]
    assert routes[1].filters == ()
    listener = [
        f for f in settings(service).filters.filters if isinstance(f, RateLimit)
    ]
    assert [f.limiter for f in listener] == [service.limits.limiters["all"]]


def test_reload_keeps_an_unchanged_limiter_and_its_counts() -> None:
    """A reload that leaves a limit's settings as they were keeps the same
    limiter, so the keys it counts and its counters carry on; one whose
    settings changed starts afresh."""
    service = ProxyService(parse(), MemoryReactorClock())
    per_ip = service.limits.limiters["per_ip"]
    per_ip.check("192.0.2.7")
    all_before = service.limits.limiters["all"]
    changes = service.apply(_evolve(parse(), burst_all=5))
    assert service.limits.limiters["per_ip"] is per_ip
    assert ("192.0.2.7" in per_ip.local, per_ip.allowed) == (True, 1)
    assert service.limits.limiters["all"] is not all_before
    assert service.limits.limiters["all"].burst == 5
    assert changes == ["limit all changed"]
    listener = [
        f for f in settings(service).filters.filters if isinstance(f, RateLimit)
    ]
    assert listener[0].limiter is service.limits.limiters["all"]


def _evolve(config: Config, burst_all: int) -> Config:
    import attrs

    limits = tuple(
        attrs.evolve(limit, burst=burst_all) if limit.name == "all" else limit
        for limit in config.limits
    )
    return attrs.evolve(config, limits=limits)


def test_removed_limit_is_reported() -> None:
    """A limit a reload drops goes (and the routes lose its filter)."""
    service = ProxyService(parse('[limits.extra]\nrate = "1/s"'), MemoryReactorClock())
    changes = service.apply(parse())
    assert "limit extra removed" in changes
    assert "extra" not in service.limits.limiters


def test_store_connects_when_the_proxy_starts_and_closes_when_it_stops() -> None:
    """A Redis store is connected from startService on (not before), one
    connection for every limit naming that server, and stopped with the
    proxy."""
    reactor = MemoryReactorClock()
    extra = '[limits.shared]\nrate = "1/s"\nstore = "redis://127.0.0.1:6390/1"\n'
    extra += '[limits.shared2]\nrate = "2/s"\nstore = "redis://127.0.0.1:6390/1"\n'
    service = ProxyService(parse(extra), reactor)
    assert reactor.tcpClients == []
    limiters = service.limits.limiters
    assert limiters["shared"].store is limiters["shared2"].store
    service.limits.start()
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [
        ("127.0.0.1", 6390)
    ]
    stopped = service.limits.stop()
    assert stopped.called
    assert not service.limits.running


def test_reload_keeps_a_store_its_limits_still_use() -> None:
    """A store stays connected across a reload that still names it, and is
    closed by one that no longer does."""
    reactor = MemoryReactorClock()
    extra = '[limits.shared]\nrate = "1/s"\nstore = "redis://127.0.0.1:6390"\n'
    service = ProxyService(parse(extra), reactor)
    service.limits.start()
    store = service.limits.limiters["shared"].store
    changed = extra.replace('"1/s"', '"2/s"')
    service.apply(parse(changed))
    assert service.limits.limiters["shared"].store is store
    assert len(reactor.tcpClients) == 1
    service.apply(parse())
    assert service.limits.stores == {}


def test_metrics_show_each_limiters_counters() -> None:
    """/metrics: rproxy_limit_requests_total by limit and outcome, the
    requests held and the keys held."""
    service = ProxyService(parse(), MemoryReactorClock())
    per_ip = service.limits.limiters["per_ip"]
    per_ip.allowed, per_ip.rejected, per_ip.delayed, per_ip.fallback = 5, 2, 1, 3
    per_ip.local.check("192.0.2.7")
    collector = ProxyCollector(lambda: [], {}, limits=service.limits.limiters)
    text = generate_latest(metrics_registry(collector)).decode()
    for line in (
        'rproxy_limit_requests_total{limit="per_ip",outcome="allowed"} 5.0',
        'rproxy_limit_requests_total{limit="per_ip",outcome="rejected"} 2.0',
        'rproxy_limit_requests_total{limit="per_ip",outcome="delayed"} 1.0',
        'rproxy_limit_requests_total{limit="per_ip",outcome="fallback"} 3.0',
        'rproxy_limit_held_requests{limit="per_ip"} 0.0',
        'rproxy_limit_keys{limit="per_ip"} 1.0',
        'rproxy_limit_requests_total{limit="all",outcome="allowed"} 0.0',
    ):
        assert line in text
