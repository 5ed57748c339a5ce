"""Splice pipes against the descriptor budget, on real sockets: counted
while a pair holds them, given back when it ends, and a pair the budget
has no room for (or whose pipe() fails) relayed through Python."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from rproxy._fds import PIPE_FDS, FdBudget
from rproxy.backends import Backend, Pool
from rproxy.tcp import TCPFrontProtocol, TCPProxyFactory
from rproxy.tcp import _splice as splice_module
from tests.integration.helpers import Exchange, greeter_factory


class SpliceBudgetTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        backend = greeter_factory("b0")
        port = reactor.listenTCP(0, backend, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.recounts = 0
        self.fds = FdBudget(
            4096, in_use=20, now=reactor.seconds, count_open=self.count_open
        )
        pool = Pool("p", [Backend("127.0.0.1", port.getHost().port)])
        self.factory = TCPProxyFactory(pool, reactor, listener="front", fds=self.fds)
        self.fds.add_listener(self, "front", lambda: len(self.factory.connections))
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.proxy_port = listening.getHost().port

    def count_open(self) -> int | None:
        self.recounts += 1
        return None

    def fronts(self) -> list[TCPFrontProtocol]:
        return list(self.factory.connections._open)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_a_spliced_pair_holds_its_pipes_until_it_ends(self) -> Any:
        """While spliced the pair's 4 pipe descriptors count against the
        listener; once it has ended they are given back."""
        client = Exchange(b"x" * 10_000, half_close=False)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        yield client.received_at_least(3 + 10_000)
        (front,) = self.fronts()
        self.assertIsNotNone(front._splicer)
        self.assertEqual(self.fds.held(self), 2 + PIPE_FDS)
        client.transport.loseWriteConnection()
        reply = yield client.done
        self.assertEqual(reply, b"b0\n" + b"x" * 10_000)
        # The pipes are back (the pair itself may still be closing).
        self.assertEqual(self.fds.held(self), 2 * len(self.factory.connections))

    @inlineCallbacks
    def test_a_pair_without_room_for_pipes_is_relayed_through_python(self) -> Any:
        """Below the splice floor no pipe is made: the pair is relayed by
        Twisted, intact."""
        self.fds.resize(4096, 4096 - self.fds.splice_floor)
        made: list[int] = []
        real_pipe2 = os.pipe2

        def pipe2(flags: int) -> tuple[int, int]:
            fds = real_pipe2(flags)
            made.extend(fds)
            return fds

        self.patch(splice_module.os, "pipe2", pipe2)
        client = Exchange(b"y" * 50_000, half_close=False)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        yield client.received_at_least(3 + 50_000)
        (front,) = self.fronts()
        self.assertIsNone(front._splicer)
        self.assertEqual(made, [])
        client.transport.loseWriteConnection()
        reply = yield client.done
        self.assertEqual(reply, b"b0\n" + b"y" * 50_000)

    @inlineCallbacks
    def test_pipe_failing_with_emfile_relays_and_recounts(self) -> Any:
        """pipe() failing for want of descriptors, though the budget had
        room: the pair is relayed through Python, the pipes are given back
        and the budget recounts at its next decision."""

        def pipe2(flags: int) -> tuple[int, int]:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(splice_module.os, "pipe2", pipe2)
        client = Exchange(b"z" * 50_000)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        reply = yield client.done
        self.assertEqual(reply, b"b0\n" + b"z" * 50_000)
        self.assertEqual(self.fds.held(self), 2 * len(self.factory.connections))
        before = self.recounts
        self.assertTrue(self.fds.admit(self))
        self.assertEqual(self.recounts, before + 1)
