"""Rate limits through real twistd rproxy processes on 127.0.0.1: 429 with
its Retry-After under a bounded burst, two processes sharing one limit
through a real redis-server, and that server stopped mid-run (local
fallback, or 503 with fail = "closed") and back."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.helpers import RunningProxy, drain, proxy
from tests.integration.redis import RedisServer, have_redis

needs_redis = pytest.mark.skipif(not have_redis(), reason="no redis-server here")


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: without this, Nagle holds the body for
    # the proxy's delayed ACK (40 ms a response).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def web_backend() -> Iterator[int]:
    """A threaded HTTP backend on 127.0.0.1 answering every GET with 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def config_text(web: int, limits: str, access_log: Path | None = None) -> str:
    log = (
        f'[access_log]\npath = "{access_log}"\nformat = "json"\n' if access_log else ""
    )
    return f"""
[shutdown]
grace = 1
{log}
[pools.web]
backends = ["127.0.0.1:{web}"]
[pools.web.health]
check = "none"
{limits}

[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"

[[listeners.routes]]
path_prefix = "/api/"
pool = "web"
limit = ["per_ip"]

[[listeners.routes]]
path_prefix = "/strict/"
pool = "web"
limit = ["strict"]
"""


def get(
    running: RunningProxy, path: str, count: int = 1
) -> list[http.client.HTTPResponse]:
    """
    C{count} GETs of C{path} on one keep-alive connection to C{running}'s
    listener, each response read whole.
    """
    conn = http.client.HTTPConnection("127.0.0.1", running.ports["web"], timeout=20)
    responses = []
    try:
        for _ in range(count):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            responses.append(response)
    finally:
        conn.close()
    return responses


def test_429_with_retry_after_under_a_bounded_burst(tmp_path: Path) -> None:
    """rate 1/h with burst 2: three requests pass, then each is 429 with
    Retry-After the seconds left of the hour (the whole hour less the
    moments spent), the RateLimit fields, and an access event naming the
    limiter; another route is not limited."""
    limits = """
[limits.per_ip]
rate = "1/h"
burst = 2
headers = true
[limits.strict]
rate = "1/h"
"""
    access = tmp_path / "access.log"
    with web_backend() as web:
        config = tmp_path / "rproxy.toml"
        config.write_text(config_text(web, limits, access))
        with proxy(config) as running:
            limited = get(running, "/api/x", 6)
            other = get(running, "/other", 6)
            running.stop()
    assert [r.status for r in limited] == [200, 200, 200, 429, 429, 429]
    assert [r.status for r in other] == [200] * 6
    allowed, refused = limited[0], limited[3]
    assert allowed.getheader("RateLimit-Policy") == '"per_ip";q=3;w=10800'
    assert allowed.getheader("RateLimit") == '"per_ip";r=2;t=3600'
    retry = int(refused.getheader("Retry-After") or "0")
    assert 3590 <= retry <= 3600
    assert refused.getheader("RateLimit") == f'"per_ip";r=0;t={retry}'
    events = [json.loads(line) for line in access.read_text().splitlines()]
    refusals = [(e["path"], e.get("refused_by")) for e in events if e["status"] == 429]
    assert refusals == [("/api/x", "limit:per_ip")] * 3
    assert all("refused_by" not in e for e in events if e["status"] == 200)


PROXY_CONFIG = """
[pools.web]
backends = ["127.0.0.1:{web}"]
[pools.web.health]
check = "none"

[limits.per_ip]
rate = "1/h"

[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
accept_proxy = true
trusted_proxies = ["127.0.0.1"]
limit = ["per_ip"]
"""


def proxied_get(running: RunningProxy, source: str) -> int:
    """
    One GET behind a PROXY v1 header saying it came from C{source}; the
    status answered.
    """
    with socket.create_connection(
        ("127.0.0.1", running.ports["web"]), timeout=20
    ) as sock:
        sock.sendall(
            f"PROXY TCP4 {source} 127.0.0.1 40000 80\r\n".encode()
            + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = drain(sock)
    return int(answer.split(b" ", 2)[1])


def test_the_proxy_protocols_source_is_the_key(tmp_path: Path) -> None:
    """On a listener that accepts PROXY headers, each source address the
    header gives has its own quota (the connections all come from
    127.0.0.1)."""
    with web_backend() as web:
        config = tmp_path / "rproxy.toml"
        config.write_text(PROXY_CONFIG.format(web=web))
        with proxy(config) as running:
            statuses = [
                proxied_get(running, source)
                for source in (
                    "203.0.113.1",
                    "203.0.113.2",
                    "203.0.113.1",
                    "203.0.113.3",
                )
            ]
    assert statuses == [200, 200, 429, 200]


def redis_limits(redis: RedisServer, rate: str, burst: int) -> str:
    store = f"redis://127.0.0.1:{redis.port}/0"
    return f"""
[limits.per_ip]
rate = "{rate}"
burst = {burst}
store = "{store}"
[limits.strict]
rate = "{rate}"
burst = {burst}
store = "{store}"
fail = "closed"
"""


def wait_for_clients(redis: RedisServer, count: int) -> None:
    """Wait (bounded) until C{count} clients are connected to C{redis}."""
    import time

    end = time.monotonic() + 30
    while True:
        info = redis.command(b"INFO", b"clients") or b""
        if f"connected_clients:{count + 1}\r\n".encode() in info:  # + this one
            return
        assert time.monotonic() < end, f"not {count} clients: {info!r}"
        time.sleep(0.05)


@needs_redis
def test_two_processes_share_one_limit_through_redis(tmp_path: Path) -> None:
    """Two rproxy processes with one Redis store: requests alternating
    between them pass burst + 1 in all, not each, and the process that had
    let fewer through refuses once the shared quota is spent."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with web_backend() as web:
            config = tmp_path / "rproxy.toml"
            config.write_text(config_text(web, redis_limits(redis, "1/h", 4)))
            with proxy(config) as first, proxy(config) as second:
                wait_for_clients(redis, 2)
                statuses = []
                for index in range(10):
                    running = first if index % 2 == 0 else second
                    statuses.append(get(running, "/api/x")[0].status)
                stats = (redis.command(b"INFO", b"commandstats") or b"").decode()
    finally:
        redis.stop()
    # One script per check: sent once per connection, then by its SHA1.
    assert calls(stats, "evalsha") == 8
    assert calls(stats, "eval") == 2
    assert statuses == [200] * 5 + [429] * 5
    # The second process let two through, then refused: its own local
    # state alone would have let it pass five.
    assert statuses[1::2] == [200, 200, 429, 429, 429]


def calls(commandstats: str, command: str) -> int:
    """How many times Redis ran C{command}, from INFO commandstats."""
    found = re.search(rf"^cmdstat_{command}:calls=(\d+)", commandstats, re.MULTILINE)
    return int(found[1]) if found else 0


@needs_redis
def test_redis_that_stops_answering_is_left_after_the_timeout(tmp_path: Path) -> None:
    """A Redis that accepts but does not answer (stopped with SIGSTOP): the
    request waiting on it is decided locally once the 0.5 s reply timeout
    drops the connection, and the outage is logged once."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with web_backend() as web:
            config = tmp_path / "rproxy.toml"
            config.write_text(config_text(web, redis_limits(redis, "1/h", 2)))
            with proxy(config) as running:
                wait_for_clients(redis, 1)
                assert redis.proc is not None
                os.kill(redis.proc.pid, signal.SIGSTOP)
                try:
                    stalled = [r.status for r in get(running, "/api/x", 2)]
                    running.wait_for("is unreachable")
                finally:
                    os.kill(redis.proc.pid, signal.SIGCONT)
                output = running.stop()
    finally:
        redis.stop()
    assert stalled == [200, 200]
    assert output.count("is unreachable") == 1


@needs_redis
def test_redis_stopped_mid_run_falls_back_then_comes_back(tmp_path: Path) -> None:
    """Redis stops mid-run: every request is still answered, the shared
    limit decides locally (fail = open) and the fail = closed one answers
    503, with one log line for the outage, not one per request; when Redis
    is back the limits share it again."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with web_backend() as web:
            config = tmp_path / "rproxy.toml"
            config.write_text(config_text(web, redis_limits(redis, "1/h", 2)))
            with proxy(config) as running:
                wait_for_clients(redis, 1)
                before = [r.status for r in get(running, "/api/x", 2)]
                redis.stop()
                running.wait_for("is unreachable")
                during = [r.status for r in get(running, "/api/x", 5)]
                closed = [r.status for r in get(running, "/strict/x", 3)]
                redis.start()
                running.wait_for("reachable again")
                after = [r.status for r in get(running, "/api/y", 1)]
                output = running.stop()
    finally:
        redis.stop()
    assert before == [200, 200]
    # The local state is this process's own: a whole burst of its own.
    assert during == [200, 200, 200, 429, 429]
    assert closed == [503, 503, 503]
    assert after == [200]
    assert output.count("is unreachable") == 1
    assert output.count("reachable again") == 1
