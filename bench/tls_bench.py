#!/usr/bin/env python3
"""TLS termination on loopback: rproxy against HAProxy, and nginx direct.

Each target terminates TLS with the same ECDSA P-256 certificate (made with
trustme) in front of one plain nginx backend (one worker) serving a 6-byte
body; ``wrk`` loads it over https with 50 connections:

- ``keepalive``: requests over kept-alive TLS connections (req/s);
- ``handshake``: every request on a new connection (``Connection: close``),
  so req/s is full TLS handshakes per second (wrk resumes no sessions).

Targets: ``direct`` (the nginx backend's own TLS server block, no proxy),
``rproxy`` (``twistd -n rproxy``, an http listener with ``[listeners.tls]``)
and ``haproxy`` (``mode http``, ``nbthread 1``, ``bind ... ssl crt``).  The
proxy runs alone on CPU 0, wrk and the backend on CPU 1.  Each run starts a
fresh backend and proxy, checks one GET, warms up, then measures.

    python bench/tls_bench.py --seconds 5 --repeat 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import trustme
from http_bench import HOST, SMALL_BODY, backend_argv, parse_wrk, tree_cpu_seconds
from tcp_throughput import (
    TWISTD,
    BenchError,
    Processes,
    Started,
    free_ports,
    listening_ports,
    tail,
    terminate,
    twistd_env,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TARGETS = ("direct", "rproxy", "haproxy")
MODES = ("keepalive", "handshake")
SERVER_NAME = "bench.example"
READY_TIMEOUT = 20.0


@dataclass
class Run:
    target: str
    mode: str
    round: int
    requests_per_s: float
    p99_ms: float | None
    errors: int
    proxy_cpu_percent: float | None


def write_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """The CA, the certificate (with chain) and its key; and both in one."""
    ca = trustme.CA()
    leaf = ca.issue_cert(SERVER_NAME)
    cert = workdir / "cert.pem"
    key = workdir / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    (workdir / "combined.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    (workdir / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return workdir / "ca.pem", cert, key


def direct_argv(workdir: Path, port: int, backend: int) -> list[str]:
    """The backend nginx with a second, TLS, server block on C{port}."""
    argv = backend_argv(workdir, backend)
    config = Path(argv[argv.index("-c") + 1])
    text = config.read_text()
    tls_block = f"""\
    server {{
        listen {HOST}:{port} ssl backlog=4096;
        ssl_certificate {workdir / "cert.pem"};
        ssl_certificate_key {workdir / "key.pem"};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /small {{
            default_type text/plain;
            return 200 "hello\\n";
        }}
    }}
}}
"""
    config.write_text(text[: text.rstrip().rfind("}")] + tls_block)
    return argv


def rproxy_argv(workdir: Path, port: int, backend: int) -> list[str]:
    config = workdir / "rproxy.toml"
    config.write_text(
        f"""\
[pools.web]
backends = ["{HOST}:{backend}"]
health.check = "none"

[[listeners]]
name = "bench"
protocol = "http"
listen = "tcp:{port}:interface={HOST}:backlog=4096"
pool = "web"
[listeners.tls]
certificates = [{{ cert = "cert.pem", key = "key.pem" }}]
"""
    )
    return [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)]


def haproxy_argv(workdir: Path, port: int, backend: int) -> list[str]:
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""\
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

listen bench
    bind {HOST}:{port} ssl crt {workdir / "combined.pem"} alpn http/1.1
    server web {HOST}:{backend}
"""
    )
    return ["haproxy", "-db", "-f", str(config)]


PROXY_ARGV = {"rproxy": rproxy_argv, "haproxy": haproxy_argv}


def wait_ready(started: Started, port: int, ca: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while port not in listening_ports():
        if started.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{started.name} did not listen:\n{tail(started.log)}")
        time.sleep(0.02)
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    connection = http.client.HTTPSConnection(HOST, port, timeout=5, context=context)
    try:
        connection.request("GET", "/small", headers={"Host": SERVER_NAME})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise BenchError(f"{started.name}: test GET failed: {error!r}") from None
    finally:
        connection.close()
    if response.status != 200 or body != SMALL_BODY:
        raise BenchError(f"{started.name}: test GET gave {response.status} {body!r}")


def run_wrk(
    procs: Processes, port: int, mode: str, seconds: int, connections: int
) -> tuple[float, float | None, int]:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout=5s",
        "--latency",
        f"https://{HOST}:{port}/small",
    ]
    if mode == "handshake":
        argv[1:1] = ["-H", "Connection: close"]
    client = procs.start("wrk", argv, 1)
    try:
        code = client.proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish:\n{tail(client.log)}") from None
    finally:
        procs.stop(client)
    if code != 0:
        raise BenchError(f"wrk exited with {code}:\n{tail(client.log)}")
    result = parse_wrk(client.log.read_text(errors="replace"))
    errors = result.non_2xx + sum(result.socket_errors.values())
    return result.requests_per_s, result.p99_ms, errors


def measure(
    procs: Processes,
    ports: dict[str, int],
    target: str,
    mode: str,
    round_: int,
    args: argparse.Namespace,
) -> Run:
    ca = procs.workdir / "ca.pem"
    started: list[Started] = []
    try:
        backend_port = ports["backend"]
        if target == "direct":
            argv = direct_argv(procs.workdir, ports["direct"], backend_port)
            backend = procs.start("nginx-backend", argv, 1)
            started.append(backend)
            port, proxy = ports["direct"], None
            wait_ready(backend, port, ca)
        else:
            backend = procs.start(
                "nginx-backend", backend_argv(procs.workdir, backend_port), 1
            )
            started.append(backend)
            port = ports[target]
            env = twistd_env() if target == "rproxy" else None
            argv = PROXY_ARGV[target](procs.workdir, port, backend_port)
            proxy = procs.start(target, argv, 0, env)
            started.append(proxy)
            wait_ready(proxy, port, ca)
        run_wrk(procs, port, mode, args.warmup, args.connections)
        measured = proxy or backend
        before = tree_cpu_seconds(measured.proc.pid)
        clock = time.monotonic()
        rate, p99, errors = run_wrk(procs, port, mode, args.seconds, args.connections)
        after = tree_cpu_seconds(measured.proc.pid)
        wall = time.monotonic() - clock
        cpu = None
        if proxy is not None and before is not None and after is not None:
            cpu = 100 * (after - before) / wall
        return Run(target, mode, round_, rate, p99, errors, cpu)
    finally:
        for each in reversed(started):
            procs.stop(each)


def report(runs: list[Run]) -> str:
    lines = ["| mode | target | req/s (median) | p99 ms | errors | proxy CPU % |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    medians: dict[tuple[str, str], float] = {}
    for mode in MODES:
        for target in TARGETS:
            these = [r for r in runs if r.mode == mode and r.target == target]
            if not these:
                continue
            rate = statistics.median(r.requests_per_s for r in these)
            medians[mode, target] = rate
            p99s = [r.p99_ms for r in these if r.p99_ms is not None]
            cpus = [r.proxy_cpu_percent for r in these if r.proxy_cpu_percent]
            lines.append(
                f"| {mode} | {target} | {rate:.0f} | "
                f"{statistics.median(p99s):.2f} | "
                f"{sum(r.errors for r in these)} | "
                f"{statistics.median(cpus):.0f} |"
                if p99s and cpus
                else f"| {mode} | {target} | {rate:.0f} | - | "
                f"{sum(r.errors for r in these)} | - |"
            )
    lines.append("")
    for mode in MODES:
        ours = medians.get((mode, "rproxy"))
        for peer in ("haproxy", "direct"):
            theirs = medians.get((mode, peer))
            if ours and theirs:
                lines.append(f"{mode}: rproxy / {peer} = {ours / theirs:.2f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t in TARGETS]
    args.modes = [m for m in args.modes.split(",") if m in MODES]
    if not 0 < args.seconds <= 120 or not 0 < args.repeat <= 10:
        parser.error("--seconds must be 1-120 and --repeat 1-10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    missing = [t for t in ("wrk", "nginx", "haproxy", "taskset") if not _which(t)]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="rproxy-tls-bench-") as tmp:
        procs = Processes(Path(tmp), pin=True, verbose=False)
        write_certificate(procs.workdir)
        names = ["backend", "direct", "rproxy", "haproxy"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        try:
            for round_ in range(args.repeat):
                for mode in args.modes:
                    for target in args.targets:
                        run = measure(procs, ports, target, mode, round_, args)
                        runs.append(run)
                        print(
                            f"round {round_} {mode:9} {target:7} "
                            f"{run.requests_per_s:8.0f} req/s errors {run.errors}",
                            file=sys.stderr,
                        )
        finally:
            procs.stop_all()
    text = report(runs)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"tls-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "runs": [asdict(r) for r in runs]}, indent=2)
    )
    return 0


def _which(tool: str) -> bool:
    return shutil.which(tool) is not None or os.access(f"/usr/sbin/{tool}", os.X_OK)


if __name__ == "__main__":
    sys.exit(main())
