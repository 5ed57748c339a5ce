"""Discovery against a real DNS server on 127.0.0.1 (twisted.names, UDP and
TCP), with twisted.names' client: records changed by the test reach the
backends, SRV weights and ports, TTL 0 floored, the server going away, a
truncated answer asked again over TCP, and the proxy routing HTTP to what
DNS says."""

from __future__ import annotations

import http.client
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rproxy.config import BackendConfig, load_config
from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery import AnswerChange, DNSDiscovery, close_resolver, make_resolver
from rproxy.service import ProxyService
from tests.integration.dns import DNSServer, a, srv
from tests.integration.helpers import free_port

#: the most a test waits for a condition.
DEADLINE = 20.0


@inlineCallbacks
def wait_until(condition: Callable[[], bool]) -> Any:
    """
    Fire once C{condition()} holds, checking every 10 ms; fail after
    L{DEADLINE} seconds.
    """
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE}s: {condition}")
        yield task.deferLater(reactor, 0.01, lambda: None)


class Applied:
    def __init__(self) -> None:
        self.answers: list[list[tuple[str, int, bool]]] = []

    def __call__(
        self, backends: tuple[BackendConfig, ...], change: AnswerChange
    ) -> None:
        self.answers.append([(b.name, b.weight, b.backup) for b in backends])


class DiscoveryAgainstServer(TestCase):
    def setUp(self) -> None:
        self.dns = DNSServer()
        self.addCleanup(self.dns.stop)

    def discovery(self, source: str, **settings: Any) -> tuple[DNSDiscovery, Applied]:
        kind, _, rest = source.partition(":")
        name, port = (
            (rest.rsplit(":", 1)[0], int(rest.rsplit(":", 1)[1]))
            if kind == "dns"
            else (rest, None)
        )
        config = DiscoveryConfig(
            kind, name, port, resolver=("127.0.0.1", self.dns.port), **settings
        )
        applied = Applied()
        service = DNSDiscovery(
            "api",
            config,
            lambda: make_resolver(config, reactor),
            reactor,
            applied,
            close=close_resolver,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service, applied

    @inlineCallbacks
    def test_backends_added_and_removed_follow_the_records(self) -> Any:
        """A records added and removed on the server are added and removed."""
        zone = self.dns.zone
        zone.set("api.test", dns.A, [a("api.test", "10.0.0.1")])
        _service, applied = self.discovery("dns:api.test:8080", min_ttl=0.05)
        yield wait_until(lambda: len(applied.answers) == 1)
        assert applied.answers[0] == [("10.0.0.1:8080", 1, False)]
        zone.set(
            "api.test", dns.A, [a("api.test", "10.0.0.1"), a("api.test", "10.0.0.2")]
        )
        yield wait_until(lambda: len(applied.answers) == 2)
        assert [n for n, _, _ in applied.answers[1]] == [
            "10.0.0.1:8080",
            "10.0.0.2:8080",
        ]
        zone.set("api.test", dns.A, [a("api.test", "10.0.0.2")])
        yield wait_until(lambda: len(applied.answers) == 3)
        assert applied.answers[2] == [("10.0.0.2:8080", 1, False)]

    @inlineCallbacks
    def test_ttl_zero_is_asked_again_after_the_floor(self) -> Any:
        """A TTL-0 answer is asked again min_ttl later, not at once."""
        self.dns.zone.set("api.test", dns.A, [a("api.test", "10.0.0.1", ttl=0)])
        service, _applied = self.discovery("dns:api.test:80", min_ttl=7.0)
        yield wait_until(lambda: service.state.queries == 1)
        state = service.state
        assert state.next_query_at is not None and state.last_answer_at is not None
        assert state.next_query_at - state.last_answer_at == 7.0
        # One round: A and AAAA, nothing more until the floor.
        assert self.dns.factory.transports == ["udp", "udp"]

    @inlineCallbacks
    def test_srv_weights_ports_and_priorities(self) -> Any:
        """SRV weights and ports reach the backends; a higher priority is backup."""
        zone = self.dns.zone
        name = "_http._tcp.api.test"
        zone.set(
            name,
            dns.SRV,
            [
                srv(name, 10, 5, 8080, "a.test"),
                srv(name, 10, 20, 8081, "b.test"),
                srv(name, 20, 1, 9090, "c.test"),
            ],
        )
        zone.set("a.test", dns.A, [a("a.test", "10.0.0.1")])
        zone.set("b.test", dns.A, [a("b.test", "10.0.0.2")])
        zone.set("c.test", dns.A, [a("c.test", "10.0.0.3")])
        zone.glue = False  # the targets are asked for too
        _service, applied = self.discovery(f"srv:{name}")
        yield wait_until(lambda: len(applied.answers) == 1)
        assert applied.answers[0] == [
            ("10.0.0.1:8080", 5, False),
            ("10.0.0.2:8081", 20, False),
            ("10.0.0.3:9090", 1, True),
        ]

    @inlineCallbacks
    def test_server_going_away_keeps_the_last_answer(self) -> Any:
        """Once the server is gone, queries time out and the backends stay."""
        self.dns.zone.set("api.test", dns.A, [a("api.test", "10.0.0.1")])
        service, applied = self.discovery(
            "dns:api.test:80", min_ttl=0.05, max_ttl=0.1, timeout=0.2, hold=3600
        )
        yield wait_until(lambda: len(applied.answers) == 1)
        yield self.dns.stop()
        yield wait_until(lambda: service.state.failures >= 2)
        assert service.state.last_error == "timed out"
        assert [b.name for b in service.state.backends] == ["10.0.0.1:80"]
        assert len(applied.answers) == 1

    @inlineCallbacks
    def test_servfail_and_nxdomain_keep_the_last_answer(self) -> Any:
        """SERVFAIL and then NXDOMAIN from the server keep the backends."""
        zone = self.dns.zone
        zone.set("api.test", dns.A, [a("api.test", "10.0.0.1")])
        service, applied = self.discovery("dns:api.test:80", min_ttl=0.05, max_ttl=0.1)
        yield wait_until(lambda: len(applied.answers) == 1)
        zone.failing.add("api.test")
        yield wait_until(lambda: service.state.last_error == "SERVFAIL")
        zone.failing.clear()
        zone.records.clear()
        yield wait_until(lambda: service.state.last_error == "NXDOMAIN")
        assert len(applied.answers) == 1

    @inlineCallbacks
    def test_srv_answer_with_addresses_is_one_query(self) -> Any:
        """An SRV answer carrying its targets' addresses needs no more query."""
        zone = self.dns.zone
        name = "_http._tcp.api.test"
        zone.set(name, dns.SRV, [srv(name, 1, 1, 8080, "a.test")])
        zone.set("a.test", dns.A, [a("a.test", "10.0.0.1")])
        _service, applied = self.discovery(f"srv:{name}")
        yield wait_until(lambda: len(applied.answers) == 1)
        assert applied.answers[0] == [("10.0.0.1:8080", 1, False)]
        assert self.dns.factory.transports == ["udp"]

    @inlineCallbacks
    def test_truncated_answer_is_asked_again_over_tcp(self) -> Any:
        """A UDP answer with TC set is asked again over TCP, and used whole."""
        zone = self.dns.zone
        name = "_http._tcp.api.test"
        records = []
        for n in range(40):
            target = f"node-{n}.api.test"
            records.append(srv(name, 1, 1, 8000 + n, target))
            zone.set(target, dns.A, [a(target, f"10.0.1.{n + 1}")])
        zone.set(name, dns.SRV, records)
        self.dns.factory.truncate = True
        _service, applied = self.discovery(f"srv:{name}")
        yield wait_until(lambda: len(applied.answers) == 1)
        assert len(applied.answers[0]) == 40
        assert self.dns.factory.transports[:2] == ["udp", "tcp"]


class Named(Resource):
    """Answers with its name; C{/slow} waits until L{release}."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/slow":
            self.held.append(request)
            return NOT_DONE_YET
        return self.name.encode()

    def release(self) -> None:
        for request in self.held:
            request.write(f"{self.name} slow".encode())
            request.finish()
        self.held = []


def get(port: int, path: str = "/") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        conn.close()


class ProxyFollowsDNS(TestCase):
    @inlineCallbacks
    def test_proxy_routes_to_backends_found_in_dns_and_follows_a_change(self) -> Any:
        """HTTP reaches the SRV target; after a DNS change the new one only,
        once its health check passed, and the old one finishes its request."""
        dns_server = DNSServer()
        self.addCleanup(dns_server.stop)
        ports, sites = {}, {}
        for name in ("one", "two"):
            sites[name] = Named(name)
            port = reactor.listenTCP(  # type: ignore[attr-defined]
                0, Site(sites[name]), interface="127.0.0.1"
            )
            self.addCleanup(port.stopListening)
            ports[name] = port.getHost().port
        zone = dns_server.zone
        service_name = "_http._tcp.api.test"
        zone.set("one.test", dns.A, [a("one.test", "127.0.0.1")])
        zone.set("two.test", dns.A, [a("two.test", "127.0.0.1")])
        zone.set(
            service_name, dns.SRV, [srv(service_name, 0, 1, ports["one"], "one.test")]
        )
        listen = free_port()
        text = f"""
[pools.api]
discover = "srv:{service_name}"
resolver = "127.0.0.1:{dns_server.port}"
discover_min_ttl = 0.05
[pools.api.health]
check = "http"
path = "/health"
interval = 0.05
rise = 1

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:{listen}:interface=127.0.0.1"
pool = "api"
"""
        path = Path(tempfile.mkdtemp()) / "rproxy.toml"
        path.write_text(text)
        proxy = ProxyService(load_config(path), reactor)
        proxy.startService()
        self.addCleanup(proxy.stopService)
        pool = proxy.registry.get("api")
        yield wait_until(lambda: [b.state.value for b in pool.backends] == ["up"])
        answer = yield deferToThread(get, listen)
        assert answer == "200 one"
        first = pool.backends[0]
        # A request under way on the backend DNS is about to remove.
        slow = deferToThread(get, listen, "/slow")
        yield wait_until(lambda: bool(sites["one"].held))
        zone.set(
            service_name, dns.SRV, [srv(service_name, 0, 1, ports["two"], "two.test")]
        )
        yield wait_until(
            lambda: (
                [(b.port, b.state.value) for b in pool.backends]
                == [(ports["two"], "up")]
            )
        )
        answer = yield deferToThread(get, listen)
        assert answer == "200 two"
        # The removed backend finishes what it was serving.
        assert first.active == 1
        sites["one"].release()
        answer = yield slow
        assert answer == "200 one slow"
        status = proxy.discovery.states["api"]
        assert status.changes == 2 and status.last_error is None
