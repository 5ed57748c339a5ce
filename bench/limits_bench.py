"""What rate limits cost: per request in process, per check in Redis, and in
memory under a flood of distinct keys.

    python bench/limits_bench.py inprocess [--requests N] [--repeat N]
    python bench/limits_bench.py redis [--checks N]
    python bench/limits_bench.py flood [--keys N] [--max-keys N] [--rate R]

C{inprocess}: the same request loop as C{http_inprocess.py} (one client and
one pooled backend connection on string transports, small responses), on a
route without filters, with one C{RateLimit} (its rate never reached, so
every request is checked and let on, with the RateLimit fields), and with
one that adds no fields, and with a trivial filter (both head hooks, doing
nothing: what the filter chain itself costs); interleaved rounds, medians,
and the cost in % of the route without.

C{redis}: a redis-server of its own on a free port, and the Redis store's
check (one EVALSHA of the GCRA script) timed one at a time (a request's
latency) and with many in flight on the one connection (throughput); Redis is pinned to
CPU 0 and the client to CPU 1.

C{flood}: a twistd rproxy with one limited route behind a trusted proxy
(127.0.0.1), sent requests whose X-Forwarded-For are all distinct (spoofed
keys, as many as C{--keys}); its resident memory before, after C{--max-keys}
keys and at the end.

Pin it: C{taskset -c 1 python bench/limits_bench.py inprocess}.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from http_inprocess import REQUEST, RESPONSE, Connected, Trivial, connected
from twisted.internet.task import Clock

from rproxy.http.filters.limits import RateLimit
from rproxy.limits.gcra import Rate
from rproxy.limits.limiter import Limiter

# In process ------------------------------------------------------------------


def _setup(
    variant: str,
) -> Connected:
    clock = Clock()
    filters: list[Any] = []
    if variant == "trivial":
        filters.append(Trivial())
    elif variant != "none":
        limiter = Limiter(
            "bench",
            Rate(1_000_000, 1),
            10_000_000,
            clock=clock,
            headers=variant == "limit",
        )
        filters.append(RateLimit(limiter))
    return connected(clock, filters)


def _run(variant: str, requests: int) -> float:
    front, front_transport, upstream, upstream_transport = _setup(variant)
    received, answer = front.dataReceived, upstream.dataReceived
    started = time.perf_counter()
    for _ in range(requests):
        received(REQUEST)
        upstream_transport.clear()
        answer(RESPONSE)
        front_transport.clear()
    elapsed = time.perf_counter() - started
    received(REQUEST)
    answer(RESPONSE)
    sent = front_transport.value()
    assert sent.endswith(b"\r\n\r\nhello\n"), sent
    assert (b"RateLimit:" in sent) == (variant == "limit"), sent
    return elapsed / requests * 1e6


def inprocess(requests: int, repeat: int) -> None:
    variants = ("none", "trivial", "limit", "limit-no-fields")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(repeat):
        for offset in range(len(variants)):
            variant = variants[(index + offset) % len(variants)]
            times[variant].append(_run(variant, requests))
    base = statistics.median(times["none"])
    for variant in variants:
        median = statistics.median(times[variant])
        print(
            f"{variant:16} {median:6.2f} us per request (median of {repeat}; "
            f"{1e6 / median:8.0f} req/s; {100 * (median - base) / base:+5.1f}% vs none)"
        )


# Redis -----------------------------------------------------------------------


def redis(checks: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults, inlineCallbacks
    from twisted.internet.task import deferLater

    from rproxy.limits.store import RedisAddress, RedisStore
    from tests.integration.redis import RedisServer

    directory = Path(tempfile.mkdtemp(prefix="rproxy-redis-bench-"))
    server = RedisServer(directory)
    server.start()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        # Redis on CPU 0, rproxy's side on CPU 1, as two machines' worth.
        assert server.proc is not None
        os.sched_setaffinity(server.proc.pid, {0})
        os.sched_setaffinity(0, {1})
    store = RedisStore(RedisAddress("127.0.0.1", server.port), reactor)
    limiter = Limiter("bench", Rate(1_000_000, 1), 1000, clock=reactor, store=store)
    results: dict[str, float] = {}

    @inlineCallbacks
    def measure() -> Any:
        try:
            store.start()
            while not store.ready:
                yield deferLater(reactor, 0.01, lambda: None)
            for _ in range(1000):  # warm up: the script is sent, then its SHA1
                yield limiter.check("warm")
            started, cpu = time.perf_counter(), time.process_time()
            for index in range(checks):
                yield limiter.check(f"k{index % 1000}")
            results["one at a time"] = (time.perf_counter() - started) / checks * 1e6
            results["one at a time, rproxy CPU"] = (
                (time.process_time() - cpu) / checks * 1e6
            )
            started, cpu = time.perf_counter(), time.process_time()
            batch = 500
            for start in range(0, checks, batch):
                yield gatherResults(
                    [limiter.check(f"k{i % 1000}") for i in range(start, start + batch)]
                )
            results["500 in flight"] = (time.perf_counter() - started) / checks * 1e6
            results["500 in flight, rproxy CPU"] = (
                (time.process_time() - cpu) / checks * 1e6
            )
            assert limiter.fallback == 0, limiter.counters()
        finally:
            yield store.stop()
            reactor.stop()

    reactor.callWhenRunning(measure)
    reactor.run()
    stats = (server.command(b"INFO", b"commandstats") or b"").decode()
    server.stop()
    for line in stats.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(part.split("=") for part in line.split(":", 1)[1].split(","))
            results["in Redis (its usec_per_call)"] = float(fields["usec_per_call"])
    for name, cost in results.items():
        print(f"redis check, {name:29}: {cost:6.1f} us per check ({checks} checks)")


# Flood -----------------------------------------------------------------------

FLOOD_CONFIG = """
[shutdown]
grace = 1

[pools.web]
backends = ["127.0.0.1:{web}"]
[pools.web.health]
check = "none"

[limits.per_ip]
rate = "{rate}"
burst = 20
max_keys = {max_keys}

[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
trusted_proxies = ["127.0.0.1"]

[[listeners.routes]]
pool = "web"
limit = ["per_ip"]
"""


def flood(keys: int, max_keys: int, rate: str) -> None:
    from tests.integration.helpers import proxy
    from tests.integration.test_limits import web_backend

    def send(port: int, start: int, count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        for index in range(start, start + count):
            address = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
            conn.request("GET", "/", headers={"X-Forwarded-For": address})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        conn.close()

    with web_backend() as web, tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "rproxy.toml"
        config.write_text(FLOOD_CONFIG.format(web=web, max_keys=max_keys, rate=rate))
        with proxy(config) as running:
            port = running.ports["web"]
            send(port, 0, 1000)  # warm: imports, buffers, the first keys
            rss = {"after 1,000 keys": running.rss_kib()}
            send(port, 1000, max_keys - 1000)
            rss[f"after {max_keys:,} keys (the cap)"] = running.rss_kib()
            started = time.perf_counter()
            send(port, max_keys, keys - max_keys)
            elapsed = time.perf_counter() - started
            rss[f"after {keys:,} keys"] = running.rss_kib()
            rss["peak (VmHWM)"] = running.rss_kib("VmHWM")
            running.stop()
    for name, kib in rss.items():
        print(f"RSS {name:28} {kib / 1024:7.1f} MiB")
    print(f"({keys - max_keys} requests past the cap in {elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("inprocess")
    one.add_argument("--requests", type=int, default=100_000)
    one.add_argument("--repeat", type=int, default=5)
    two = commands.add_parser("redis")
    two.add_argument("--checks", type=int, default=20_000)
    three = commands.add_parser("flood")
    three.add_argument("--keys", type=int, default=100_000)
    three.add_argument("--max-keys", type=int, default=10_000)
    three.add_argument("--rate", default="1/h")
    args = parser.parse_args()
    if args.command == "inprocess":
        inprocess(args.requests, args.repeat)
    elif args.command == "redis":
        redis(args.checks)
    else:
        flood(args.keys, args.max_keys, args.rate)


if __name__ == "__main__":
    main()
