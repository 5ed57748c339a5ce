#!/usr/bin/env python3
"""HTTP/2 over TLS on loopback: rproxy against nginx and HAProxy, with h2load.

One run starts one nginx backend (HTTP/1.1, one worker: ``/small`` is a
6-byte ``return``, ``/64k`` a 65536-byte file) and, one after another, three
TLS-terminating proxies in front of it, each pinned alone to CPU 1 while
h2load and the backend share CPU 0:

- ``rproxy``: ``twistd -n rproxy``, one ``protocol = "http"`` listener with
  ``[listeners.tls]`` (HTTP/2 by ALPN, the default), health checks off;
- ``nginx``: nginx ``listen ... ssl http2``, one worker, ``keepalive 32`` to
  the backend over HTTP/1.1;
- ``haproxy``: HAProxy ``bind ... ssl alpn h2,http/1.1``, ``nbthread 1``,
  ``http-reuse always``;
- ``rproxy-h1``: the same rproxy, loaded over HTTP/1.1 (``h2load --h1``) with
  as many connections as the HTTP/2 rows have streams in flight.

Each of the four loads (1 connection x 100 streams, 50 connections x 10
streams; small and 64 KiB bodies) runs for ``--seconds`` after a one-second
warm-up; the table gives req/s and the p99 latency (from h2load's per-request
log) and the failed requests.  Bounded: every h2load run has a timeout.

    python bench/h2_bench.py --seconds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_bench import _nginx_common, backend_argv, nginx_argv
from tcp_throughput import (
    HOST,
    TWISTD,
    BenchError,
    Processes,
    free_ports,
    twistd_env,
    wait_listening,
)

#: (name, h2load connections, streams per connection)
LOADS = (("1x100", 1, 100), ("50x10", 50, 10))
BODIES = ("small", "64k")
TARGETS = ("rproxy", "nginx", "haproxy", "rproxy-h1")


def certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for localhost: cert, key, and both in one."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-days", "1", "-subj", "/CN=localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    both = workdir / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, both


def rproxy_argv(
    workdir: Path, port: int, backend: int, cert: Path, key: Path
) -> list[str]:
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
certificates = [{{ cert = "{cert}", key = "{key}" }}]
"""
    )
    return [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)]


def nginx_h2_argv(
    workdir: Path, port: int, backend: int, cert: Path, key: Path
) -> list[str]:
    config = (
        _nginx_common(workdir, "h2proxy")
        + f"""\
    upstream backend {{
        server {HOST}:{backend};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return nginx_argv(workdir, "h2proxy", config)


def haproxy_h2_argv(workdir: Path, port: int, backend: int, both: Path) -> list[str]:
    config = workdir / "haproxy-h2.cfg"
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
    bind {HOST}:{port} ssl crt {both} alpn h2,http/1.1
    server web {HOST}:{backend}
"""
    )
    return ["haproxy", "-db", "-f", str(config)]


def h2load(
    workdir: Path,
    port: int,
    body: str,
    clients: int,
    streams: int,
    seconds: float,
    h1: bool,
    pin: bool,
) -> tuple[float, float | None, int]:
    """One h2load run: (req/s, p99 in ms, failed requests)."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    argv = [
        "h2load", "-t", "1", "-c", str(clients), "-m", str(1 if h1 else streams),
        "--warm-up-time", "1", "-D", str(int(seconds)), "--log-file", str(log),
        f"https://localhost:{port}/{body}",
    ]  # fmt: skip
    if h1:
        argv[1:1] = ["--h1"]
    if pin:
        argv = ["taskset", "-c", "0", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    rate = failed = None
    for line in out.splitlines():
        if line.startswith("finished in"):
            rate = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            counts = dict(
                reversed(part.split()) for part in line.split(":", 1)[1].split(",")
            )
            failed = int(counts["failed"]) + int(counts["errored"])
    if rate is None or failed is None:
        raise BenchError(f"h2load gave no result:\n{out}\n{done.stderr}")
    times = sorted(
        int(fields[2]) / 1000
        for fields in (row.split() for row in log.read_text().splitlines())
        if len(fields) >= 3
    )
    p99 = statistics.quantiles(times, n=100)[98] if len(times) >= 100 else None
    return rate, p99, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    tools = ("h2load", "nginx", "haproxy", "openssl")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install nghttp2-client)")
    pin = not args.no_pin
    targets = args.targets.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="rproxy-h2bench-"))
    procs = Processes(workdir, pin, verbose=False)
    rows: list[tuple[str, str, str, float, float | None, int]] = []
    try:
        cert, key, both = certificate(workdir)
        backend_port, proxy_port = free_ports(2)
        backend = procs.start("backend", backend_argv(workdir, backend_port), 0)
        wait_listening(backend, backend_port)
        for target in targets:
            kind = target.removesuffix("-h1")
            if kind == "rproxy":
                argv = rproxy_argv(workdir, proxy_port, backend_port, cert, key)
            elif kind == "nginx":
                argv = nginx_h2_argv(workdir, proxy_port, backend_port, cert, key)
            else:
                argv = haproxy_h2_argv(workdir, proxy_port, backend_port, both)
            env = twistd_env() if kind == "rproxy" else None
            proxy = procs.start(target, argv, 1, env)
            wait_listening(proxy, proxy_port)
            try:
                for body in BODIES:
                    for name, clients, streams in LOADS:
                        h1 = target.endswith("-h1")
                        rate, p99, failed = h2load(
                            workdir, proxy_port, body,
                            clients * streams if h1 else clients, streams,
                            args.seconds, h1, pin,
                        )  # fmt: skip
                        rows.append((target, body, name, rate, p99, failed))
                        print(
                            f"{target:10} {body:6} {name:6} {rate:10.0f} req/s  "
                            f"p99 {p99 or 0:8.2f} ms  failed {failed}",
                            flush=True,
                        )
            finally:
                procs.stop(proxy)
    finally:
        procs.stop_all()
    print()
    print("| target | body | load | req/s | p99 (ms) | failed |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for target, body, name, rate, p99, failed in rows:
        p99_text = f"{p99:.1f}" if p99 is not None else "-"
        print(f"| {target} | {body} | {name} | {rate:.0f} | {p99_text} | {failed} |")


if __name__ == "__main__":
    main()
