"""The README's filter example, run verbatim: extracted from README.md and
driven through an HTTP listener on fake endpoints and a Clock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from rproxy import HTTPProxyFactory, HTTPSettings, IHTTPFilter, Route, Router
from rproxy.backends import Backend, Pool, Registry
from rproxy.testing import FakeEndpoints, HalfCloseTransport, connect

README = Path(__file__).resolve().parent.parent / "README.md"


def example(name: str) -> dict[str, Any]:
    """
    Run the Python block after C{<!-- example: NAME -->} in the README and
    return its names.
    """
    text = README.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- example: {name} -->\n```python\n(.*?)```", text, re.DOTALL
    )
    assert found is not None, f"no example {name!r} in the README"
    names: dict[str, Any] = {}
    exec(compile(found[1], f"README.md example {name}", "exec"), names)
    return names


def listener(clock: Clock, endpoints: FakeEndpoints) -> HTTPProxyFactory:
    require_token = example("filter")["RequireToken"]
    one = require_token(b"s3cret", clock)
    verifyObject(IHTTPFilter, one)
    return HTTPProxyFactory(
        Registry([Pool("web", [Backend("127.0.0.1", 8001)], now=clock.seconds)]),
        clock,
        HTTPSettings(listener="web", router=Router([Route("web")]), filters=[one]),
        endpoint_for=endpoints,
    )


def test_a_request_without_the_token_waits_then_gets_403() -> None:
    """The filter suspends the exchange for 0.1 s, then answers 403 itself;
    no backend is asked and the connection stays open."""
    clock, endpoints = Clock(), FakeEndpoints()
    factory = listener(clock, endpoints)
    proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
    client = connect(proto, HalfCloseTransport())
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.value() == b""
    clock.advance(0.1)
    assert client.value().startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert client.value().endswith(b"\r\n\r\nno\n")
    assert endpoints.attempts == []
    assert not client.disconnecting
    client.loseConnection()
    assert clock.getDelayedCalls() == []


def test_a_request_with_the_token_is_proxied_and_marked() -> None:
    """With the right X-Token the request reaches the backend, and the
    response gets the filter's field."""
    clock, endpoints = Clock(), FakeEndpoints()
    factory = listener(clock, endpoints)
    proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
    client = connect(proto, HalfCloseTransport())
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Token: s3cret\r\n\r\n")
    server = endpoints.last.succeed()
    assert server.value().startswith(b"GET / HTTP/1.1\r\n")
    endpoints.last.protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    head, _, body = client.value().partition(b"\r\n\r\n")
    assert b"\r\nX-Checked-By: rproxy" in head
    assert body == b"ok"
    client.loseConnection()
    server.loseConnection()
    factory.keep_alive.close_all()
