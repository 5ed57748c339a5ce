#!/usr/bin/env python3
"""``workers = 1`` against ``workers = 2`` in one run, with wrk on loopback.

One nginx backend (one worker, ``return 200 "hello\\n"``) and ``wrk`` (one
thread, 50 keep-alive connections) load ``twistd -n rproxy`` with one HTTP
listener over that backend, health checks off, first with ``workers = 1``,
then with ``workers = 2``, in each of two CPU layouts (this machine has two
cores, so neither layout gives the proxy cores of its own *and* leaves the
load generator alone):

- ``proxy-1cpu``: the proxy (supervisor and workers) pinned to CPU 1, wrk and
  nginx to CPU 0.  Two workers share one core: this shows what the
  supervisor and the shared socket cost, not scaling.
- ``proxy-2cpu``: the proxy on CPUs 0 and 1, wrk and nginx on CPU 0.  Two
  workers can each run on a core, but one of those cores also runs wrk and
  nginx.

For each run: req/s, wrk's p50/p99 latency and errors, the CPU seconds
each process of the proxy used during the measured run (so the share each
worker carried and what the supervisor spent are visible), and requests per
CPU-second of the whole proxy: what one core's worth of proxy serves, which
other load on the machine does not change the way it changes req/s.  Each run starts
a fresh backend and proxy, checks one GET, warms up, then measures.

    python bench/workers_bench.py --seconds 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcp_throughput import cpu_seconds, free_ports, listening_ports, twistd_env

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY = 20.0
LAYOUTS = {
    # name: (CPUs of the proxy, CPUs of wrk and nginx)
    "proxy-1cpu": ("1", "0"),
    "proxy-2cpu": ("0,1", "0"),
}


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + READY
    while time.monotonic() < end:
        if port in listening_ports():
            return
        if proc.poll() is not None:
            raise SystemExit(f"exited before listening:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}:\n{log.read_text()[-2000:]}")


def start_nginx(work: Path, port: int, cpus: str) -> subprocess.Popen[bytes]:
    conf = work / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
error_log {work}/nginx-error.log;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen {HOST}:{port};
        location / {{ return 200 "hello\\n"; }}
    }}
}}
"""
    )
    log = work / "nginx.log"
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, "nginx", "-c", str(conf), "-p", str(work)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_port(port, proc, log)
    return proc


def start_rproxy(
    work: Path, port: int, backend: int, workers: int, cpus: str
) -> tuple[subprocess.Popen[bytes], Path]:
    config = work / f"rproxy-{workers}.toml"
    config.write_text(
        f"""
workers = {workers}

[pools.web]
backends = ["{HOST}:{backend}"]
health = {{ check = "none" }}

[[listeners]]
name = "http"
protocol = "http"
listen = "tcp:{port}:interface={HOST}"
pool = "web"
"""
    )
    log = work / f"rproxy-{workers}.log"
    twistd = (
        "import sys; from twisted.scripts.twistd import run; "
        "sys.argv[0] = 'twistd'; run()"
    )
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            cpus,
            sys.executable,
            "-c",
            twistd,
            "-n",
            "--pidfile=",
            "rproxy",
            "--config",
            str(config),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=twistd_env(),
        cwd=work,
    )
    wait_port(port, proc, log)
    if workers > 1:
        end = time.monotonic() + READY
        while log.read_text().count("ready (pid") < workers:
            if time.monotonic() > end or proc.poll() is not None:
                raise SystemExit(f"workers not ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
    return proc, log


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def get(port: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200 or body != b"hello\n":
        raise SystemExit(f"bad answer through the proxy: {response.status} {body!r}")


def wrk(port: int, seconds: float, cpus: str, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            "taskset",
            "-c",
            cpus,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://{HOST}:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    out = done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk failed:\n{out}\n{done.stderr}")
    rps = float(found.group(1))

    def latency(p: str) -> float | None:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    errors = 0
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors,
    }


def one_run(
    work: Path, layout: str, workers: int, seconds: float, connections: int
) -> dict[str, Any]:
    proxy_cpus, load_cpus = LAYOUTS[layout]
    port, backend = free_ports(2)
    nginx = start_nginx(work, backend, load_cpus)
    proxy, _ = start_rproxy(work, port, backend, workers, proxy_cpus)
    try:
        get(port)
        wrk(port, 1, load_cpus, connections)  # warm-up
        pids = [proxy.pid, *children(proxy.pid)]
        before = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
        result = wrk(port, seconds, load_cpus, connections)
        used = {pid: (cpu_seconds(pid) or 0.0) - before[pid] for pid in pids}
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(30)
    proxy_cpu = sum(used.values())
    result.update(
        requests_per_cpu_second=round(result["rps"] * seconds / proxy_cpu)
        if proxy_cpu
        else None,
        layout=layout,
        workers=workers,
        supervisor_cpu_s=round(used[proxy.pid], 2) if workers > 1 else None,
        worker_cpu_s=[round(used[p], 2) for p in pids[1:]]
        if workers > 1
        else [round(used[proxy.pid], 2)],
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; the median is reported"
    )
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    missing = [t for t in ("wrk", "nginx", "taskset") if shutil.which(t) is None]
    if missing:
        print(
            f"missing: {', '.join(missing)} (apt-get install -y wrk nginx util-linux)"
        )
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs two CPUs to pin")
        return 2
    results = []
    layouts = args.layouts.split(",")
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
        for round in range(args.repeat):
            # Interleaved, so that drift on the machine hits every case.
            order = [(layout, w) for layout in layouts for w in (1, 2)]
            shift = round % len(order)
            for layout, workers in order[shift:] + order[:shift]:
                run = one_run(
                    Path(tmp), layout, workers, args.seconds, args.connections
                )
                results.append(run)
                print(
                    f"{layout:11} workers={workers}  {run['rps']:9.0f} req/s  "
                    f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  "
                    f"errors {run['errors']}  {run['requests_per_cpu_second']} "
                    f"req per proxy CPU-second  cpu s: supervisor "
                    f"{run['supervisor_cpu_s']}, workers {run['worker_cpu_s']}",
                    flush=True,
                )
    for layout in layouts:
        median = {
            w: statistics.median(
                r["rps"] for r in results if r["layout"] == layout and r["workers"] == w
            )
            for w in (1, 2)
        }
        print(
            f"{layout}: median {median[1]:.0f} vs {median[2]:.0f} req/s, "
            f"workers=2 / workers=1 = {median[2] / median[1]:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
