"""Request rules in a running proxy: the service puts a set's filter first on
the routes naming it, a reload swaps sets atomically (a request follows the
set of the moment it began), unchanged rules keep their hit counts, and
/metrics shows every rule's hits and each set's tarpit."""

from __future__ import annotations

import tomllib
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from rproxy.admin._metrics import ProxyCollector, metrics_registry
from rproxy.config import Config, load_config, parse_config
from rproxy.http.filters.rules import RulesFilter
from rproxy.http.listener import HTTPProxyFactory
from rproxy.service import ProxyService
from rproxy.service._rules import live_rule_sets
from rproxy.testing import HalfCloseTransport, connect

CONFIG = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
path_prefix = "/guarded/"
pool = "web"
rules = "t"
[[listeners.routes]]
pool = "web"

[rules.t]
deny = [
  { name = "no-trace", method = "TRACE" },
  { name = "no-admin", path = "/guarded/admin" },
]
"""


def config(text: str = CONFIG) -> Config:
    return parse_config(tomllib.loads(text), "/etc/rproxy/c.toml")


def factory(service: ProxyService) -> HTTPProxyFactory:
    found = service.listeners["front"].factory
    assert isinstance(found, HTTPProxyFactory)
    return found


def test_the_set_filter_goes_first_on_its_routes() -> None:
    """A route naming a set gets the set's filter before its own; one that
    names none gets none."""
    service = ProxyService(config(), MemoryReactorClock())
    settings = factory(service).settings
    guarded, other = settings.router.routes  # type: ignore[attr-defined]
    (first,) = settings.chain_for(guarded).filters
    assert isinstance(first, RulesFilter)
    assert first.rules is service.rule_sets["t"]
    assert not settings.chain_for(other).filters


def send(service: ProxyService, request: bytes) -> HalfCloseTransport:
    proto = factory(service).buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
    transport = connect(proto, HalfCloseTransport())
    proto.dataReceived(request)
    return transport


def test_reload_keeps_an_unchanged_set_and_its_counts() -> None:
    """A reload with the same rules keeps the very same set: hit counts and
    the tarpit carry on."""
    service = ProxyService(config(), MemoryReactorClock())
    send(service, b"TRACE /guarded/x HTTP/1.1\r\nHost: a\r\n\r\n")
    before = service.rule_sets["t"]
    assert before.rules[0].stats.hits == 1
    changes = service.apply(config())
    assert service.rule_sets["t"] is before
    assert not [change for change in changes if change.startswith("rules")]


def test_reload_swaps_a_changed_set() -> None:
    """A changed set is compiled again: its unchanged rules keep their
    counts, changed ones start at 0, the tarpit is the same one, and the
    next request on an open connection follows the new rules."""
    reactor = MemoryReactorClock()
    service = ProxyService(config(), reactor)
    old = service.rule_sets["t"]
    client = send(service, b"TRACE /guarded/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 403 ")
    changed = CONFIG.replace('path = "/guarded/admin"', 'path_prefix = "/guarded/"')
    changes = service.apply(config(changed))
    assert "rules t changed" in changes
    new = service.rule_sets["t"]
    assert new is not old
    assert new.tarpit is old.tarpit
    assert [rule.stats.hits for rule in new.rules] == [1, 0]
    # The connection's next request takes the new set; the old one is
    # left as it was.
    client.clear()
    client.protocol.dataReceived(b"GET /guarded/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 403 ")
    assert [rule.stats.hits for rule in new.rules] == [1, 1]
    assert [rule.stats.hits for rule in old.rules] == [1, 0]


def test_reload_adds_and_removes_sets() -> None:
    """Sets come and go with the config, and the reload says so."""
    service = ProxyService(config(), MemoryReactorClock())
    bare = CONFIG.replace('rules = "t"\n', "").split("[rules.t]")[0]
    assert "rules t removed" in service.apply(config(bare))
    assert service.rule_sets == {}
    assert "rules t added" in service.apply(config())


def test_metrics_show_each_rules_hits() -> None:
    """/metrics has a hit counter per rule (labelled with its set, name and
    action) and each set's tarpit gauge and overflows."""
    service = ProxyService(config(), MemoryReactorClock())
    send(service, b"TRACE /guarded/x HTTP/1.1\r\nHost: a\r\n\r\n")
    send(service, b"TRACE /guarded/y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert live_rule_sets(service.listeners) == [service.rule_sets["t"]]
    registry = metrics_registry(
        ProxyCollector(lambda: service.registry, service.listeners)
    )
    text = generate_latest(registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    rule = (("action", "deny"), ("rule", "no-trace"), ("rules", "t"))
    assert samples[("rproxy_rule_hits_total", rule)] == 2
    other = (("action", "deny"), ("rule", "no-admin"), ("rules", "t"))
    assert samples[("rproxy_rule_hits_total", other)] == 0
    assert samples[("rproxy_rules_tarpit_held", (("rules", "t"),))] == 0
    assert samples[("rproxy_rules_tarpit_overflows_total", (("rules", "t"),))] == 0


def test_reload_reads_list_files_again(tmp_path: Path) -> None:
    """A list file is read again on reload: a set whose file changed is
    compiled again with the new entries."""
    (tmp_path / "bots.txt").write_text("sqlmap\n")
    text = CONFIG.replace(
        "deny = [\n", 'deny = [\n  { header = "User-Agent", list = "bots.txt" },\n'
    )
    (tmp_path / "c.toml").write_text(text)
    service = ProxyService(load_config(tmp_path / "c.toml"), MemoryReactorClock())
    request = b"GET /guarded/x HTTP/1.1\r\nHost: a\r\nUser-Agent: nikto\r\n\r\n"
    assert not send(service, request).value()
    (tmp_path / "bots.txt").write_text("sqlmap\nnikto\n")
    assert service.reload() == []
    assert send(service, request).value().startswith(b"HTTP/1.1 403 ")


def test_route_filter_order() -> None:
    """On a route, its address lists run first, then its rules, then its
    cache."""
    from rproxy.http.filters.access import ClientAccess
    from rproxy.http.filters.cache import CacheFilter

    text = (
        CONFIG.replace(
            'rules = "t"\n', 'rules = "t"\ncache = "c"\nallow = ["10.0.0.0/8"]\n'
        )
        + '\n[caches.c]\nmemory = "1MiB"\nmax_object = "64KiB"\n'
    )
    service = ProxyService(config(text), MemoryReactorClock())
    settings = factory(service).settings
    guarded = settings.router.routes[0]  # type: ignore[attr-defined]
    kinds = [type(one) for one in settings.chain_for(guarded).filters]
    assert kinds == [ClientAccess, RulesFilter, CacheFilter]


def test_rules_run_before_rate_limits() -> None:
    """A route's rules come before its rate limits: a refused request does
    not spend the client's allowance."""
    from rproxy.http.filters.access import ClientAccess

    text = (
        CONFIG.replace(
            'rules = "t"\n', 'rules = "t"\nlimit = ["l"]\nallow = ["10.0.0.0/8"]\n'
        )
        + '\n[limits.l]\nrate = "10/s"\n'
    )
    service = ProxyService(config(text), MemoryReactorClock())
    settings = factory(service).settings
    guarded = settings.router.routes[0]  # type: ignore[attr-defined]
    kinds = [type(one) for one in settings.chain_for(guarded).filters]
    assert kinds[:2] == [ClientAccess, RulesFilter]
    assert len(kinds) == 3
