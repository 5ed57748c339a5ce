"""Header rewriting from the config: the listener and route keys read into
L{HeaderRules}, their errors, and what the filters they build do to requests
and responses through the HTTP/1.1 codec."""

from __future__ import annotations

import tomllib

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from rproxy.backends import Backend, Pool, Registry
from rproxy.config import Config, ConfigError, parse_config
from rproxy.http.filters.headers import HeaderRules
from rproxy.http.listener import HTTPProxyFactory
from rproxy.service import http_settings
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

CONFIG = """
[pools.web]
backends = ["127.0.0.1:8001"]
[pools.api]
backends = ["127.0.0.1:8002"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0"
pool = "web"
set_request_headers = { "X-Env" = "prod" }
remove_request_headers = ["X-Debug"]
add_response_headers = { "X-Frame-Options" = "DENY" }
remove_response_headers = ["server"]

[[listeners.routes]]
path_prefix = "/api/"
pool = "api"
set_request_headers = { "X-Route" = "api", "x-env" = "api" }
add_response_headers = { "Cache-Control" = "no-store" }
remove_response_headers = ["X-Powered-By"]
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "c.toml")


def errors(text: str) -> list[str]:
    try:
        parse(text)
    except ConfigError as e:
        return list(e.errors)
    raise AssertionError("the config was accepted")


def test_listener_and_route_rules_are_read() -> None:
    """Each key lands in the listener's or the route's rules, names
    lowercased where they are matched."""
    config = parse(CONFIG)
    listener = config.listeners[0]
    assert listener.headers == HeaderRules(
        set_request=((b"x-env", b"prod"),),
        remove_request=frozenset({b"x-debug"}),
        add_response=((b"x-frame-options", b"DENY"),),
    )
    assert listener.remove_response_headers == ("server",)
    route = listener.routes[0]
    assert route.headers == HeaderRules(
        set_request=((b"x-route", b"api"), (b"x-env", b"api")),
        add_response=((b"cache-control", b"no-store"),),
        remove_response=frozenset({b"x-powered-by"}),
    )
    assert not listener.routes[1].headers


def test_framing_and_routing_fields_cannot_be_rewritten() -> None:
    """Setting or removing a field that frames or routes the message is
    refused, naming the key and the name."""
    problems = errors(
        CONFIG.replace(
            'set_request_headers = { "X-Env" = "prod" }',
            'set_request_headers = { "Content-Length" = "5", "Host" = "x" }',
        ).replace(
            'remove_request_headers = ["X-Debug"]', 'remove_request_headers = ["TE"]'
        )
    )
    assert any(
        p.startswith(
            "c.toml: listeners[0].set_request_headers.Content-Length: cannot rewrite"
        )
        for p in problems
    ), problems
    assert any("set_request_headers.Host: cannot rewrite" in p for p in problems)
    assert any("remove_request_headers[0]: cannot rewrite 'TE'" in p for p in problems)


def test_bad_values_are_refused() -> None:
    """A value that is no printable string, or a key that is no table, is a
    problem under its own path."""
    problems = errors(
        CONFIG.replace(
            '{ "X-Route" = "api", "x-env" = "api" }', '{ "X-Route" = 5 }'
        ).replace(
            'add_response_headers = { "X-Frame-Options" = "DENY" }',
            'add_response_headers = ["X-Frame-Options"]',
        )
    )
    assert (
        "c.toml: listeners[0].routes[0].set_request_headers.X-Route: "
        "must be a string of printable ASCII, got 5"
    ) in problems
    assert any(
        p.startswith("c.toml: listeners[0].add_response_headers: must be a table")
        for p in problems
    ), problems


class _Front:
    """The config's listener on fake endpoints and a Clock."""

    def __init__(self) -> None:
        config = parse(CONFIG)
        self.clock = Clock()
        self.endpoints = FakeEndpoints()
        pools = [
            Pool("web", [Backend("127.0.0.1", 8001)], now=self.clock.seconds),
            Pool("api", [Backend("127.0.0.1", 8002)], now=self.clock.seconds),
        ]
        self.factory = HTTPProxyFactory(
            Registry(pools),
            self.clock,
            http_settings(config, config.listeners[0]),
            endpoint_for=self.endpoints,
        )

    def exchange(self, request: bytes, response: bytes) -> tuple[bytes, bytes]:
        """What the backend got and what the client got."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        client = connect(proto, HalfCloseTransport())
        proto.dataReceived(request)
        server = self.endpoints.last.succeed()
        self.endpoints.last.protocol.dataReceived(response)
        sent, got = server.value(), client.value()
        server.loseConnection()
        client.loseConnection()
        self.factory.keep_alive.close_all()
        return sent, got


RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Powered-By: php\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


def _fields(head: bytes) -> list[bytes]:
    return head.split(b"\r\n\r\n")[0].lower().split(b"\r\n")[1:]


def test_listener_rules_apply_to_every_request() -> None:
    """The listener's rules: X-Env replaces the client's, X-Debug is
    removed, X-Frame-Options is added and Server removed from the response."""
    sent, got = _Front().exchange(
        b"GET /page HTTP/1.1\r\nHost: a\r\nX-Env: dev\r\nX-Debug: 1\r\n\r\n", RESPONSE
    )
    upstream = _fields(sent)
    assert b"x-env: prod" in upstream
    assert b"x-env: dev" not in upstream
    assert not any(f.startswith(b"x-debug") for f in upstream)
    downstream = _fields(got)
    assert b"x-frame-options: deny" in downstream
    assert not any(f.startswith(b"server") for f in downstream)
    assert b"x-powered-by: php" in downstream  # only the api route removes it
    assert got.endswith(b"\r\n\r\nok")


def test_route_rules_follow_the_listeners() -> None:
    """A request taking the route gets the listener's rules, then the
    route's: the route's X-Env wins, and its response rules apply too."""
    sent, got = _Front().exchange(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", RESPONSE)
    upstream = _fields(sent)
    assert b"x-env: api" in upstream and b"x-env: prod" not in upstream
    assert b"x-route: api" in upstream
    downstream = _fields(got)
    assert b"cache-control: no-store" in downstream
    assert not any(f.startswith(b"x-powered-by") for f in downstream)
    assert b"x-frame-options: deny" in downstream
