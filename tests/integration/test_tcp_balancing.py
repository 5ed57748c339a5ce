"""TCP load balancing over real sockets on 127.0.0.1, in-process, with the
service built from a config as twistd builds it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SkipTest, TestCase

from rproxy.backends import Backend, BackendState, Pool
from rproxy.config import parse_config
from rproxy.service import ProxyService
from rproxy.tcp import TCPProxyFactory
from tests.integration.helpers import Exchange, greeter_factory


def wait_for_state(pool: Pool, backend: Backend, state: BackendState) -> Deferred[None]:
    """A Deferred that fires when C{backend} enters C{state}."""
    done: Deferred[None] = Deferred()

    def observer(p: Pool, b: Backend, old: Any, new: BackendState, r: str) -> None:
        if b is backend and new is state:
            pool.unobserve(observer)
            done.callback(None)

    pool.observe(observer)
    return done


class TCPBalancingTests(TestCase):
    timeout = 60

    def start(self, balance: str = "round_robin", health: str = "") -> None:
        self.factories = [greeter_factory(f"b{i}") for i in range(3)]
        self.ports = []
        for factory in self.factories:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.ports.append(port)
            self.addCleanup(port.stopListening)
        backends = ", ".join(
            f'{{ address = "127.0.0.1:{p.getHost().port}", name = "b{i}" }}'
            for i, p in enumerate(self.ports)
        )
        text = f"""
[pools.p]
balance = "{balance}"
backends = [{backends}]
[pools.p.health]
{health}
[[listeners]]
name = "front"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "p"
"""
        import tomllib

        config = parse_config(tomllib.loads(text), "test.toml")
        self.service = ProxyService(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        listener = self.service.listeners["front"]
        assert listener.port is not None
        self.proxy_port = listener.port.getHost().port
        self.pool = self.service.registry.get("p")

    def exchange(self, payload: bytes = b"ping") -> Deferred[bytes]:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        client = Exchange(payload)
        connecting = endpoint.connect(Factory.forProtocol(lambda: client))
        return connecting.addCallback(lambda _: client.done)

    @inlineCallbacks
    def greetings(self, count: int) -> Any:
        names = []
        for _ in range(count):
            reply = yield self.exchange()
            name, _, echo = reply.partition(b"\n")
            self.assertEqual(echo, b"ping")
            names.append(name.decode())
        return names

    @inlineCallbacks
    def test_round_robin_spreads_connections_evenly(self) -> Any:
        """Six connections over three backends: two each, in turn."""
        self.start()
        names = yield self.greetings(6)
        self.assertEqual(names, ["b0", "b1", "b2", "b0", "b1", "b2"])

    @inlineCallbacks
    def test_routes_around_a_dead_backend_and_takes_it_back(self) -> Any:
        """A killed backend is marked down and skipped; restarted, it returns."""
        self.start(health="interval = 0.1\ntimeout = 0.5\nrise = 2\nfall = 2")
        dead = self.pool.get("b1")
        went_down = wait_for_state(self.pool, dead, BackendState.DOWN)
        port_number = self.ports[1].getHost().port
        yield self.ports[1].stopListening()
        # Before health notices, connections still succeed: refused connects
        # are retried on another backend.
        names = yield self.greetings(6)
        self.assertNotIn("b1", names)
        yield went_down
        names = yield self.greetings(12)
        self.assertEqual(Counter(names), {"b0": 6, "b2": 6})

        came_back = wait_for_state(self.pool, dead, BackendState.UP)
        port = reactor.listenTCP(port_number, self.factories[1], interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield came_back
        self.assertEqual(dead.reason, "2 checks passed")
        names = yield self.greetings(6)
        self.assertEqual(Counter(names), {"b0": 2, "b1": 2, "b2": 2})

    @inlineCallbacks
    def test_half_close_carries_a_large_request_and_its_reply(self) -> Any:
        """A client that shuts its write side still gets the whole reply."""
        self.start()
        payload = bytes(range(256)) * 4096
        reply = yield self.exchange(payload)
        name, _, echo = reply.partition(b"\n")
        self.assertEqual(echo, payload)
        backend = self.pool.get(name.decode())
        self.assertEqual(backend.bytes_in, len(payload))
        self.assertEqual(backend.bytes_out, len(reply))

    @inlineCallbacks
    def test_weighted_pool_follows_weights(self) -> Any:
        """With weights 1, 2 and 3, six connections go 1, 2 and 3 ways."""
        self.start(balance="weighted")
        for backend, weight in zip(self.pool.backends, (1, 2, 3), strict=True):
            self.pool.set_weight(backend, weight)
        names = yield self.greetings(6)
        self.assertEqual(Counter(names), {"b0": 1, "b1": 2, "b2": 3})

    @inlineCallbacks
    def test_every_backend_down_closes_clients_at_once(self) -> Any:
        """With no backend up, a client is closed without data."""
        self.start(health='check = "none"')
        for backend in self.pool.backends:
            self.pool.mark_down(backend, "test")
        reply = yield self.exchange()
        self.assertEqual(reply, b"")
        self.assertEqual(sum(f.connections for f in self.factories), 0)


class TCPBalancingWithoutSpliceTests(TCPBalancingTests):
    """The same behaviour on the portable path: each transport the other's
    producer, bytes through Python."""

    def start(self, balance: str = "round_robin", health: str = "") -> None:
        super().start(balance, health)
        self.service.listeners["front"].factory.splice = False


class AddressFamilyTests(TestCase):
    """Backends named by IPv6 literal and by hostname, over real sockets."""

    timeout = 30

    @inlineCallbacks
    def relay_through(self, address: str, interface: str) -> Any:
        factory = greeter_factory("named")
        port = reactor.listenTCP(0, factory, interface=interface)
        self.addCleanup(port.stopListening)
        pool = Pool(
            "p", [Backend.from_address(address.format(port=port.getHost().port))]
        )
        proxy = reactor.listenTCP(
            0, TCPProxyFactory(pool, reactor), interface="127.0.0.1"
        )
        self.addCleanup(proxy.stopListening)
        client = Exchange(b"hi")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.getHost().port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        reply = yield client.done
        return reply

    @inlineCallbacks
    def test_an_ipv6_backend_is_reached(self) -> Any:
        """A backend written [::1]:port is connected to over IPv6."""
        try:
            probe = reactor.listenTCP(0, Factory(), interface="::1")
        except Exception as error:  # no IPv6 loopback on this machine
            raise SkipTest(f"no ::1: {error}") from error
        yield probe.stopListening()
        reply = yield self.relay_through("[::1]:{port}", "::1")
        self.assertEqual(reply, b"named\nhi")

    @inlineCallbacks
    def test_a_hostname_backend_is_resolved_at_connect(self) -> Any:
        """A backend written localhost:port is resolved and reached."""
        reply = yield self.relay_through("localhost:{port}", "127.0.0.1")
        self.assertEqual(reply, b"named\nhi")
