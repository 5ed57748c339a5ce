"""What the request rule tests share: a rule set from a TOML snippet, and
an HTTP listener (the real codec, on a Clock) with it on its only route."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import INegotiated
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from zope.interface import implementer

from rproxy.config import Config, parse_config
from rproxy.http.filters.rules import RuleSet, RuleSetConfig
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.testing import Client, HalfCloseTransport, HTTPHarness, connect
from rproxy.testing._http import request_bytes

#: a config whose only route takes the rule set C{t}.
BASE = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
pool = "web"
rules = "t"
"""


def parse(text: str, source: str = "/etc/rproxy/c.toml") -> Config:
    """The config of L{BASE} and C{text}."""
    return parse_config(tomllib.loads(BASE + text), source)


def rules_config(text: str, source: str = "/etc/rproxy/c.toml") -> RuleSetConfig:
    """The rule set C{t} of C{text} (a C{[rules.t]} table)."""
    (found,) = parse(text, source).rules
    return found


@implementer(INegotiated)
class TLSTransport(HalfCloseTransport):
    """A client transport as TLS looks to the codec: C{getHandle()} is the
    connection, which knows the server name the client asked for."""

    def __init__(self, server_name: bytes | None, peer: str = "192.0.2.7") -> None:
        super().__init__(peer)
        self.server_name = server_name

    def getHandle(self) -> Any:
        name = self.server_name

        class Connection:
            def get_servername(self) -> bytes | None:
                return name

        return Connection()


class Rig:
    """
    A rule set (C{[rules.t]} of C{text}) on the only route of an HTTP
    listener with fake backends; call L{close} at the end.

    @ivar logged: the events logged in the C{rproxy.rules} namespace.
    """

    def __init__(
        self,
        text: str,
        *,
        source: str = "/etc/rproxy/c.toml",
        filters: Sequence[Any] = (),
        listener_filters: Sequence[Any] = (),
        trusted: Sequence[str] = (),
    ) -> None:
        self.clock = Clock()
        self.rules = RuleSet(rules_config(text, source), self.clock)
        route = Route("web", filters=[self.rules.filter, *filters])
        settings = HTTPSettings(
            "front",
            Router([route]),
            filters=listener_filters,
            policy=ForwardingPolicy(trusted=tuple(trusted)),
        )
        self.harness = HTTPHarness(settings=settings, clock=self.clock)
        self.logged: list[LogEvent] = []
        globalLogPublisher.addObserver(self._log)

    def _log(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "rproxy.rules":
            self.logged.append(event)

    def banks(self) -> list[Any]:
        """The rule set's pattern banks."""
        return self.rules.patterns.banks()

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._log)
        self.harness.close()

    @property
    def access(self) -> list[dict[str, Any]]:
        return self.harness.access

    def connect(
        self, peer: str = "192.0.2.7", server_name: bytes | str | None = "plain"
    ) -> Client:
        """
        A client connection from C{peer}; over (fake) TLS with that SNI
        unless C{server_name} is C{"plain"}.
        """
        if server_name == "plain":
            return self.harness.connect(peer)
        assert not isinstance(server_name, str)
        protocol = self.harness.factory.buildProtocol(IPv4Address("TCP", peer, 40000))
        transport = connect(protocol, TLSTransport(server_name, peer))
        client = Client(protocol, transport)
        self.harness.clients.append(client)
        return client

    def send(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[str, str]] = (("User-Agent", "test/1.0"),),
        body: bytes = b"",
        *,
        client: Client | None = None,
        raw: bytes | None = None,
    ) -> Client:
        """Send a request (or C{raw} bytes) on C{client} or a new one."""
        client = client or self.connect()
        return client.send(raw or request_bytes(method, target, headers, body))

    def verdict(self, *args: Any, **kwargs: Any) -> int | str:
        """
        What became of a request (L{send}'s arguments): C{"passed"} (a
        backend was asked), the status of the answer the rules gave, or
        C{"held"} / C{"dropped"}.
        """
        asked = len(self.harness.endpoints.attempts)
        client = self.send(*args, **kwargs)
        if len(self.harness.endpoints.attempts) > asked:
            return "passed"
        if client.received:
            return client.responses()[0].status
        return "dropped" if client.transport.aborted else "held"

    def refused_by(self) -> str | None:
        """The rule the last access event names."""
        return self.access[-1].get("refused_by") if self.access else None

    def hits(self) -> dict[str, int]:
        return {rule.name: rule.stats.hits for rule in self.rules.rules}


def write(directory: Path, name: str, text: str) -> str:
    """Write a list file; its path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)
