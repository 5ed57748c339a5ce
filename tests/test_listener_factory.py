"""The one listener-factory interface: the HTTP, TCP and SNI fronts provide
IListenerFactory, describe what they serve, hand their connections and
counters over on reload, and drain or abort their connections; the table of
fronts builds each config protocol."""

from __future__ import annotations

import tomllib

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rproxy.backends import Backend, Pool, Registry
from rproxy.config import PROTOCOLS, parse_config
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.interfaces import IListenerFactory, ListenerDescription
from rproxy.service import ProxyService
from rproxy.service._fronts import FRONTS
from rproxy.tcp import TCPFrontProtocol, TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

CLIENT = IPv4Address("TCP", "192.0.2.7", 4000)


def http_factory(registry: Registry, clock: Clock, *routes: Route) -> HTTPProxyFactory:
    return HTTPProxyFactory(
        registry,
        clock,
        HTTPSettings(listener="front", router=Router(routes)),
        endpoint_for=FakeEndpoints(),
    )


class FactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.web = Pool("web", [Backend("10.0.0.1", 80)], now=self.clock.seconds)
        self.api = Pool("api", [Backend("10.0.0.2", 80)], now=self.clock.seconds)
        self.registry = Registry([self.web, self.api])
        self.endpoints = FakeEndpoints()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def tcp(self) -> TCPProxyFactory:
        return TCPProxyFactory(self.web, self.clock, endpoint_for=self.endpoints)

    def sni(self, default: str | None = None) -> SNIProxyFactory:
        routes = SNIRoutes.from_routes(
            [("api.example.com", "api"), ("*.example.com", "web")], default
        )
        return SNIProxyFactory(self.registry, routes, self.clock)

    def test_every_front_provides_the_interface(self) -> None:
        """The HTTP, TCP and SNI factories provide L{IListenerFactory}."""
        for factory in (
            http_factory(self.registry, self.clock, Route("web")),
            self.tcp(),
            self.sni(),
        ):
            self.assertTrue(verifyObject(IListenerFactory, factory))

    def test_http_describes_the_pools_of_its_routes_and_its_default(self) -> None:
        """
        An HTTP listener's pools are those its routes name, once each, in
        order; its default pool is that of the route without host or prefix.
        """
        factory = http_factory(
            self.registry,
            self.clock,
            Route("api", path_prefix="/api/"),
            Route("api", host="api.example.com"),
            Route("web"),
        )
        self.assertEqual(
            factory.describe(), ListenerDescription("http", "web", ("api", "web"))
        )
        only_prefixed = http_factory(
            self.registry, self.clock, Route("api", path_prefix="/api/")
        )
        self.assertEqual(
            only_prefixed.describe(), ListenerDescription("http", None, ("api",))
        )

    def test_tcp_and_sni_describe_their_pools(self) -> None:
        """
        A tcp listener serves its pool; an SNI listener the pools of its
        routes, with its default pool (if any) as the default.
        """
        self.assertEqual(
            self.tcp().describe(), ListenerDescription("tcp", "web", ("web",))
        )
        self.assertEqual(
            self.sni("web").describe(),
            ListenerDescription("sni", "web", ("api", "web")),
        )
        self.assertEqual(
            self.sni().describe(), ListenerDescription("sni", None, ("api", "web"))
        )

    def test_http_keeps_itself_with_new_http_settings(self) -> None:
        """
        An HTTP factory given another HTTP factory takes its settings and
        stays in use (its connections read their settings from it).
        """
        running = http_factory(self.registry, self.clock, Route("web"))
        keep_alive, stats = running.keep_alive, running.stats
        replacement = http_factory(self.registry, self.clock, Route("api"))
        self.assertIs(running.reconfigure(replacement), running)
        self.assertIs(running.settings, replacement.settings)
        self.assertIs(running.keep_alive, keep_alive)
        self.assertIs(running.stats, stats)

    def test_a_replacement_takes_over_connections_and_counters(self) -> None:
        """
        Any other change serves with the replacement, which takes over the
        running factory's connections and counters.
        """
        cases = [
            (self.tcp(), self.tcp()),
            (self.sni(), self.sni("web")),
            (http_factory(self.registry, self.clock, Route("web")), self.tcp()),
            (self.tcp(), http_factory(self.registry, self.clock, Route("web"))),
        ]
        for running, replacement in cases:
            connections, stats = running.connections, running.stats
            self.assertIs(running.reconfigure(replacement), replacement)
            self.assertIs(replacement.connections, connections)
            self.assertIs(replacement.stats, stats)

    def open_tcp(self, factory: TCPProxyFactory) -> tuple[HalfCloseTransport, ...]:
        proto = factory.buildProtocol(CLIENT)
        assert isinstance(proto, TCPFrontProtocol)
        client = connect(proto, HalfCloseTransport())
        server = self.endpoints.last.succeed()
        return client, server

    def test_drain_drops_what_is_left_after_the_grace(self) -> None:
        """
        Draining asks each connection to finish and aborts those still open
        after the grace; the Deferred fires once none is open.
        """
        factory = self.tcp()
        client, _ = self.open_tcp(factory)
        done = factory.drain(2.0)
        self.clock.advance(1.9)
        self.assertNoResult(done)
        self.assertFalse(client.aborted)
        self.clock.advance(0.1)
        self.assertTrue(client.aborted)
        self.successResultOf(done)
        self.assertEqual(len(factory.connections), 0)

    def test_abort_drops_every_connection_now(self) -> None:
        """L{abort} closes every open connection at once."""
        factory = self.tcp()
        clients = [self.open_tcp(factory)[0] for _ in range(2)]
        factory.abort()
        self.assertEqual([c.aborted for c in clients], [True, True])
        self.assertEqual(len(factory.connections), 0)
        self.assertEqual(factory.stats.connections_closed, 2)


def test_the_table_has_a_front_for_every_config_protocol() -> None:
    """Every C{protocol} the config accepts has its builder, and no other."""
    assert set(FRONTS) == set(PROTOCOLS)


CONFIG = """
[pools.web]
backends = ["10.0.0.1:80"]
[pools.api]
backends = ["10.0.0.2:443"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "web"
[[listeners.routes]]
path_prefix = "/api/"
pool = "api"

[[listeners]]
name = "raw"
protocol = "tcp"
listen = "tcp:9000"
pool = "web"

[[listeners]]
name = "sni"
protocol = "tcp"
listen = "tcp:9443"
sni_routes = { "api.example.com" = "api" }
"""


def test_proxy_service_builds_each_front_from_the_table() -> None:
    """
    An http listener gets the HTTP front, a tcp listener the TCP one, and a
    tcp listener with C{sni_routes} the SNI one.
    """
    service = ProxyService(
        parse_config(tomllib.loads(CONFIG), "c.toml"), MemoryReactorClock()
    )
    described = {
        name: listener.factory.describe()
        for name, listener in service.listeners.items()
    }
    assert described == {
        "front": ListenerDescription("http", "web", ("api", "web")),
        "raw": ListenerDescription("tcp", "web", ("web",)),
        "sni": ListenerDescription("sni", None, ("api",)),
    }
    assert isinstance(service.listeners["sni"].factory, SNIProxyFactory)
