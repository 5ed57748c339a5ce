"""What request rules cost a small request, without sockets or a reactor.

The same loop as `http_inprocess.py` (one client connection and one pooled
backend connection on string transports, a request head in, a small
response out), on a route with no rules, with the five rules of the issue's
example (TRACE/TRACK, a path regex, a User-Agent list, a query regex,
max_body), with those five and one rate limit (never reached, its
RateLimit fields on: the issue's "one limiter and five rules"), and with
the shipped examples/rules/waf.toml (19 rules).  The
request lets every rule run to its end: none matches.  Runs alternate
between the variants so that a machine busy with something else slows all
of them alike; the median of each is reported.

    taskset -c 1 python bench/rules_bench.py [--requests N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from http_inprocess import connected
from twisted.internet.task import Clock

from rproxy.config import load_config, parse_config
from rproxy.http.filters import HTTPFilter
from rproxy.http.filters.limits import RateLimit
from rproxy.http.filters.rules import RuleSet
from rproxy.limits.gcra import Rate
from rproxy.limits.limiter import Limiter

ROOT = Path(__file__).resolve().parent.parent
REQUEST = (
    b"GET /api/v1/items/42?fields=name,price HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
    b"(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
    b"Date: Mon, 23 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 6\r\n"
    b"Connection: keep-alive\r\n\r\nhello\n"
)

FIVE = """
[pools.web]
backends = ["127.0.0.1:8001"]
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
pool = "web"
rules = "api"

[rules.api]
deny = [
  { method = ["TRACE", "TRACK"] },
  { path_regex = '(?i)\\.\\./|%2e%2e' },
  { header = "User-Agent", list = "bad-bots.txt" },
  { query_regex = "(?i)union\\\\s+select" },
]
max_body = "10MiB"
"""


class Nothing(HTTPFilter):
    """A filter whose request-head hook lets everything through: what any
    filter on the route costs, rules or not."""

    def request_head(self, exchange: object, head: object) -> None:
        return None


def rule_sets(clock: Clock) -> dict[str, list[HTTPFilter]]:
    """The filters of each variant, as a route runs them."""
    five = parse_config(tomllib.loads(FIVE), str(ROOT / "examples/rules/five.toml"))
    waf = load_config(ROOT / "examples/rules/waf.toml")
    limiter = Limiter("bench", Rate(1_000_000, 1), 10_000_000, clock=clock)
    return {
        "none": [],
        "one no-op": [Nothing()],
        "five rules": [RuleSet(five.rules[0], clock).filter],
        "limit+five": [RuleSet(five.rules[0], clock).filter, RateLimit(limiter)],
        "waf.toml": [RuleSet(waf.rules[0], clock).filter],
    }


def run(filters: list[HTTPFilter], clock: Clock, requests: int) -> float:
    front, front_transport, upstream, upstream_transport = connected(clock, filters)
    received = front.dataReceived
    answer = upstream.dataReceived
    started = time.process_time()
    for _ in range(requests):
        received(REQUEST)
        upstream_transport.clear()
        answer(RESPONSE)
        front_transport.clear()
    elapsed = time.process_time() - started
    received(REQUEST)
    assert upstream_transport.value().startswith(b"GET /api/v1/items/42"), "refused?"
    answer(RESPONSE)
    assert front_transport.value().endswith(b"\r\n\r\nhello\n")
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    clock = Clock()
    variants = rule_sets(clock)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, filters in variants.items():
            times[name].append(run(filters, clock, args.requests))
    base = statistics.median(times["none"])
    for name, measured in times.items():
        median = statistics.median(measured)
        extra = median - base
        print(
            f"{name:>10}: {median:6.2f} us per request (min {min(measured):.2f}); "
            f"{extra:+5.2f} us, {extra / base * 100:+5.1f}% against none "
            f"({args.repeat} runs of {args.requests})"
        )
    for name, filters in variants.items():
        for one in filters:
            rules = getattr(one, "rules", None)
            if isinstance(rules, RuleSet):
                assert not any(rule.stats.hits for rule in rules.rules), name


if __name__ == "__main__":
    main()
