"""Upgrades through the HTTP proxy: a WebSocket echo with the websockets
library on both ends (threads), the proxy on the reactor."""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router


def echo(connection: ServerConnection) -> None:
    for message in connection:
        connection.send(message)


class UpgradeTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = serve(echo, "127.0.0.1", 0)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(self.server.shutdown)
        backend_port = self.server.socket.getsockname()[1]
        pool = Pool("ws", [Backend("127.0.0.1", backend_port)])
        self.factory = HTTPProxyFactory(
            Registry([pool]),
            reactor,
            HTTPSettings(listener="front", router=Router([Route(pool="ws")])),
        )
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        # Runs first: close client connections as a shutdown would, so no
        # keep-alive timer outlives the test.
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)

    @inlineCallbacks
    def test_websocket_echo_through_the_proxy(self) -> Any:
        """A WebSocket handshake and messages both ways pass through."""

        def run() -> list[str | bytes]:
            with connect(f"ws://127.0.0.1:{self.port}/echo", open_timeout=20) as ws:
                replies = []
                for message in ("hello", "x" * 100_000, b"\x00\x01binary"):
                    ws.send(message)
                    replies.append(ws.recv(timeout=20))
                return replies

        replies = yield deferToThread(run)
        self.assertEqual(replies, ["hello", "x" * 100_000, b"\x00\x01binary"])
