#!/usr/bin/env python3
"""HTTP on loopback: direct, through rproxy, HAProxy, nginx and Twisted's proxy.

One run of this script loads one nginx backend (started by the script, one
worker) with ``wrk`` (1 thread, 50 connections by default) directly and
through four reverse proxies, each proxy pinned alone to one CPU while wrk
and the backend share another:

- ``direct``: wrk to the nginx backend, no proxy;
- ``rproxy``: ``twistd -n rproxy`` with one ``protocol = "http"`` listener
  over one backend, health checks off;
- ``haproxy``: HAProxy ``mode http``, ``nbthread 1``, ``http-reuse always``,
  no logging;
- ``nginx``: a second nginx as the proxy, one worker, ``keepalive 32`` to
  the upstream over HTTP/1.1, no access log;
- ``twisted``: Twisted's ``twisted.web.proxy.ReverseProxyResource`` on a
  ``Site`` (a generated script run by this Python), the plain Twisted
  reference.

Two bodies: ``small`` (``hello\\n``, an nginx ``return``) and ``64k`` (a
65536-byte static file).  Each run starts a fresh backend and proxy, checks
one GET through the proxy, warms up with a short wrk run, then measures one
wrk run; it reports req/s, the p50 and p99 latency, the errors wrk saw (a
run with any error is marked invalid) and the proxy's CPU use and memory.
A target that fails (rproxy before its HTTP listener exists) is reported
with the first lines of its log, and the others are still measured.
``--profile`` adds one rproxy run per body under ``py-spy record``.  Linux
only (reads /proc).

    python bench/http_bench.py --seconds 5 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tcp_throughput import (
    PROFILE_SUFFIX,
    TWISTD,
    BenchError,
    Processes,
    Started,
    add_common_arguments,
    cpu_seconds,
    free_ports,
    listening_ports,
    memory_kib,
    py_spy,
    setup_checks,
    summarize_speedscope,
    tail,
    terminate,
    tool_problems,
    twistd_env,
)

# The sibling benchmark, imported as a module: this script's directory is
# sys.path[0] when it is run as ``python bench/http_bench.py``.
from tcp_throughput import environment as tcp_environment

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TARGETS = (
    "direct",
    "rproxy",
    "haproxy",
    "nginx",
    "twisted",
    "rproxy-cache",
    "nginx-cache",
    "rproxy-rules",
    "rproxy-limit",
    "rproxy-limit-quiet",
    "rproxy-traffic",
)
PROXIES = TARGETS[1:]
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0  # seconds a started process gets to listen
GET_TIMEOUT = 5.0  # seconds for each test GET before a run
SMALL_BODY = b"hello\n"
LARGE_SIZE = 64 * 1024
# body name -> (URL path, body length)
SIZES = {
    "small": ("/small", len(SMALL_BODY)),
    "64k": ("/64k", LARGE_SIZE),
    # The small body with Cache-Control: max-age=3600, for the cache targets
    # (which store it on the test GET and answer every later one).
    "cached": ("/cached", len(SMALL_BODY)),
}
# The goals rproxy is judged against (the HTTP issue).
GOAL_VS_HAPROXY = {"small": 0.35, "64k": 0.5}
GOAL_P99_MS = 5.0
INSTALL = {
    "wrk": "apt-get install -y wrk",
    "nginx": "apt-get install -y nginx",
    "haproxy": "apt-get install -y haproxy",
    "taskset": "apt-get install -y util-linux",
    "py-spy": "pip install py-spy",
}


class TargetError(Exception):
    """
    The target under test (not the benchmark) failed: it did not start, did
    not answer a GET correctly, or exited during the run.  The other targets
    are still measured.  C{startup} is true when it never listened: it is
    then not tried again.
    """

    def __init__(self, message: str, startup: bool = False) -> None:
        super().__init__(message)
        self.startup = startup


# Processes and /proc ------------------------------------------------------


def log_head(path: Path, lines: int = 15, last: int = 5) -> str:
    """
    The first C{lines} lines of a log, indented; of a longer log, also its
    C{last} lines (where a traceback ends).
    """
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    | (no log)"
    if not text:
        return "    | (empty log)"
    shown = [f"    | {line}" for line in text[:lines]]
    if len(text) > lines + last:
        shown.append(f"    | ... {len(text) - lines - last} more line(s)")
    shown += [f"    | {line}" for line in text[max(lines, len(text) - last) :]]
    return "\n".join(shown)


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants (nginx: the master and its worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        each = todo.pop()
        tree.append(each)
        todo.extend(children.get(each, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time so far of C{pid} and its descendants."""
    times = [cpu_seconds(p) for p in process_tree(pid)]
    present = [t for t in times if t is not None]
    return sum(present) if present else None


def tree_memory_kib(pid: int, name: str) -> int | None:
    """A /proc/PID/status figure summed over C{pid} and its descendants."""
    sizes = [memory_kib(p, name) for p in process_tree(pid)]
    present = [s for s in sizes if s is not None]
    return sum(present) if present else None


def children_cpu_seconds() -> float:
    """CPU time of this process's children already waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_ready(
    started: Started,
    port: int,
    path: str,
    length: int,
    failure: type[Exception],
) -> None:
    """
    Wait, bounded by L{READY_TIMEOUT}, until C{port} listens (read from the
    kernel's socket table), then GET C{path} twice on one connection (if the
    server keeps it open) and check the status and the body length: wrk
    never reports a request that hangs, so a keep-alive connection stuck
    after its first response must be caught here.  Raises C{failure}
    (L{TargetError} for a proxy, the fatal L{BenchError} for the backend)
    with the first lines of the log.
    """

    def fail(why: str, startup: bool) -> Exception:
        message = f"{started.name} {why}:\n{log_head(started.log)}"
        if failure is TargetError:
            return TargetError(message, startup)
        return failure(message)

    deadline = time.monotonic() + READY_TIMEOUT
    while port not in listening_ports():
        code = started.proc.poll()
        if code is not None:
            raise fail(f"exited with status {code} before listening on {port}", True)
        if time.monotonic() > deadline:
            raise fail(f"did not listen on {port} within {READY_TIMEOUT:.0f}s", True)
        time.sleep(0.02)
    connection = http.client.HTTPConnection(HOST, port, timeout=GET_TIMEOUT)
    try:
        for which in ("first", "second"):
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise fail(
                    f"failed the {which} test GET {path} on one connection: {error!r}",
                    False,
                ) from None
            if response.status != 200 or len(body) != length:
                raise fail(
                    f"answered the {which} test GET {path} with {response.status} "
                    f"and a {len(body)}-byte body (expected 200 and {length} bytes)",
                    False,
                )
    finally:
        connection.close()


# The backend and the proxies ----------------------------------------------


@dataclass
class Plan:
    seconds: int
    warmup: int
    connections: int
    threads: int
    timeout: int
    proxy_cpu: int
    load_cpu: int
    backend_port: int
    proxy_ports: dict[str, int]


def _nginx_common(workdir: Path, role: str) -> str:
    """The top of an nginx config that keeps every file in C{workdir}."""
    # As root, nginx workers switch to "nobody", who cannot read the private
    # temporary directory the 64 KiB file is in: keep them root (loopback
    # only, generated files only).
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = workdir / f"nginx-{role}-temp"
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx-{role}.pid;
error_log {workdir}/nginx-{role}-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # Never close a client connection for its request count (default 1000),
    # so wrk keeps its 50 connections for the whole run.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""


def nginx_argv(workdir: Path, role: str, config: str) -> list[str]:
    path = workdir / f"nginx-{role}.conf"
    path.write_text(config)
    (workdir / f"nginx-{role}-temp").mkdir(exist_ok=True)
    return [
        "nginx",
        "-p",
        str(workdir),
        "-c",
        str(path),
        # The error log used before the config is read (default /var/log).
        "-e",
        str(workdir / f"nginx-{role}-error.log"),
    ]


def backend_argv(workdir: Path, port: int) -> list[str]:
    """The nginx backend: /small is a 6-byte return, /64k a static file."""
    docroot = workdir / "www"
    docroot.mkdir(exist_ok=True)
    pattern = b"0123456789abcdef" * 4 + b"\n"
    (docroot / "64k").write_bytes(
        (pattern * (LARGE_SIZE // len(pattern) + 1))[:LARGE_SIZE]
    )
    body = SMALL_BODY.decode().replace("\n", "\\n")
    config = (
        _nginx_common(workdir, "backend")
        + f"""\
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {HOST}:{port} backlog=4096;
        root {docroot};
        location = /small {{
            default_type text/plain;
            return 200 "{body}";
        }}
        location = /64k {{
        }}
        location = /cached {{
            default_type text/plain;
            add_header Cache-Control "max-age=3600";
            return 200 "{body}";
        }}
    }}
}}
"""
    )
    return nginx_argv(workdir, "backend", config)


#: the five request rules of the traffic-control issue's example, on the
#: rproxy-rules target's one route.
RULES = """
[rules.bench]
deny = [
  { method = ["TRACE", "TRACK"] },
  { path_regex = '(?i)\\.\\./|%2e%2e' },
  { header = "User-Agent", list = "bad-bots.txt" },
  { query_regex = "(?i)union\\\\s+select" },
]
max_body = "10MiB"
"""
RULES_ROUTE = """
[[listeners.routes]]
path_prefix = "/"
pool = "web"
rules = "bench"
"""


def rproxy_argv(
    workdir: Path,
    port: int,
    backend: int,
    *,
    cache: bool = False,
    rules: bool = False,
    limit: str | None = None,
) -> list[str]:
    config = workdir / "rproxy.toml"
    routes = (
        """
[caches.bench]
memory = "64MiB"

[[listeners.routes]]
path_prefix = "/"
pool = "web"
cache = "bench"
"""
        if cache
        else ""
    )
    if rules:
        shutil.copy(REPO / "examples" / "rules" / "bad-bots.txt", workdir)
        routes += RULES + ("" if limit is not None else RULES_ROUTE)
    if limit is not None:
        # A rate wrk never reaches: every request is checked and let on.
        routes += f"""
[limits.bench]
rate = "1000000/s"
burst = 1000000
{limit}

[[listeners.routes]]
path_prefix = "/"
pool = "web"
limit = ["bench"]
{'rules = "bench"' if rules else ""}
"""
    config.write_text(
        f"""\
[pools.web]
backends = ["{HOST}:{backend}"]

[pools.web.health]
check = "none"

[[listeners]]
name = "bench"
protocol = "http"
listen = "tcp:{port}:interface={HOST}"
pool = "web"
{routes}"""
    )
    return [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)]


def rproxy_cache_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """rproxy with a memory cache on its one route."""
    return rproxy_argv(workdir, port, backend, cache=True)


def rproxy_rules_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """rproxy with five request rules on its one route."""
    return rproxy_argv(workdir, port, backend, rules=True)


def rproxy_limit_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """rproxy with one rate limit on its one route (RateLimit fields on)."""
    return rproxy_argv(workdir, port, backend, limit="headers = true")


def rproxy_limit_quiet_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """rproxy with one rate limit on its one route (no RateLimit fields on
    allowed responses: the default)."""
    return rproxy_argv(workdir, port, backend, limit="")


def rproxy_traffic_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """rproxy with one rate limit and the five request rules on its one
    route (issue 13's speed goal)."""
    return rproxy_argv(workdir, port, backend, rules=True, limit="")


def haproxy_argv(workdir: Path, port: int, backend: int) -> list[str]:
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

listen bench
    bind {HOST}:{port}
    server web {HOST}:{backend}
"""
    )
    return ["haproxy", "-db", "-f", str(config)]


def nginx_proxy_argv(
    workdir: Path, port: int, backend: int, *, cache: bool = False
) -> list[str]:
    # proxy_cache with nginx's defaults otherwise: it follows Cache-Control.
    cache_zone = (
        f"    proxy_cache_path {workdir}/nginx-cache keys_zone=bench:16m;\n"
        if cache
        else ""
    )
    use_cache = "            proxy_cache bench;\n" if cache else ""
    config = (
        _nginx_common(workdir, "proxy")
        + cache_zone
        + f"""\
    upstream backend {{
        server {HOST}:{backend};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{use_cache}        }}
    }}
}}
"""
    )
    return nginx_argv(workdir, "proxy", config)


TWISTED_PROXY = '''\
"""Twisted's ReverseProxyResource on a Site, without an access log."""

import sys

from twisted.internet import reactor
from twisted.web import proxy, server


class QuietSite(server.Site):
    def log(self, request):
        pass  # no access log, like the other proxies


port, backend = int(sys.argv[1]), int(sys.argv[2])
site = QuietSite(proxy.ReverseProxyResource("{host}", backend, b""))
reactor.listenTCP(port, site, backlog=4096, interface="{host}")
reactor.run()
'''


def twisted_argv(workdir: Path, port: int, backend: int) -> list[str]:
    script = workdir / "twisted_proxy.py"
    script.write_text(TWISTED_PROXY.replace("{host}", HOST))
    return [sys.executable, str(script), str(port), str(backend)]


def nginx_cache_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """nginx with proxy_cache (a disk cache whose hot objects the kernel's
    page cache holds)."""
    return nginx_proxy_argv(workdir, port, backend, cache=True)


PROXY_ARGV = {
    "rproxy": rproxy_argv,
    "haproxy": haproxy_argv,
    "nginx": nginx_proxy_argv,
    "twisted": twisted_argv,
    "rproxy-cache": rproxy_cache_argv,
    "nginx-cache": nginx_cache_argv,
    "rproxy-rules": rproxy_rules_argv,
    "rproxy-limit": rproxy_limit_argv,
    "rproxy-limit-quiet": rproxy_limit_quiet_argv,
    "rproxy-traffic": rproxy_traffic_argv,
}


# wrk ----------------------------------------------------------------------


_TIME_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_REQUESTS_PER_S = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.M)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    socket_errors: dict[str, int]
    non_2xx: int

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.errors == 0 and self.p99_ms is not None


def parse_wrk(text: str) -> WrkResult:
    """
    Read wrk's text report (with ``--latency``).  Latencies come as
    ``512.00us``, ``1.20ms``, ``2.00s`` (or ``m``, ``h``) and are returned
    in milliseconds.  ``Socket errors`` and ``Non-2xx or 3xx responses``
    lines appear only when there were some; wrk counts statuses >= 400 in
    the latter.
    """
    found = _REQUESTS_PER_S.search(text)
    total = _TOTAL.search(text)
    if found is None or total is None:
        raise BenchError(f"wrk output not understood:\n{text[-2000:]}")
    percentiles = {
        float(share): float(value) * _TIME_MS[unit]
        for share, value, unit in _PERCENTILE.findall(text)
    }
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    errors = _SOCKET_ERRORS.search(text)
    if errors is not None:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests_per_s=float(found.group(1)),
        requests=int(total.group(1)),
        p50_ms=percentiles.get(50.0),
        p99_ms=percentiles.get(99.0),
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(
    procs: Processes, plan: Plan, port: int, path: str, seconds: int, name: str
) -> tuple[WrkResult, float]:
    """One wrk run; its result and wrk's own CPU seconds."""
    argv = [
        "wrk",
        f"-t{plan.threads}",
        f"-c{plan.connections}",
        f"-d{seconds}s",
        f"--timeout={plan.timeout}s",
        "--latency",
        f"http://{HOST}:{port}{path}",
    ]
    before = children_cpu_seconds()
    client = procs.start(name, argv, plan.load_cpu)
    try:
        code = client.proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish:\n{tail(client.log)}") from None
    finally:
        procs.stop(client)
    used = children_cpu_seconds() - before
    text = client.log.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"wrk exited with status {code}:\n{tail(client.log)}")
    return parse_wrk(text), used


# One measurement ----------------------------------------------------------


@dataclass
class Run:
    target: str
    size: str
    round: int
    requests_per_s: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int]
    stalled: bool
    valid: bool
    proxy_cpu_percent: float | None = None
    #: the proxy's CPU time (user and system) per request, in microseconds:
    #: what a request costs it whatever else the machine is doing.
    proxy_cpu_us: float | None = None
    load_cpu_percent: float | None = None
    proxy_idle_rss_kib: int | None = None
    proxy_peak_rss_kib: int | None = None

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


@dataclass
class Failure:
    target: str
    size: str
    round: int
    error: str
    startup: bool = False  # it never listened


@dataclass
class ProfileRequest:
    output: Path
    format: str
    native: bool
    rate: int
    summary: dict[str, Any] | None = field(default=None)

    def attach(self, procs: Processes, pid: int, plan: Plan) -> Started:
        argv = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(self.rate),
            "--format",
            self.format,
            "--output",
            str(self.output),
            # An upper bound: normally stopped (SIGINT) when wrk is done.
            "--duration",
            str(plan.seconds + 30),
            # Do not stop the proxy to sample it: keeps the load realistic.
            "--nonblocking",
        ]
        if self.native:
            argv.append("--native")
        spy = procs.start("py-spy", argv, plan.load_cpu)
        deadline = time.monotonic() + READY_TIMEOUT
        while b"Sampling process" not in spy.log.read_bytes():
            if spy.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"py-spy could not attach to {pid}:\n{tail(spy.log)}")
            time.sleep(0.02)
        return spy


def _check_alive(proxy: Started | None) -> None:
    if proxy is not None and proxy.proc.poll() is not None:
        raise TargetError(
            f"{proxy.name} exited (status {proxy.proc.returncode}) during the "
            f"run:\n{log_head(proxy.log)}"
        )


@contextlib.contextmanager
def _proxy_blamed(proxy: Started | None) -> Iterator[None]:
    """If wrk fails because the proxy exited, the proxy failed."""
    try:
        yield
    except BenchError:
        _check_alive(proxy)
        raise
    _check_alive(proxy)


def measure(
    procs: Processes,
    plan: Plan,
    target: str,
    size: str,
    round_: int,
    profile: ProfileRequest | None = None,
) -> Run:
    """
    One wrk run to C{target} for body C{size}, with a fresh backend and a
    fresh proxy: test GET, warm-up run (not counted), measured run.
    """
    path, length = SIZES[size]
    started: list[Started] = []
    try:
        backend = procs.start(
            "nginx-backend",
            backend_argv(procs.workdir, plan.backend_port),
            plan.load_cpu,
        )
        started.append(backend)
        wait_ready(backend, plan.backend_port, path, length, BenchError)
        proxy = None
        port = plan.backend_port
        if target != "direct":
            port = plan.proxy_ports[target]
            argv = PROXY_ARGV[target](procs.workdir, port, plan.backend_port)
            env = twistd_env() if target.startswith("rproxy") else None
            proxy = procs.start(target, argv, plan.proxy_cpu, env)
            started.append(proxy)
            wait_ready(proxy, port, path, length, TargetError)
        if plan.warmup:
            with _proxy_blamed(proxy):
                run_wrk(procs, plan, port, path, plan.warmup, "wrk-warmup")
        idle_rss = None
        if proxy is not None:
            idle_rss = tree_memory_kib(proxy.proc.pid, "VmRSS")
            if profile is not None:
                started.append(profile.attach(procs, proxy.proc.pid, plan))
        proxy_before = tree_cpu_seconds(proxy.proc.pid) if proxy else None
        backend_before = tree_cpu_seconds(backend.proc.pid)
        clock_before = time.monotonic()
        with _proxy_blamed(proxy):
            result, wrk_cpu = run_wrk(procs, plan, port, path, plan.seconds, "wrk")
        wall = time.monotonic() - clock_before
        proxy_after = tree_cpu_seconds(proxy.proc.pid) if proxy else None
        backend_after = tree_cpu_seconds(backend.proc.pid)
        _check_alive(proxy)
        run = Run(
            target,
            size,
            round_,
            requests_per_s=result.requests_per_s,
            requests=result.requests,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            non_2xx=result.non_2xx,
            socket_errors=result.socket_errors,
            # wrk counts neither a request that never completes nor its
            # connection: fewer responses than one per connection per
            # second means connections hung (no healthy target is near).
            stalled=result.requests < plan.connections * plan.seconds,
            valid=result.valid,
        )
        run.valid = run.valid and not run.stalled
        if backend_before is not None and backend_after is not None:
            run.load_cpu_percent = (
                100 * (wrk_cpu + backend_after - backend_before) / wall
            )
        if proxy is not None:
            if proxy_before is not None and proxy_after is not None:
                run.proxy_cpu_percent = 100 * (proxy_after - proxy_before) / wall
                if result.requests:
                    used = proxy_after - proxy_before
                    run.proxy_cpu_us = 1e6 * used / result.requests
            run.proxy_idle_rss_kib = idle_rss
            run.proxy_peak_rss_kib = tree_memory_kib(proxy.proc.pid, "VmHWM")
        return run
    finally:
        for each in reversed(started):
            # py-spy writes its profile when interrupted.
            sig = signal.SIGINT if each.name == "py-spy" else signal.SIGTERM
            procs.stop(each, sig)


# Reporting ----------------------------------------------------------------


@dataclass
class Summary:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    valid: bool  # from valid runs only (else from all, flagged)


def summarize(runs: list[Run]) -> dict[str, dict[str, Summary]]:
    """size -> target -> medians, over the valid runs when there are some."""
    grouped: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.size, run.target), []).append(run)
    out: dict[str, dict[str, Summary]] = {}
    for (size, target), mine in grouped.items():
        good = [r for r in mine if r.valid]
        used = good or mine
        out.setdefault(size, {})[target] = Summary(
            requests_per_s=statistics.median(r.requests_per_s for r in used),
            p50_ms=_median([r.p50_ms for r in used]),
            p99_ms=_median([r.p99_ms for r in used]),
            errors=sum(r.errors for r in mine),
            valid=bool(good),
        )
    return out


def _median(values: Sequence[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


RATIOS = (
    ("rproxy", "haproxy"),
    ("rproxy", "nginx"),
    ("rproxy", "twisted"),
    ("rproxy", "direct"),
    ("haproxy", "direct"),
    ("nginx", "direct"),
    ("twisted", "direct"),
    ("rproxy-cache", "rproxy"),
    ("rproxy-cache", "nginx-cache"),
    ("nginx-cache", "nginx"),
    ("rproxy-rules", "rproxy"),
    ("rproxy-limit", "rproxy"),
    ("rproxy-limit-quiet", "rproxy"),
    ("rproxy-traffic", "rproxy"),
)


def ratios(summary: dict[str, Summary]) -> dict[str, float]:
    """req/s ratios of the medians, between targets with valid runs only."""
    return {
        f"{a}/{b}": summary[a].requests_per_s / summary[b].requests_per_s
        for a, b in RATIOS
        if a in summary
        and b in summary
        and summary[a].valid
        and summary[b].valid
        and summary[b].requests_per_s > 0
    }


def goals(size: str, summary: dict[str, Summary]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for rproxy on body C{size}, where measured."""
    rproxy = summary.get("rproxy")
    if rproxy is None or not rproxy.valid:
        return []
    checks = []
    found = ratios(summary)
    if "rproxy/haproxy" in found and size in GOAL_VS_HAPROXY:
        wanted = GOAL_VS_HAPROXY[size]
        value = found["rproxy/haproxy"]
        checks.append((f"rproxy/haproxy >= {wanted}", f"{value:.3f}", value >= wanted))
    if rproxy.p99_ms is not None:
        checks.append(
            (
                f"rproxy p99 < {GOAL_P99_MS:g} ms",
                f"{rproxy.p99_ms:.2f} ms",
                rproxy.p99_ms < GOAL_P99_MS,
            )
        )
    return checks


def _fmt(value: float | int | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def table(
    runs: list[Run],
    failures: list[Failure],
    plan: Plan,
    sizes: Sequence[str],
    targets: Sequence[str],
    pinned: bool,
) -> str:
    """The results as plain text: one table per body, then the ratios."""
    summary = summarize(runs)
    lines = [
        f"HTTP/1.1 GET over {HOST}: wrk -t{plan.threads} -c{plan.connections}, "
        f"{plan.seconds}s per run after a {plan.warmup}s warm-up; "
        "nginx backend (1 worker)",
        f"proxy pinned to CPU {plan.proxy_cpu}, wrk + backend to CPU {plan.load_cpu}"
        if pinned
        else "not pinned (fewer than two usable CPUs)",
    ]
    for size in sizes:
        mine = summary.get(size, {})
        path, length = SIZES[size]
        lines += [
            "",
            f"{size}: GET {path} ({length} B body)",
            f"{'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
            f"{'proxy':>6} {'proxy':>6} {'load':>5} {'RSS MiB':>8} {'peak':>5}  "
            "runs req/s",
            f"{'':<8} {'median':>8} {'':>7} {'':>7} {'':>6} "
            f"{'CPU%':>6} {'us/req':>6} {'CPU%':>5} {'idle':>8}",
        ]
        for target in targets:
            theirs = [r for r in runs if r.target == target and r.size == size]
            idle = _median([r.proxy_idle_rss_kib for r in theirs])
            failed = [f for f in failures if f.target == target and f.size == size]
            if not theirs:
                if failed:
                    first = failed[0].error.splitlines()[:2]
                    lines.append(f"{target:<8} FAILED: {first[0]}")
                    lines += [f"{'':<8} {line.strip()}" for line in first[1:]]
                elif any(f.target == target and f.startup for f in failures):
                    lines.append(f"{target:<8} FAILED: not run, did not start above")
                continue
            row = mine[target]
            peak = [r.proxy_peak_rss_kib for r in theirs if r.proxy_peak_rss_kib]
            flag = "" if row.valid else "  INVALID (every run)"
            lines.append(
                f"{target:<8} {row.requests_per_s:>8.0f} "
                f"{_fmt(row.p50_ms, '.2f'):>7} {_fmt(row.p99_ms, '.2f'):>7} "
                f"{row.errors:>6} "
                f"{_fmt(_median([r.proxy_cpu_percent for r in theirs]), '.0f'):>6} "
                f"{_fmt(_median([r.proxy_cpu_us for r in theirs]), '.1f'):>6} "
                f"{_fmt(_median([r.load_cpu_percent for r in theirs]), '.0f'):>5} "
                f"{_fmt(idle, '.0f', 1024):>8} "
                f"{_fmt(max(peak) if peak else None, '.0f', 1024):>5}  "
                + ", ".join(
                    f"{r.requests_per_s:.0f}" + ("" if r.valid else "*") for r in theirs
                )
                + flag
            )
            if failed:
                lines.append(f"{'':<8} and {len(failed)} failed run(s)")
        found = ratios(mine)
        if found:
            lines += ["", f"{'req/s ratio of medians':<24} {'value':>6}"]
            lines += [f"{name:<24} {value:>6.3f}" for name, value in found.items()]
        checks = goals(size, mine)
        if checks:
            lines += ["", f"{'goal':<24} {'measured':>9}"]
            lines += [
                f"{goal:<24} {value:>9}  {'met' if met else 'NOT MET'}"
                for goal, value, met in checks
            ]
    if any(not r.valid for r in runs):
        lines += [
            "",
            "* invalid run, left out of the medians: wrk saw errors, or stalled "
            "(fewer than",
            "  1 response per connection per second: connections hung; wrk "
            "does not count",
            "  a request that never completes)",
        ]
    return "\n".join(lines)


def failure_report(failures: list[Failure]) -> str:
    """Each failure once per target and first line, with its log excerpt."""
    groups: dict[tuple[str, str], list[Failure]] = {}
    for failure in failures:
        first = failure.error.splitlines()[0] if failure.error else ""
        # Ports differ between runs; the message up to them does not.
        groups.setdefault((failure.target, first.split(" on ")[0]), []).append(failure)
    lines = []
    for same in groups.values():
        failure = same[0]
        where = f"{failure.size}, round {failure.round + 1}"
        if failure.round < 0:
            where = f"{failure.size}, profiled run"
        more = f" (and {len(same) - 1} more run(s) alike)" if len(same) > 1 else ""
        lines.append(f"{failure.target} failed ({where}){more}: {failure.error}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    return tcp_environment(
        {
            "nginx": ["nginx", "-v"],
            "haproxy": ["haproxy", "-v"],
            "wrk": ["wrk", "-v"],
        }
    )


# Main ---------------------------------------------------------------------


def preflight(targets: Sequence[str], pin: bool, profile: bool) -> list[str]:
    """Problems that stop the benchmark before it starts anything."""
    needed = ["wrk", "nginx"]
    if "haproxy" in targets:
        needed.append("haproxy")
    if pin:
        needed.append("taskset")
    return tool_problems(needed, INSTALL, targets, profile)


def _list(value: str, known: Sequence[str], what: str, parser: Any) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = set(items) - set(known)
    if unknown:
        parser.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    if not items:
        parser.error(f"no {what} given")
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Loopback HTTP: direct, rproxy, HAProxy, nginx, Twisted proxy.",
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="wrk -d: measured seconds per run"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of wrk before each run (0: none)"
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument(
        "--timeout",
        type=int,
        default=2,
        help="wrk --timeout (s): a slower response counts as an error",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per target and body (0: profile only)",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(SIZES),
        help=f"comma-separated subset of {','.join(SIZES)}",
    )
    add_common_arguments(
        parser,
        TARGETS,
        load_cpu_help="CPU for wrk and the backend",
        results="http_bench",
        logs="http-logs",
        profile_help="add one rproxy run per body under py-spy record; "
        "save in bench/results/",
    )
    args = parser.parse_args(argv)
    args.targets = _list(args.targets, TARGETS, "targets", parser)
    args.sizes = _list(args.sizes, tuple(SIZES), "sizes", parser)
    if (
        args.seconds < 1
        or args.connections < 1
        or args.threads < 1
        or args.timeout < 1
        or args.repeat < 0
        or args.warmup < 0
    ):
        parser.error(
            "--seconds, --connections, --threads and --timeout must be >= 1, "
            "--repeat and --warmup >= 0"
        )
    if args.connections < args.threads:
        parser.error("wrk needs --connections >= --threads")
    if args.repeat == 0 and not args.profile:
        parser.error("--repeat 0 only makes sense with --profile")
    return args


def _progress(label: str, run: Run) -> str:
    problems = []
    if run.errors:
        problems.append(f"{run.errors} error(s)")
    if run.stalled:
        problems.append(f"stalled: only {run.requests} responses")
    return (
        f"{label} {run.size:<5} {run.target:<8} {run.requests_per_s:>8.0f} req/s  "
        f"p50 {_fmt(run.p50_ms, '.2f')} ms  p99 {_fmt(run.p99_ms, '.2f')} ms  "
        f"proxy CPU {_fmt(run.proxy_cpu_percent, '.0f')}%"
        + ("" if run.valid else "  INVALID: " + ", ".join(problems or ["no data"]))
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin = setup_checks(args, preflight)
    if pin is None:
        return 2

    ports = free_ports(1 + len(PROXIES))
    plan = Plan(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        timeout=args.timeout,
        proxy_cpu=args.proxy_cpu,
        load_cpu=args.load_cpu,
        backend_port=ports[0],
        proxy_ports=dict(zip(PROXIES, ports[1:], strict=True)),
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profiles: dict[str, ProfileRequest] = {}
    if args.profile:
        suffix = PROFILE_SUFFIX
        RESULTS.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            profiles[size] = ProfileRequest(
                RESULTS
                / f"profile-http-rproxy-{size}-{stamp}.{suffix[args.profile_format]}",
                args.profile_format,
                args.profile_native,
                args.profile_rate,
            )

    signal.signal(signal.SIGTERM, terminate)
    runs: list[Run] = []
    failures: list[Failure] = []
    profiled: dict[str, Run] = {}
    broken: set[str] = set()  # targets that never started: not tried again
    with contextlib.ExitStack() as cleanup:
        if args.keep_logs:
            workdir = RESULTS / f"http-logs-{stamp}"
            workdir.mkdir(parents=True)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="rproxy-http-bench-")
            workdir = Path(cleanup.enter_context(tmp))
        procs = Processes(workdir, pin, args.verbose)

        def attempt(
            target: str,
            size: str,
            round_: int,
            label: str,
            profile: ProfileRequest | None = None,
        ) -> Run | None:
            if target in broken:
                return None
            try:
                run = measure(procs, plan, target, size, round_, profile)
            except TargetError as error:
                failures.append(
                    Failure(target, size, round_, str(error), error.startup)
                )
                if error.startup:
                    broken.add(target)
                print(f"{label} {size:<5} {target:<8} FAILED: {error}", file=sys.stderr)
                return None
            print(_progress(label, run), file=sys.stderr, flush=True)
            return run

        try:
            for round_ in range(args.repeat):
                shift = round_ % len(args.targets)
                for size in args.sizes:
                    for target in args.targets[shift:] + args.targets[:shift]:
                        label = f"round {round_ + 1}/{args.repeat}"
                        run = attempt(target, size, round_, label)
                        if run is not None:
                            runs.append(run)
            for size, request in profiles.items():
                run = attempt("rproxy", size, -1, "profiled", request)
                if run is not None:
                    profiled[size] = run
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
            left = procs.still_running()
            if left:
                print(f"warning: still running: {', '.join(left)}", file=sys.stderr)

    if runs or failures:
        print()
        print(table(runs, failures, plan, args.sizes, args.targets, pin))
    if failures:
        print()
        print(failure_report(failures))
    for size, request in profiles.items():
        if not request.output.exists():
            continue
        print(f"\nrproxy profile, {size}: {request.output}")
        if request.format == "speedscope":
            print("(open it at https://www.speedscope.app or with `speedscope`)")
            request.summary = summarize_speedscope(request.output, 15, sys.stdout)

    if not args.no_json:
        path = args.json or RESULTS / f"http_bench-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = summarize(runs)
        path.write_text(
            json.dumps(
                {
                    "plan": asdict(plan),
                    "pinned": pin,
                    "sizes": {s: SIZES[s][1] for s in args.sizes},
                    "environment": environment(),
                    "median": {
                        size: {t: asdict(s) for t, s in mine.items()}
                        for size, mine in summary.items()
                    },
                    "ratios": {size: ratios(mine) for size, mine in summary.items()},
                    "goals": {
                        size: [
                            {"goal": g, "measured": v, "met": m}
                            for g, v, m in goals(size, mine)
                        ]
                        for size, mine in summary.items()
                    },
                    "runs": [asdict(r) for r in runs],
                    "failures": [asdict(f) for f in failures],
                    "profiles": {
                        size: {
                            "file": str(request.output),
                            "run": asdict(profiled[size]) if size in profiled else None,
                            "summary": request.summary,
                        }
                        for size, request in profiles.items()
                    },
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nresults: {path}")
    # Some target failed (rproxy before its HTTP listener exists): say so.
    return 3 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
