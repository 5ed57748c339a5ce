"""The splice(2) relay on real sockets: chosen when it can be, and ending
connections the way the portable path does."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent
from twisted.trial.unittest import TestCase

from rproxy.accesslog import access_events
from rproxy.backends import Backend, Pool
from rproxy.policy import PoolPolicy
from rproxy.tcp import TCPFrontProtocol, TCPProxyFactory
from rproxy.tcp import _splice as splice_module
from rproxy.tcp._splice import can_splice
from tests.integration.helpers import Exchange, greeter_factory


class SpliceTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.backend_factory = greeter_factory("b0")
        port = reactor.listenTCP(0, self.backend_factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.pool = Pool(
            "p",
            [Backend("127.0.0.1", port.getHost().port)],
            policy=PoolPolicy(idle_timeout=0.3),
        )
        self.factory = TCPProxyFactory(self.pool, reactor)
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.proxy_port = listening.getHost().port
        self.access: list[LogEvent] = []
        self.ended: Deferred[LogEvent] = Deferred()

        def observe(event: LogEvent) -> None:
            if event.get("log_namespace") == "rproxy.access":
                self.access.append(event)
                if not self.ended.called:
                    self.ended.callback(event)

        access_events.add_observer(observe)  # type: ignore[arg-type]
        self.addCleanup(access_events.remove_observer, observe)

    def fronts(self) -> list[TCPFrontProtocol]:
        return list(self.factory.connections._open)  # type: ignore[arg-type]

    def test_plain_tcp_transports_can_be_spliced_and_others_not(self) -> None:
        """Only real TCP sockets qualify for splice."""
        self.assertFalse(can_splice(reactor, StringTransport(), StringTransport()))
        self.assertFalse(can_splice(object(), StringTransport()))

    @inlineCallbacks
    def test_a_tcp_pair_is_spliced(self) -> Any:
        """A connection between real sockets is relayed by the splicer."""
        client = Exchange(b"x" * 100_000, half_close=False)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        yield client.received_at_least(3 + 100_000)
        (front,) = self.fronts()
        self.assertIsNotNone(front._splicer)
        self.assertEqual(front.bytes_in, 100_000)
        self.assertEqual(front.bytes_out, 3 + 100_000)
        client.transport.loseWriteConnection()
        reply = yield client.done
        self.assertEqual(reply, b"b0\n" + b"x" * 100_000)
        event = yield self.ended
        self.assertEqual(event["ended"], "closed")

    @inlineCallbacks
    def test_a_client_reset_while_spliced_closes_the_backend(self) -> Any:
        """A client that resets ends the pair as 'client reset'."""
        client = Exchange(b"", half_close=False)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        yield client.received_at_least(3)
        (front,) = self.fronts()
        self.assertIsNotNone(front._splicer)
        client.transport.abortConnection()  # SO_LINGER 0: a reset
        event = yield self.ended
        self.assertEqual(event["ended"], "client reset")
        self.assertEqual(self.pool.backends[0].active, 0)

    @inlineCallbacks
    def test_no_pipes_left_falls_back_to_the_portable_relay(self) -> Any:
        """When the second pipe cannot be made, the first is closed and the
        pair is relayed through Python instead."""
        made: list[int] = []
        real_pipe2 = os.pipe2

        def pipe2(flags: int) -> tuple[int, int]:
            if made:
                raise OSError(errno.EMFILE, "Too many open files")
            fds = real_pipe2(flags)
            made.extend(fds)
            return fds

        self.patch(splice_module.os, "pipe2", pipe2)
        client = Exchange(b"y" * 50_000)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        reply = yield client.done
        self.assertEqual(reply, b"b0\n" + b"y" * 50_000)
        self.assertEqual(len(made), 2)
        for fd in made:
            with self.assertRaises(OSError):
                os.fstat(fd)

    @inlineCallbacks
    def test_the_idle_timeout_applies_while_spliced(self) -> Any:
        """A silent spliced pair is dropped after the idle timeout."""
        sock = socket.create_connection(("127.0.0.1", self.proxy_port))
        self.addCleanup(sock.close)
        event = yield self.ended
        self.assertEqual(event["ended"], "idle timeout")
        self.assertGreaterEqual(event["duration"], 0.3)
        self.assertEqual(self.pool.backends[0].active, 0)
