"""Admission at accept, driven by hand: a listener service (not bound) whose
port-side factory is given connections from chosen addresses on a Clock,
in front of the real TCP and HTTP fronts with fake backends."""

from __future__ import annotations

from typing import Any

import trustme
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rproxy.admission import AcceptRate, AddressList, Admission
from rproxy.admission import accept as accept_module
from rproxy.admission.accept import LINGER, LOG_EVERY, RefusalAnswer
from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.interfaces import IListenerFactory
from rproxy.proxyprotocol import encode
from rproxy.service._listeners import ListenerService, _Accept
from rproxy.tcp import TCPProxyFactory
from rproxy.testing import FakeEndpoints, HalfCloseTransport, captured_access, connect
from rproxy.tls import ServerCertificate, ServerTLS
from tests.admission.test_networks import networks

LB = "192.0.2.200"


def header(client: str) -> bytes:
    """A v2 PROXY header announcing C{client}."""
    return encode("v2", (client, 50000), ("198.51.100.1", 443))


class _Listener(SynchronousTestCase):
    """A listener service on a Clock, with helpers to connect to it."""

    protocol = "tcp"

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = Pool("p", [Backend("10.0.0.1", 80)], now=self.reactor.seconds)
        self.endpoints = FakeEndpoints()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.open: list[HalfCloseTransport] = []
        self.addCleanup(self.close_all)

    def close_all(self) -> None:
        for transport in self.open:
            transport.loseConnection()
        for attempt in self.endpoints.attempts:
            if attempt.transport is not None:
                attempt.transport.loseConnection()
        factory = getattr(self, "service", None)
        if factory is not None and isinstance(factory.factory, HTTPProxyFactory):
            factory.factory.keep_alive.close_all()
        self.reactor.advance(LINGER)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def front(self) -> IListenerFactory:
        if self.protocol == "http":
            return HTTPProxyFactory(
                Registry([self.pool]),
                self.reactor,
                HTTPSettings(listener="front", router=Router([Route("p")])),
                endpoint_for=self.endpoints,
            )
        return TCPProxyFactory(
            self.pool, self.reactor, listener="front", endpoint_for=self.endpoints
        )

    def listen(
        self,
        admission: Admission | None,
        *,
        proxy: bool = False,
        tls: ServerTLS | None = None,
    ) -> ListenerService:
        self.service = ListenerService(
            "front",
            "tcp:0",
            self.front(),
            self.reactor,
            1.0,
            tls,
            ((LB,), 5.0) if proxy else None,
            admission=admission,
        )
        return self.service

    def connect(
        self, host: str, port: int = 40000, data: bytes = b""
    ) -> tuple[Protocol | None, HalfCloseTransport | None]:
        """
        A connection from C{host}, as the port gives it: None if refused at
        accept (the port closes it), else its protocol and transport.
        """
        address: Any = (
            IPv6Address("TCP", host, port)
            if ":" in host
            else IPv4Address("TCP", host, port)
        )
        protocol = _Accept(self.service).buildProtocol(address)
        if protocol is None:
            return None, None
        transport = HalfCloseTransport(host, port)
        if ":" in host:
            transport.peerAddress = address
        connect(protocol, transport)
        if data:
            protocol.dataReceived(data)
        self.open.append(transport)
        return protocol, transport

    def refused(self) -> dict[str, int]:
        return {
            reason: count
            for reason, count in self.service.factory.stats.refused.items()
            if count
        }

    def warnings(self) -> list[str]:
        return [
            str(event["log_format"])
            for event in self.events
            if event.get("log_namespace") == "rproxy.admission"
        ]


class TCPAdmissionTests(_Listener):
    def test_a_client_over_its_limit_is_closed_at_once(self) -> None:
        """Per-IP limit 2: the third connection from one address is refused
        before a protocol is built; others and later ones are let in."""
        self.listen(Admission(max_per_client=2))
        _, t1 = self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        with captured_access() as events:
            self.assertEqual(self.connect("192.0.2.1"), (None, None))
        self.assertIsNotNone(self.connect("192.0.2.2")[0])
        self.assertEqual(self.refused(), {"per_ip": 1})
        [event] = events
        self.assertEqual(
            (event["client"], event["refused_by"], event["status"], event["protocol"]),
            ("192.0.2.1", "max_connections_per_ip", "refused", "tcp"),
        )
        assert t1 is not None
        t1.loseConnection()
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual(self.refused(), {"per_ip": 1})

    def test_ipv6_clients_are_counted_by_their_64(self) -> None:
        """Two addresses of one /64 share its limit; another /64 does not."""
        self.listen(Admission(max_per_client=1))
        self.assertIsNotNone(self.connect("2001:db8::1")[0])
        self.assertEqual(self.connect("2001:db8::2"), (None, None))
        self.assertIsNotNone(self.connect("2001:db8:0:1::1")[0])

    def test_a_full_listener_refuses_everyone(self) -> None:
        """max_connections 2: a third connection from anyone is refused,
        and one is let in again once one has closed."""
        self.listen(Admission(max_connections=2))
        _, t1 = self.connect("192.0.2.1")
        self.connect("192.0.2.2")
        self.assertEqual(self.connect("192.0.2.3"), (None, None))
        assert t1 is not None
        t1.loseConnection()
        self.assertIsNotNone(self.connect("192.0.2.3")[0])
        self.assertEqual(self.refused(), {"full": 1})

    def test_the_accept_rate_refuses_then_lets_in_again(self) -> None:
        """2/s with a burst of 2: a third connection at once is refused, one
        after half a second is let in; other addresses are not touched."""
        self.listen(Admission(rate=AcceptRate(2, 1.0, 2)))
        for _ in range(2):
            self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual(self.connect("192.0.2.1"), (None, None))
        self.assertIsNotNone(self.connect("192.0.2.9")[0])
        self.reactor.advance(0.5)
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual(self.refused(), {"rate": 1})

    def test_the_lists_refuse_at_accept(self) -> None:
        """A denied address, and one outside the allow list, are closed at
        once; each access event names the list."""
        lists = AddressList(allow=networks("192.0.2.0/24"), deny=networks("192.0.2.66"))
        self.listen(Admission(addresses=lists))
        with captured_access() as events:
            self.assertEqual(self.connect("192.0.2.66"), (None, None))
            self.assertEqual(self.connect("198.51.100.1"), (None, None))
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual([e["refused_by"] for e in events], ["deny", "allow"])
        self.assertEqual(self.refused(), {"denied": 2})

    def test_refusals_are_logged_once_per_ten_seconds_per_kind(self) -> None:
        """The first refusal of a kind is logged; the next ones only once
        LOG_EVERY seconds have passed, with how many there were."""
        self.listen(Admission(max_per_client=1))
        self.connect("192.0.2.1")
        self.endpoints.last.succeed()  # no connect timeout to end it
        for _ in range(5):
            self.connect("192.0.2.1")
        self.assertEqual(len(self.warnings()), 1)
        self.reactor.advance(LOG_EVERY)
        self.connect("192.0.2.1")
        logged = [
            e for e in self.events if e.get("log_namespace") == "rproxy.admission"
        ]
        self.assertEqual([e["count"] for e in logged], [1, 5])
        self.assertIn("max_connections_per_ip", logged[0]["log_format"])

    def test_a_reload_changes_the_rules_and_keeps_the_rate_counts(self) -> None:
        """replace() with new rules applies them to new connections; the
        accept rate carries its counts over; no rules, no checks."""
        service = self.listen(Admission(rate=AcceptRate(1, 60.0, 1)))
        self.connect("192.0.2.1")
        service.replace(
            self.front(), None, None, Admission(rate=AcceptRate(1, 60.0, 1))
        )
        self.assertEqual(self.connect("192.0.2.1"), (None, None))
        lists = AddressList(deny=networks("192.0.2.2"))
        service.replace(self.front(), None, None, Admission(addresses=lists))
        self.assertEqual(self.connect("192.0.2.2"), (None, None))
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        service.replace(self.front(), None, None, None)
        self.assertIsNotNone(self.connect("192.0.2.2")[0])
        self.assertEqual(self.refused(), {"rate": 1, "denied": 1})


class ProxyHeaderAdmissionTests(_Listener):
    def test_per_client_rules_see_the_announced_address(self) -> None:
        """Behind PROXY headers from one balancer, the per-IP limit counts
        the clients the headers announce."""
        self.listen(Admission(max_per_client=1), proxy=True)
        self.connect(LB, data=header("203.0.113.9"))
        self.assertEqual(self.service.factory.connections.open_from("203.0.113.9"), 1)
        with captured_access() as events:
            _, transport = self.connect(LB, 40001, data=header("203.0.113.9"))
        assert transport is not None
        self.assertTrue(transport.disconnecting)
        self.assertEqual(events[0]["client"], "203.0.113.9")
        self.assertIsNotNone(self.connect(LB, 40002, data=header("203.0.113.10"))[0])
        self.assertEqual(self.refused(), {"per_ip": 1})
        # The refused one was open while it sent its header: it is counted
        # closed, so the listener's total never goes down.
        self.assertEqual(self.service.factory.stats.connections_closed, 1)
        self.assertEqual(len(self.service.factory.connections), 2)

    def test_the_lists_see_the_announced_address(self) -> None:
        """A deny list behind PROXY headers refuses the announced client,
        not the balancer."""
        lists = AddressList(deny=networks("203.0.113.0/24"))
        self.listen(Admission(addresses=lists), proxy=True)
        _, refused = self.connect(LB, data=header("203.0.113.9"))
        _, let_in = self.connect(LB, 40001, data=header("198.51.100.9"))
        assert refused is not None and let_in is not None
        self.assertTrue(refused.disconnecting)
        self.assertFalse(let_in.disconnecting)
        self.assertEqual(self.refused(), {"denied": 1})

    def test_the_accept_rate_is_checked_on_the_balancer_before_the_header(
        self,
    ) -> None:
        """The accept rate applies to the address that connected: the
        balancer's second connection is refused before a header is read."""
        self.listen(Admission(rate=AcceptRate(1, 1.0, 1)), proxy=True)
        self.assertIsNotNone(self.connect(LB, data=header("203.0.113.1"))[0])
        self.assertEqual(self.connect(LB, 40001), (None, None))
        self.assertEqual(self.refused(), {"rate": 1})

    def test_a_full_listener_counts_connections_sending_headers(self) -> None:
        """max_connections counts a connection still sending its header."""
        self.listen(Admission(max_connections=1), proxy=True)
        self.assertIsNotNone(self.connect(LB)[0])
        self.assertEqual(self.connect(LB, 40001), (None, None))
        self.assertEqual(self.refused(), {"full": 1})


class HTTPAdmissionTests(_Listener):
    protocol = "http"

    def test_a_full_http_listener_answers_503_without_reading(self) -> None:
        """A refused plain HTTP client is sent 503 at once; its request is
        never read, no backend is asked; the write side is shut, and the
        connection dropped after LINGER seconds."""
        self.listen(Admission(max_connections=1))
        self.connect("192.0.2.1")
        protocol, transport = self.connect("192.0.2.2")
        assert transport is not None and protocol is not None
        self.assertIsInstance(protocol, RefusalAnswer)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", response)
        self.assertTrue(
            response.endswith(b"\r\n\r\ntoo many connections, try again later\n")
        )
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value(), response)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(LINGER)
        self.assertTrue(transport.aborted)

    def test_per_ip_and_rate_refusals_are_429(self) -> None:
        """Over its own limit a client gets 429; over the accept rate, 429
        with a Retry-After rounded up to whole seconds."""
        self.listen(Admission(max_per_client=1, rate=AcceptRate(1, 10.0, 1)))
        self.connect("192.0.2.1")
        _, over = self.connect("192.0.2.1")
        assert over is not None
        self.assertTrue(over.value().startswith(b"HTTP/1.1 429 Too Many Requests"))
        self.assertNotIn(b"Retry-After", over.value())
        _, first = self.connect("192.0.2.2")
        assert first is not None
        first.loseConnection()
        self.reactor.advance(2.5)
        with captured_access() as events:
            _, fast = self.connect("192.0.2.2")
        assert fast is not None
        self.assertTrue(fast.value().startswith(b"HTTP/1.1 429 "))
        self.assertIn(b"\r\nRetry-After: 8\r\n", fast.value())
        [event] = events
        self.assertEqual(
            (event["status"], event["refused_by"], event["protocol"]),
            (429, "accept_rate_per_ip", "http"),
        )
        self.assertEqual(self.refused(), {"per_ip": 1, "rate": 1})

    def test_a_denied_http_client_gets_403(self) -> None:
        """A client the lists refuse is answered 403."""
        self.listen(Admission(addresses=AddressList(deny=networks("192.0.2.0/24"))))
        _, transport = self.connect("192.0.2.1")
        assert transport is not None
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 Forbidden\r\n"))

    def test_a_closing_client_ends_its_refusal_early(self) -> None:
        """A refused client that closes leaves no timer behind."""
        self.listen(Admission(max_connections=1))
        self.connect("192.0.2.1")
        before = set(self.reactor.getDelayedCalls())
        protocol, transport = self.connect("192.0.2.2")
        assert transport is not None and isinstance(protocol, RefusalAnswer)
        self.assertEqual(len(self.service.refusals.lingering), 1)
        self.assertEqual(len(set(self.reactor.getDelayedCalls()) - before), 1)
        transport.finish(_closed())
        self.assertEqual(len(self.service.refusals.lingering), 0)
        self.assertEqual(set(self.reactor.getDelayedCalls()), before)

    def test_past_the_lingering_cap_refusals_close_at_once(self) -> None:
        """With MAX_LINGERING refused clients still reading, the next one is
        closed as soon as its response is written."""
        self.patch(accept_module, "MAX_LINGERING", 1)
        self.listen(Admission(max_connections=1))
        self.connect("192.0.2.1")
        _, lingering = self.connect("192.0.2.2")
        _, closed = self.connect("192.0.2.3")
        assert lingering is not None and closed is not None
        self.assertFalse(lingering.disconnecting)
        self.assertTrue(closed.disconnecting)
        self.assertTrue(closed.value().startswith(b"HTTP/1.1 503 "))

    def test_an_http_client_refused_after_a_proxy_header_is_answered(self) -> None:
        """Behind PROXY headers the answer goes out after the header."""
        self.listen(Admission(max_per_client=1), proxy=True)
        self.connect(LB, data=header("203.0.113.9"))
        _, transport = self.connect(LB, 40001, data=header("203.0.113.9"))
        assert transport is not None
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 429 "))

    def test_a_tls_listener_closes_refused_connections_at_once(self) -> None:
        """Nothing can be answered before a handshake: a refused client of
        an HTTPS listener is closed at once."""
        self.listen(Admission(max_connections=1), tls=_tls())
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual(self.connect("192.0.2.2"), (None, None))
        self.assertEqual(self.refused(), {"full": 1})


def _closed() -> Failure:
    return Failure(ConnectionDone("closed"))


def _tls() -> ServerTLS:
    leaf = trustme.CA().issue_cert("a.example.com")
    pem = leaf.private_key_and_cert_chain_pem.bytes()
    return ServerTLS([ServerCertificate.from_pem(pem, None, "a.example.com")])
