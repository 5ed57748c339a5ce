"""The HTTP proxy's own per-request cost, without sockets or a reactor.

Drives one client connection and one pooled backend connection of an
L{HTTPProxyFactory} through string transports on a L{Clock}: each round
feeds a request head to the front protocol and a response to the backend
connection, as wrk and nginx would send them.  What it times is rproxy's
Python work per request (parsing, routing, head building, bookkeeping), the
part of the cost that the socket benchmark (`http_bench.py`) cannot separate
from syscalls and the reactor.

    python bench/http_inprocess.py [--requests N] [--filters N] [--profile]

With C{--filters N}, the listener has N trivial filters (each looks at the
request head and the response head and lets them through): what the filter
chain costs a request.  With C{--cache}, the route has a memory cache and
the backend's response says C{max-age=3600}: the first request stores it,
and every request timed is a hit, answered without the backend.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rproxy.backends import Backend, Pool, Registry
from rproxy.cache.memory import MemoryStore
from rproxy.cache.settings import CacheSettings
from rproxy.cache.shared import Cache
from rproxy.cache.store import TieredStore
from rproxy.http.exchange import Exchange
from rproxy.http.filters import HTTPFilter
from rproxy.http.filters.cache import CacheFilter
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.http.upstream import UpstreamProtocol

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
    b"Date: Mon, 23 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 6\r\n"
    b"Connection: keep-alive\r\n\r\nhello\n"
)
#: RESPONSE's Date, in seconds since the epoch.
DATE = 1795446000.0
CACHEABLE = RESPONSE.replace(
    b"Connection: keep-alive", b"Cache-Control: max-age=3600\r\nConnection: keep-alive"
)


class Trivial(HTTPFilter):
    """Looks at both heads and lets them through."""

    name = "trivial"

    def request_head(self, exchange: Exchange, head: RequestHead) -> None:
        return None

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        return None


#: one client connection and its pooled backend connection, on string
#: transports: (client side, its transport, backend side, its transport).
Connected = tuple[Any, StringTransport, UpstreamProtocol, StringTransport]


def connected(
    clock: Clock,
    route_filters: Sequence[Any] = (),
    listener_filters: Sequence[Any] = (),
) -> Connected:
    """
    A client connection to an HTTP listener whose one route (with
    C{route_filters}) goes to one backend, over one kept-alive backend
    connection; the other benches build on it.
    """
    backend = Backend("127.0.0.1", 8001)
    pool = Pool("web", [backend], now=clock.seconds)
    factory = HTTPProxyFactory(
        Registry([pool]),
        clock,
        HTTPSettings(
            listener="front",
            router=Router([Route(pool="web", filters=list(route_filters))]),
            filters=list(listener_filters),
        ),
        endpoint_for=lambda backend: None,  # type: ignore[arg-type,return-value]
    )
    upstream = UpstreamProtocol(backend)
    upstream_transport = StringTransport()
    upstream.makeConnection(upstream_transport)
    upstream.reusable = True
    factory.keep_alive.put(upstream)
    front = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    front_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    front.makeConnection(front_transport)
    return front, front_transport, upstream, upstream_transport


def setup(filters: int = 0, cache: bool = False) -> Connected:
    clock = Clock()
    clock.advance(DATE)  # the response's Date, so a stored one is fresh
    route_filters = []
    if cache:
        store = TieredStore(MemoryStore(64 << 20), None, 8 << 20)
        route_filters.append(CacheFilter(Cache("bench", CacheSettings(), store, clock)))
    return connected(clock, route_filters, [Trivial() for _ in range(filters)])


def run(requests: int, filters: int = 0, cache: bool = False) -> float:
    if cache:
        return run_hits(requests)
    front, front_transport, upstream, upstream_transport = setup(filters)
    received = front.dataReceived
    answer = upstream.dataReceived
    started = time.perf_counter()
    for _ in range(requests):
        received(REQUEST)
        upstream_transport.clear()
        answer(RESPONSE)
        front_transport.clear()
    elapsed = time.perf_counter() - started
    # One last round to check the exchange still works end to end.
    received(REQUEST)
    assert upstream_transport.value().startswith(b"GET /small HTTP/1.1\r\n")
    answer(RESPONSE)
    assert front_transport.value().endswith(b"\r\n\r\nhello\n"), front_transport.value()
    return elapsed / requests * 1e6


def run_hits(requests: int) -> float:
    front, front_transport, upstream, upstream_transport = setup(cache=True)
    received = front.dataReceived
    received(REQUEST)  # the miss that stores it
    upstream.dataReceived(CACHEABLE)
    front_transport.clear()
    upstream_transport.clear()
    started = time.perf_counter()
    for _ in range(requests):
        received(REQUEST)
        front_transport.clear()
    elapsed = time.perf_counter() - started
    received(REQUEST)
    assert upstream_transport.value() == b"", "a hit asked the backend"
    answer = front_transport.value()
    assert b"Cache-Status: rproxy; hit" in answer and answer.endswith(b"hello\n"), (
        answer
    )
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--filters", type=int, default=0)
    parser.add_argument("--cache", action="store_true", help="time cache hits")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.requests, args.filters, args.cache)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    times = sorted(
        run(args.requests, args.filters, args.cache) for _ in range(args.repeat)
    )
    print(
        f"{times[len(times) // 2]:.2f} us per request (median of {args.repeat}, "
        f"min {times[0]:.2f}, max {times[-1]:.2f}), {args.requests} requests each"
    )


if __name__ == "__main__":
    main()
