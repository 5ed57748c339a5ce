"""SNI passthrough: the route choice, and the routing protocol driven by hand
with fake endpoints, string transports and a Clock."""

from __future__ import annotations

import tomllib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rproxy import tcp
from rproxy.backends import Backend, Pool, Registry
from rproxy.config import parse_config
from rproxy.policy import PoolPolicy
from rproxy.service import ProxyService
from rproxy.tcp import TCPFrontProtocol
from rproxy.tcp.sni import SNIFrontProtocol, SNIProxyFactory, SNIRoutes
from rproxy.testing import FakeEndpoints, HalfCloseTransport, captured_access, connect
from tests.tls_records import client_hello, openssl_client_hello

ROUTES = [("db.example.com", "db"), ("*.example.com", "web")]


class SNIRoutesTests(SynchronousTestCase):
    routes = SNIRoutes.from_routes(
        [*ROUTES, ("*.b.example.com", "deep"), ("DB.example.com", "other")],
        default="fallback",
    )

    def test_exact_name_before_wildcard(self) -> None:
        """An exact route wins over a wildcard covering the same name."""
        self.assertEqual(self.routes.pool_for("db.example.com"), "db")
        self.assertEqual(self.routes.pool_for("www.example.com"), "web")

    def test_wildcard_covers_exactly_one_more_label(self) -> None:
        """*.example.com: a.example.com, not example.com nor a.c.example.com."""
        self.assertEqual(self.routes.pool_for("a.example.com"), "web")
        self.assertEqual(self.routes.pool_for("example.com"), "fallback")
        self.assertEqual(self.routes.pool_for("a.c.example.com"), "fallback")
        self.assertEqual(self.routes.pool_for(".example.com"), "fallback")
        self.assertEqual(self.routes.pool_for("a.b.example.com"), "deep")

    def test_names_compare_without_case(self) -> None:
        """Server names are DNS names: case does not matter."""
        self.assertEqual(self.routes.pool_for("DB.Example.Com"), "db")
        self.assertEqual(self.routes.pool_for("WWW.EXAMPLE.COM"), "web")

    def test_first_route_of_a_name_wins(self) -> None:
        """A name listed twice keeps its first pool, as in file order."""
        self.assertEqual(self.routes.exact["db.example.com"], "db")

    def test_no_name_or_no_match_uses_the_default(self) -> None:
        """Without a name, or with one no route covers: the default pool."""
        self.assertEqual(self.routes.pool_for(None), "fallback")
        self.assertEqual(self.routes.pool_for("example.org"), "fallback")

    def test_no_default_means_no_pool(self) -> None:
        """Without a default, an unrouted name has no pool."""
        routes = SNIRoutes.from_routes(ROUTES)
        self.assertIsNone(routes.pool_for("example.org"))
        self.assertIsNone(routes.pool_for(None))


class SNIProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.db = Pool(
            "db",
            [Backend("127.0.0.1", 9001), Backend("127.0.0.1", 9002)],
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=1.0, idle_timeout=60.0),
        )
        self.web = Pool(
            "web",
            [Backend("127.0.0.1", 9101)],
            now=self.clock.seconds,
            policy=PoolPolicy(connect_timeout=2.0, idle_timeout=30.0),
        )
        self.registry = Registry([self.db, self.web])
        self.endpoints = FakeEndpoints()
        self.factory = self.make_factory()

    def make_factory(
        self, default: str | None = None, **kwargs: Any
    ) -> SNIProxyFactory:
        return SNIProxyFactory(
            self.registry,
            SNIRoutes.from_routes(ROUTES, default),
            self.clock,
            listener="front",
            client_hello_timeout=5.0,
            endpoint_for=self.endpoints,
            **kwargs,
        )

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.factory.connections), 0)

    def client(self) -> tuple[SNIFrontProtocol, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return proto, connect(proto, HalfCloseTransport())

    def routed(
        self, hello: bytes
    ) -> tuple[SNIFrontProtocol, HalfCloseTransport, HalfCloseTransport]:
        """A client that sent C{hello} and whose backend connected."""
        proto, client = self.client()
        proto.dataReceived(hello)
        return proto, client, self.endpoints.last.succeed()

    def close_both(
        self, client: HalfCloseTransport, *others: HalfCloseTransport
    ) -> None:
        client.loseConnection()
        for other in others:
            other.loseConnection()

    def refusals(self, events: Any) -> list[str]:
        return [
            f"{e['client']} {e['reason']}"
            for e in events
            if e.get("log_namespace") == "rproxy.tcp.sni" and "reason" in e
        ]

    def test_routes_an_exact_name_to_its_pool(self) -> None:
        """db.example.com connects to a backend of pool db."""
        proto, client = self.client()
        self.assertEqual(client.producerState, "producing")
        proto.dataReceived(client_hello("db.example.com"))
        self.assertEqual(client.producerState, "paused")
        self.assertIn(self.endpoints.last.backend, self.db.backends)
        server = self.endpoints.last.succeed()
        self.assertEqual(client.producerState, "producing")
        self.close_both(client, server)

    def test_routes_a_wildcard_name_to_its_pool(self) -> None:
        """www.example.com matches *.example.com: pool web."""
        _, client, server = self.routed(client_hello("www.example.com"))
        self.assertIn(self.endpoints.last.backend, self.web.backends)
        self.close_both(client, server)

    def test_real_openssl_hello_is_routed(self) -> None:
        """A ClientHello from OpenSSL routes by its SNI."""
        _, client, server = self.routed(openssl_client_hello(b"db.example.com"))
        self.assertIn(self.endpoints.last.backend, self.db.backends)
        self.close_both(client, server)

    def test_no_name_goes_to_the_default_pool(self) -> None:
        """A hello without SNI, or an unrouted name, goes to the default pool."""
        self.factory = self.make_factory(default="web")
        for hello in (client_hello(None), client_hello("example.org")):
            _, client, server = self.routed(hello)
            self.assertIn(self.endpoints.last.backend, self.web.backends)
            self.close_both(client, server)

    def test_no_route_and_no_default_closes(self) -> None:
        """An unrouted name without a default pool: closed, logged, no connect."""
        with captured_access() as access, capturedLogs() as events:
            proto, client = self.client()
            proto.dataReceived(client_hello("example.org"))
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual(
            self.refusals(events),
            ["192.0.2.7 no route for 'example.org' and no default pool"],
        )
        self.assertEqual(
            [(e["pool"], e["backend"], e["ended"]) for e in access],
            [("-", "-", "no route")],
        )

    def test_route_to_a_pool_gone_from_the_registry_closes(self) -> None:
        """A route whose pool was removed closes the connection."""
        self.registry.remove("web")
        with capturedLogs() as events:
            proto, client = self.client()
            proto.dataReceived(client_hello("www.example.com"))
        self.assertTrue(client.disconnecting)
        self.assertIn("no such pool", self.refusals(events)[0])

    def test_not_tls_is_closed_at_once(self) -> None:
        """Plain HTTP on an SNI listener is closed on its first bytes."""
        with captured_access() as access, capturedLogs() as events:
            proto, client = self.client()
            proto.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])
        (refusal,) = self.refusals(events)
        self.assertTrue(refusal.startswith("192.0.2.7 not TLS"), refusal)
        self.assertEqual(access[0]["ended"], "bad client hello")

    def test_oversized_hello_is_closed_at_once(self) -> None:
        """A hello declaring more than 64 KiB is closed from its header."""
        with capturedLogs() as events:
            proto, client = self.client()
            proto.dataReceived(b"\x16\x03\x01\x00\x04\x01\x01\x00\x00")
        self.assertTrue(client.disconnecting)
        self.assertIn("larger than 65536 bytes", self.refusals(events)[0])

    def test_truncated_hello_is_closed_after_the_timeout(self) -> None:
        """20 bytes of a hello, then silence: closed at client_hello."""
        with captured_access() as access, capturedLogs() as events:
            proto, client = self.client()
            proto.dataReceived(client_hello()[:20])
            self.clock.advance(4.9)
            self.assertFalse(client.disconnecting)
            self.clock.advance(0.1)
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual(
            self.refusals(events),
            ["192.0.2.7 no whole ClientHello in 5.0s (20 bytes received)"],
        )
        self.assertEqual(access[0]["ended"], "client hello timeout")
        self.assertEqual(access[0]["duration"], 5.0)

    def test_silent_client_is_closed_after_the_timeout(self) -> None:
        """A client that sends nothing is closed at client_hello."""
        _, client = self.client()
        self.clock.advance(5)
        self.assertTrue(client.disconnecting)

    def test_client_leaving_mid_hello_cancels_the_timer(self) -> None:
        """A client gone before its hello leaves no timer and no connection."""
        with captured_access() as access:
            proto, client = self.client()
            proto.dataReceived(client_hello()[:7])
            client.loseConnection()
        self.assertEqual(access[0]["ended"], "client left")

    def test_client_half_close_mid_hello_closes(self) -> None:
        """A client that shuts its side before the hello will not finish it."""
        proto, client = self.client()
        proto.dataReceived(client_hello()[:7])
        proto.readConnectionLost()
        self.assertTrue(client.disconnecting)

    def test_hello_in_pieces_then_stream_forwarded_in_order(self) -> None:
        """The hello, bytes after it, and the rest reach the backend in order."""
        hello = client_hello("db.example.com", [40, 1, 1000])
        proto, client = self.client()
        for start in range(0, len(hello), 17):
            self.assertEqual(self.endpoints.attempts, [])
            piece = hello[start : start + 17]
            proto.dataReceived(piece + (b"early" if start + 17 >= len(hello) else b""))
        server = self.endpoints.last.succeed()
        self.assertEqual(server.value(), hello + b"early")
        proto.dataReceived(b"later")
        self.assertEqual(server.value(), hello + b"earlylater")
        front = proto.front
        assert front is not None and front.peer is not None
        front.peer.dataReceived(b"reply")
        self.assertEqual(client.value(), b"reply")
        self.assertEqual(front.bytes_in, len(hello) + 10)
        self.close_both(client, server)

    def test_access_event_names_the_chosen_pool(self) -> None:
        """The connection's access event has its pool, backend and bytes."""
        hello = client_hello("www.example.com")
        proto, client = self.client()
        self.clock.advance(1)
        proto.dataReceived(hello)
        server = self.endpoints.last.succeed()
        self.clock.advance(2)
        with captured_access() as access:
            self.close_both(client, server)
        (event,) = access
        self.assertEqual(event["listener"], "front")
        self.assertEqual(event["pool"], "web")
        self.assertEqual(event["backend"], self.web.backends[0].name)
        self.assertEqual((event["bytes_in"], event["bytes_out"]), (len(hello), 0))
        self.assertEqual(event["duration"], 3)

    def test_connect_retry_and_pool_timeouts(self) -> None:
        """A connect slower than the pool's timeout moves to its next backend."""
        proto, client = self.client()
        proto.dataReceived(client_hello("db.example.com"))
        first = self.endpoints.last
        self.clock.advance(0.9)
        self.assertFalse(first.cancelled)
        self.clock.advance(0.1)  # pool db's connect timeout
        self.assertTrue(first.cancelled)
        second = self.endpoints.last
        self.assertEqual({first.backend, second.backend}, set(self.db.backends))
        server = second.succeed()
        self.clock.advance(59)
        self.assertFalse(client.aborted)
        self.clock.advance(1)  # pool db's idle timeout
        self.assertTrue(client.aborted and server.aborted)

    def test_refused_connect_tries_the_next_backend(self) -> None:
        """A refused connect is retried, and reported to the pool."""
        proto, client = self.client()
        proto.dataReceived(client_hello("db.example.com"))
        first = self.endpoints.last
        first.fail(ConnectionRefusedError())
        self.assertEqual(first.backend.failures_total, 1)
        server = self.endpoints.last.succeed()
        self.assertIsNot(self.endpoints.last.backend, first.backend)
        self.assertEqual(server.value(), client_hello("db.example.com"))
        self.close_both(client, server)

    def test_connection_is_tracked_from_accept_to_close(self) -> None:
        """Draining sees a connection while it reads its hello and after."""
        proto, client = self.client()
        self.assertEqual(len(self.factory.connections), 1)
        proto.dataReceived(client_hello())
        self.assertEqual(len(self.factory.connections), 1)
        self.assertIsInstance(proto.front, TCPFrontProtocol)
        server = self.endpoints.last.succeed()
        self.close_both(client, server)
        self.assertEqual(len(self.factory.connections), 0)

    def test_shutdown_closes_clients_that_sent_nothing(self) -> None:
        """Draining closes a silent client at once, lets a started hello end."""
        _, silent = self.client()
        proto, started = self.client()
        proto.dataReceived(client_hello()[:30])
        done = self.factory.connections.drain(10.0, self.clock)
        self.assertTrue(silent.disconnecting)
        self.assertFalse(started.disconnecting)
        proto.dataReceived(client_hello()[30:])
        server = self.endpoints.last.succeed()
        self.assertNoResult(done)
        self.clock.advance(10)
        self.assertTrue(started.aborted and server.aborted)
        self.successResultOf(done)

    def test_preface_sent_before_splicing(self) -> None:
        """When the hello leaves at once, the pair is spliced after it."""
        calls = self.fake_splicing(send_all=True)
        _, client, server = self.routed(client_hello())
        self.assertEqual(calls, [("send_now", client_hello()), ("splice",)])
        self.close_both(client, server)

    def test_python_relay_when_preface_waits_in_a_buffer(self) -> None:
        """When part of the hello waits in the transport, no splicing."""
        calls = self.fake_splicing(send_all=False)
        _, client, server = self.routed(client_hello())
        self.assertEqual(calls, [("send_now", client_hello())])
        self.assertIs(client.producer, server)
        self.assertIs(server.producer, client)
        self.assertEqual(client.producerState, "producing")
        self.close_both(client, server)

    def fake_splicing(self, send_all: bool) -> list[tuple[Any, ...]]:
        """
        Make every pair spliceable, record sends and splicer starts, and
        make send_now report C{send_all}.
        """
        calls: list[tuple[Any, ...]] = []

        def send_now(transport: Any, data: bytes) -> bool:
            calls.append(("send_now", data))
            transport.write(data)
            return send_all

        class Splicer:
            def __init__(self, *args: Any) -> None:
                calls.append(("splice",))

            def start(self) -> None:
                pass

            def stop(self) -> None:
                pass

        self.patch(tcp, "send_now", send_now)
        self.patch(tcp, "can_splice", lambda *args: True)
        self.patch(tcp, "Splicer", Splicer)
        return calls


class ServiceTests(SynchronousTestCase):
    def test_builds_an_sni_factory_from_config(self) -> None:
        """A tcp listener with sni_routes gets the routes; each pool's proxy
        has that pool, with its own timeouts."""
        text = """
[timeouts]
client_hello = 0.5
[pools.db]
backends = ["127.0.0.1:9001"]
timeouts = { connect = 1.5, idle = 20 }
[pools.web]
backends = ["127.0.0.1:9101"]
[[listeners]]
name = "front"
protocol = "tcp"
listen = "tcp:0"
pool = "web"
sni_routes = { "DB.example.com" = "db", "*.example.com" = "web" }
"""
        config = parse_config(tomllib.loads(text), "test.toml")
        service = ProxyService(config, MemoryReactorClock())
        factory = service.listeners["front"].factory
        assert isinstance(factory, SNIProxyFactory)
        self.assertEqual(factory.routes.pool_for("db.example.com"), "db")
        self.assertEqual(factory.routes.pool_for("example.org"), "web")
        self.assertEqual(factory.client_hello_timeout, 0.5)
        proxy = factory.proxy_for("db")
        assert proxy is not None
        self.assertIs(proxy.pool, service.registry.get("db"))
        self.assertIs(proxy.connections, factory.connections)
        policy = proxy.pool.policy
        self.assertEqual((policy.connect_timeout, policy.idle_timeout), (1.5, 20.0))
        web = service.registry.get("web").policy
        self.assertEqual((web.connect_timeout, web.idle_timeout), (5.0, 300.0))
        self.assertIs(factory.proxy_for("db"), proxy)
        self.assertIsNone(factory.proxy_for("nope"))
