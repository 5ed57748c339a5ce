"""Discovery in a ProxyService (in memory): answers change the pool as a
reload would, reloads keep discovery that did not change, and the admin
shows it."""

from __future__ import annotations

import tomllib

from twisted.internet.testing import MemoryReactorClock

from rproxy.admin import AdminService
from rproxy.backends import BackendState
from rproxy.config import Config, parse_config
from rproxy.config._admin import AdminConfig
from rproxy.service import ProxyService
from tests.discovery.fakes import FakeResolver, a, srv

LISTENER = """
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "api"
"""


def config(pool: str, check: str = "tcp") -> Config:
    text = f"[pools.api]\n{pool}\n[pools.api.health]\ncheck = '{check}'\n{LISTENER}"
    return parse_config(tomllib.loads(text), "c.toml")


DNS = 'discover = "dns:api.test:80"\nresolver = "127.0.0.1:5353"'


def running(
    text: str = DNS, check: str = "tcp"
) -> tuple[ProxyService, FakeResolver, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    resolver = FakeResolver()
    resolver.set("api.test", [a("api.test", "10.0.0.1", 10)])
    service = ProxyService(config(text, check), reactor)
    service.discovery.resolver_for = lambda _: resolver
    service.startService()
    return service, resolver, reactor


def test_answer_fills_the_pool_and_new_backends_wait_for_checks() -> None:
    """The first answer's backends join the pool, down until checks pass."""
    service, _, _ = running()
    pool = service.registry.get("api")
    (backend,) = pool.backends
    assert (backend.name, backend.state) == ("10.0.0.1:80", BackendState.DOWN)
    assert backend.reason == "not checked yet"
    assert service.monitors["api"]._loops.keys() == {backend}
    assert service.config.pool("api").backends[0].name == "10.0.0.1:80"
    service.stopService()


def test_pool_is_empty_until_dns_answers() -> None:
    """A discovering pool has no backends before its first answer."""
    reactor = MemoryReactorClock()
    service = ProxyService(config(DNS), reactor)
    resolver = FakeResolver()
    resolver.hold = True
    service.discovery.resolver_for = lambda _: resolver
    service.startService()
    assert service.registry.get("api").backends == []
    assert len(resolver.held) == 2  # A and AAAA asked
    service.stopService()


def test_new_backend_ramps_up_under_slow_start_once_checked() -> None:
    """A backend DNS adds passes rise checks, then ramps up over slow_start."""
    service, _, _ = running(DNS + "\nslow_start = 10")
    pool = service.registry.get("api")
    (backend,) = pool.backends
    assert pool.ramps == {}
    pool.record_check(backend, True, "passed")
    pool.record_check(backend, True, "passed")
    assert backend.state is BackendState.UP
    assert backend in pool.ramps and pool.weight_of(backend) < backend.weight
    service.stopService()


def test_changed_answer_keeps_unchanged_backends_and_their_counters() -> None:
    """A backend in both answers keeps its object, state and counters."""
    service, resolver, reactor = running(check="none")
    pool = service.registry.get("api")
    (first,) = pool.backends
    assert first.state is BackendState.UP
    first.connections_total = 7
    resolver.set("api.test", [a("api.test", "10.0.0.1"), a("api.test", "10.0.0.2")])
    reactor.advance(10)
    assert [b.name for b in pool.backends] == ["10.0.0.1:80", "10.0.0.2:80"]
    assert pool.get("10.0.0.1:80") is first and first.connections_total == 7
    resolver.set("api.test", [a("api.test", "10.0.0.2")])
    reactor.advance(30)
    assert [b.name for b in pool.backends] == ["10.0.0.2:80"]
    service.stopService()


def test_srv_weights_and_backups_reach_the_pool() -> None:
    """SRV weights become backend weights; higher priorities are backups."""
    name = "_http._tcp.api.test"
    service, resolver, _reactor = running(
        f'discover = "srv:{name}"\nresolver = "127.0.0.1:5353"', check="none"
    )
    resolver.set(
        name,
        [srv(name, 0, 3, 8080, "a.test"), srv(name, 1, 9, 8081, "b.test")],
    )
    resolver.set("a.test", [a("a.test", "10.0.0.1")])
    resolver.set("b.test", [a("b.test", "10.0.0.2")])
    service.discovery.services["api"].query()
    pool = service.registry.get("api")
    assert [(b.name, b.weight, b.backup) for b in pool.backends] == [
        ("10.0.0.1:8080", 3, False),
        ("10.0.0.2:8081", 9, True),
    ]
    service.stopService()


def test_reload_with_same_discover_keeps_discovery_and_backends() -> None:
    """A reload not touching discover asks nothing and changes no backend."""
    service, resolver, _ = running()
    pool = service.registry.get("api")
    (backend,) = pool.backends
    discovery = service.discovery.services["api"]
    asked = len(resolver.asked)
    changes = service.apply(config(DNS))
    assert changes == []
    assert service.discovery.services["api"] is discovery and discovery.running
    assert len(resolver.asked) == asked
    assert pool.backends == [backend]
    # Another setting of the pool changes, its backends stay.
    service.apply(config(DNS + "\nconnect_tries = 5"))
    assert pool.backends == [backend] and pool.policy.connect_tries == 5
    assert service.discovery.services["api"] is discovery
    service.stopService()


def test_reload_with_other_discover_restarts_discovery() -> None:
    """A changed discover stops the old source; its backends stay until the
    new source answers."""
    service, resolver, _ = running()
    pool = service.registry.get("api")
    old = service.discovery.services["api"]
    resolver.hold = True
    service.apply(config('discover = "dns:api.test:81"\nresolver = "127.0.0.1:5353"'))
    new = service.discovery.services["api"]
    assert new is not old and not old.running and new.running
    assert [b.name for b in pool.backends] == ["10.0.0.1:80"]
    resolver.hold = False
    new.query()
    assert [b.name for b in pool.backends] == ["10.0.0.1:81"]
    service.stopService()


def test_reload_to_static_backends_stops_discovery() -> None:
    """A pool that lists backends again stops discovering."""
    service, _, _reactor = running()
    old = service.discovery.services["api"]
    changes = service.apply(config('backends = ["10.0.0.5:80"]'))
    assert "pool api no longer discovered" in changes
    assert not old.running and "api" not in service.discovery.services
    assert [b.name for b in service.registry.get("api").backends] == ["10.0.0.5:80"]
    service.stopService()


def test_stop_leaves_no_delayed_calls_of_discovery() -> None:
    """Stopping the proxy stops discovery's schedule."""
    service, _, reactor = running(check="none")
    discovery = service.discovery.services["api"]
    service.stopService()
    assert not discovery.running and discovery.state.next_query_at is None
    assert all(
        getattr(c.func, "__self__", None) is not discovery
        for c in reactor.getDelayedCalls()
    )


def test_admin_shows_discovery_state_and_counts() -> None:
    """/status.json gives each pool's discovery; /metrics counts queries."""
    service, resolver, reactor = running(check="none")
    admin = AdminService(
        AdminConfig(listen="tcp:0"),
        service.registry,
        service.listeners,
        reactor,
        discovery=service.discovery.states,
    )
    (pool,) = admin.status()["pools"]
    assert pool["discovery"] == {
        "source": "dns:api.test:80",
        "backends": ["10.0.0.1:80"],
        "last_answer_at": 0.0,
        "next_query_at": 10.0,
        "last_error": None,
        "last_error_at": None,
        "queries_total": 1,
        "failures_total": 0,
        "changes_total": 1,
    }
    del resolver.records["api.test"]
    reactor.advance(10)
    from prometheus_client import generate_latest

    text = generate_latest(admin.metrics).decode()
    assert 'rproxy_discovery_queries_total{outcome="failed",pool="api"} 1.0' in text
    assert 'rproxy_discovery_queries_total{outcome="ok",pool="api"} 1.0' in text
    assert 'rproxy_discovery_changes_total{pool="api"} 1.0' in text
    assert 'rproxy_discovery_backends{pool="api"} 1.0' in text
    assert admin.status()["pools"][0]["discovery"]["last_error"] == "NXDOMAIN"
    service.stopService()


def test_pool_without_discover_has_no_discovery_state() -> None:
    """A pool of listed backends shows discovery as null."""
    reactor = MemoryReactorClock()
    service = ProxyService(config('backends = ["10.0.0.5:80"]'), reactor)
    admin = AdminService(AdminConfig(listen="tcp:0"), service.registry, {}, reactor)
    assert admin.status()["pools"][0]["discovery"] is None


class _Worker(ProxyService):
    runs_discovery = False


def test_a_proxy_that_does_not_run_discovery_asks_nothing() -> None:
    """With runs_discovery false (a worker) no discovery starts."""
    reactor = MemoryReactorClock()
    service = _Worker(config(DNS), reactor)
    service.startService()
    assert service.discovery.services == {}
    assert service.apply(config(DNS + "\nconnect_tries = 4")) == ["pool api changed"]
    assert service.discovery.services == {}
    service.stopService()


class _Supervisor(ProxyService):
    pushed = 0

    def pools_changed(self) -> None:
        self.pushed += 1


def test_owner_is_told_of_every_change() -> None:
    """An owner with pools_changed() hears of each answer that changed a pool."""
    reactor = MemoryReactorClock()
    resolver = FakeResolver()
    resolver.set("api.test", [a("api.test", "10.0.0.1", 10)])
    service = _Supervisor(config(DNS), reactor)
    service.discovery.resolver_for = lambda _: resolver
    service.startService()
    assert service.pushed == 1
    reactor.advance(10)  # the same answer
    assert service.pushed == 1
    resolver.set("api.test", [a("api.test", "10.0.0.2", 10)])
    reactor.advance(10)
    assert service.pushed == 2
    service.stopService()
