#!/usr/bin/env python3
"""Response compression: the codings' levels, the longest single coding
call, and MB/s of a 1 MiB JSON body through rproxy's Compress filter next to
nginx ``gzip on; gzip_comp_level 6``, in one run.

Three parts, all on data the script makes (deterministic):

- ``levels``: for gzip, br and zstd at several levels, the ratio and MB/s of
  coding a 1 MiB JSON body and a ~100 KiB HTML page fed in 64 KiB pieces,
  as the filter feeds them (this process, pinned to ``--proxy-cpu``);
- ``slices``: the longest single call coding one 64 KiB slice of the JSON,
  per coding at the filter's default level (what one reactor turn costs);
- ``proxy``: one client (this process, on ``--load-cpu``) GETting the JSON
  body over one kept-alive connection, with ``Accept-Encoding`` set to one
  coding, through rproxy (an HTTP listener whose route carries ``Compress()``
  with its defaults, run by this Python, pinned alone to ``--proxy-cpu``)
  and through nginx (one worker, ``gzip on; gzip_comp_level 6``, pinned to
  the same CPU), both in front of the same nginx backend serving the file
  (on ``--load-cpu``).  Debian's nginx has no brotli module: nginx is
  measured for identity and gzip only (and with ``proxy_max_temp_file_size
  0``, so that it streams the body as rproxy does instead of spooling it to
  a file).  MB/s counts the decoded body; ``mb_cpu_s`` is MB per CPU-second
  of the proxy, the figure that a loaded machine disturbs least.

Every loop is bounded: each proxy row runs for ``--seconds`` or
``--requests`` requests, whichever ends first, after a short warm-up, and
the rows are measured ``--repeat`` times in interleaved rounds (both proxies
run throughout, idle when not measured), the median reported; every process
is stopped at the end.  Linux only (taskset, /proc).

    python bench/compress_bench.py                  # about two minutes
    python bench/compress_bench.py --seconds 3 --parts proxy
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import brotli
import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rproxy.http._encoders import new_encoder  # noqa: E402
from rproxy.http.filters.compress import DEFAULT_LEVELS, SLICE  # noqa: E402

CODINGS = ("identity", "gzip", "br", "zstd")
LEVELS = {"gzip": (1, 4, 5, 6, 9), "br": (3, 4, 5, 6, 7), "zstd": (1, 3, 6, 9, 12)}
DECODE: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": lambda data: zlib.decompress(data, 31),
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}

BACKEND_CONF = """
daemon off; master_process off; worker_processes 1;
pid {root}/backend.pid; error_log {root}/backend-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off; sendfile on; keepalive_requests 1000000;
    types {{ application/json json; }}
    server {{ listen 127.0.0.1:{port}; root {root}/www; }}
}}
"""

FRONT_CONF = """
daemon off; master_process off; worker_processes 1;
pid {root}/front.pid; error_log {root}/front-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off; keepalive_requests 1000000;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        gzip on; gzip_comp_level 6; gzip_min_length 512; gzip_vary on;
        gzip_types application/json;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream as rproxy does: no spooling of the body to a file.
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""

RPROXY = """
import sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
from rproxy.backends import Backend, Pool, Registry
from rproxy.http.filters.compress import Compress
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
port, backend = int(sys.argv[1]), int(sys.argv[2])
pool = Pool("web", [Backend("127.0.0.1", backend)])
router = Router([Route(pool="web", filters=[Compress()])])
factory = HTTPProxyFactory(
    Registry([pool]), reactor, HTTPSettings(listener="front", router=router)
)
reactor.listenTCP(port, factory, interface="127.0.0.1")
reactor.run()
"""


# Data -----------------------------------------------------------------------


def _words(rng: random.Random, vocabulary: int = 3000) -> Callable[[], str]:
    """
    Words drawn from a made-up vocabulary with the skew of real text (the
    word of rank r is drawn in proportion to 1/r).
    """
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zo", "pe", "an"]
    syllables += ["el", "or", "us", "in", "et", "da", "fu", "gra", "sh", "th"]
    made = (
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
        for _ in range(vocabulary * 2)
    )
    words = list(dict.fromkeys(made))[:vocabulary]  # in order: no hash order
    rng.shuffle(words)
    weights = [1 / rank for rank in range(1, len(words) + 1)]
    pool: list[str] = []

    def word() -> str:
        if not pool:
            pool.extend(rng.choices(words, weights, k=4096))
        return pool.pop()

    return word


def api_json(size: int = 1 << 20, seed: int = 1) -> bytes:
    """
    C{size} bytes of JSON shaped like an API's list of records.
    """
    rng = random.Random(seed)
    word = _words(rng)
    records, total = [], 0
    while total < size:
        record = {
            "id": len(records),
            "uuid": f"{rng.getrandbits(128):032x}",
            "name": f"{word().title()} {word().title()}",
            "email": f"{word()}@{word()}.example",
            "active": rng.random() < 0.7,
            "score": round(rng.random() * 1000, 3),
            "tags": [word() for _ in range(rng.randint(0, 4))],
            "created": f"2024-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}"
                       f"T{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:00Z",
            "address": {"street": f"{rng.randint(1, 999)} {word().title()} St",
                        "city": word().title(), "zip": f"{rng.randint(0, 99999):05}"},
        }  # fmt: skip
        text = json.dumps(record)
        records.append(text)
        total += len(text) + 1
    return ("[" + ",".join(records) + "]").encode()[:size]


def html_page(size: int = 100 << 10, seed: int = 2) -> bytes:
    """
    About C{size} bytes of an HTML page: a header, navigation, paragraphs of
    prose with links and code, a table.
    """
    rng = random.Random(seed)
    word = _words(rng)

    def sentence() -> str:
        words = [word() for _ in range(rng.randint(6, 16))]
        if rng.random() < 0.3:
            words[rng.randrange(len(words))] = f"<code>{word()}_{word()}()</code>"
        if rng.random() < 0.3:
            target = rng.randrange(len(words))
            words[target] = f'<a href="/docs/{word()}.html">{words[target]}</a>'
        return " ".join(words).capitalize() + "."

    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             "<title>Reference</title>", '<link rel="stylesheet" href="/s.css">',
             '</head><body><nav class="sidebar"><ul>']  # fmt: skip
    parts += [f'<li><a href="/docs/{word()}.html">{word()}</a></li>' for _ in range(60)]
    parts.append('</ul></nav><main class="content">')
    while sum(map(len, parts)) < size:
        parts.append(f'<h2 id="{word()}">{word().title()} {word()}</h2>')
        for _ in range(rng.randint(2, 5)):
            parts.append("<p>" + " ".join(sentence() for _ in range(4)) + "</p>")
        if rng.random() < 0.3:
            rows = "".join(
                f"<tr><td>{word()}</td><td>{rng.randint(0, 9999)}</td></tr>"
                for _ in range(8)
            )
            parts.append(f'<table class="data">{rows}</table>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts).encode()


def pieces(data: bytes, size: int = SLICE) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + size] for i in range(0, len(data), size)]


# In-process parts -------------------------------------------------------------


def code_all(coding: str, level: int, data: bytes) -> tuple[int, float, float]:
    """
    Code C{data} in slices as the filter does: (coded size, seconds, the
    longest single call in seconds).
    """
    clock = time.thread_time
    encoder = new_encoder(coding, level)
    size, longest = 0, 0.0
    began = clock()
    for piece in pieces(data):
        start = clock()
        size += len(encoder.compress(piece))
        longest = max(longest, clock() - start)
    start = clock()
    size += len(encoder.finish())
    end = clock()
    return size, end - began, max(longest, end - start)


def part_levels(samples: dict[str, bytes], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name, data in samples.items():
        for coding, levels in LEVELS.items():
            for level in levels:
                runs = [code_all(coding, level, data) for _ in range(rounds)]
                size = runs[0][0]
                seconds = min(run[1] for run in runs)
                rows.append({"sample": name, "bytes": len(data), "coding": coding,
                             "level": level, "ratio": len(data) / size,
                             "mb_s": len(data) / seconds / 1e6})  # fmt: skip
    return rows


def part_slices(data: bytes, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for coding, level in DEFAULT_LEVELS.items():
        calls: list[float] = []
        for _ in range(rounds):
            encoder = new_encoder(coding, level)
            for piece in pieces(data):
                start = time.thread_time()
                encoder.compress(piece)
                calls.append(time.thread_time() - start)
            start = time.thread_time()
            encoder.finish()
            calls.append(time.thread_time() - start)
        rows.append({"coding": coding, "level": level,
                     "median_ms": statistics.median(calls) * 1e3,
                     "max_ms": max(calls) * 1e3, "calls": len(calls)})  # fmt: skip
    return rows


# Processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def started(command: list[str], cpu: int, log: Path, port: int) -> Iterator[int]:
    """
    Run C{command} pinned to C{cpu} until the block ends; yield its pid once
    C{port} accepts.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), *command],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(port)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def fetch_loop(
    port: int, coding: str, expected: bytes, seconds: float, limit: int, warm: int
) -> dict[str, Any]:
    """
    GET the body over one connection for C{seconds} or C{limit} requests;
    the first response is decoded and checked.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept-Encoding": coding}

    def get() -> tuple[bytes, str | None]:
        conn.request("GET", "/data.json", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status} from port {port}")
        return body, response.getheader("Content-Encoding")

    try:
        body, got = get()
        if (got or "identity") != coding or DECODE[coding](body) != expected:
            raise SystemExit(f"port {port}: {coding} asked, {got} got, or bad body")
        for _ in range(warm):
            get()
        count, wire = 0, 0
        began = time.perf_counter()
        while count < limit and time.perf_counter() - began < seconds:
            wire += len(get()[0])
            count += 1
        elapsed = time.perf_counter() - began
    finally:
        conn.close()
    return {"requests": count, "seconds": elapsed, "req_s": count / elapsed,
            "mb_s": count * len(expected) / elapsed / 1e6,
            "wire_bytes": wire // max(count, 1)}  # fmt: skip


def part_proxy(args: argparse.Namespace, data: bytes) -> list[dict[str, Any]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    root = Path(tempfile.mkdtemp(prefix="rproxy-compress-bench-"))
    (root / "www").mkdir()
    (root / "www" / "data.json").write_bytes(data)
    backend, front, proxy = free_port(), free_port(), free_port()
    (root / "backend.conf").write_text(BACKEND_CONF.format(root=root, port=backend))
    (root / "front.conf").write_text(
        FRONT_CONF.format(root=root, port=front, backend=backend)
    )
    env_python = [sys.executable, "-c", RPROXY, str(proxy), str(backend)]
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        with ExitStack() as stack:
            stack.enter_context(
                started([nginx, "-p", str(root), "-c", str(root / "backend.conf")],
                        args.load_cpu, root / "backend.log", backend)
            )  # fmt: skip
            pid = stack.enter_context(
                started(env_python, args.proxy_cpu, root / "rproxy.log", proxy)
            )
            rows = [("rproxy", pid, proxy, coding) for coding in CODINGS]
            if os.path.exists(nginx) and not args.no_nginx:
                command = [nginx, "-p", str(root), "-c", str(root / "front.conf")]
                pid = stack.enter_context(
                    started(command, args.proxy_cpu, root / "front.log", front)
                )
                name = f"nginx {nginx_version(nginx)}"
                rows += [(name, pid, front, coding) for coding in ("identity", "gzip")]
            # Interleaved rounds: drift on a shared machine hits every row.
            for _ in range(args.repeat):
                for name, pid, port, coding in rows:
                    cpu = cpu_seconds(pid)
                    run = fetch_loop(port, coding, data, args.seconds,
                                     args.requests, args.warm)  # fmt: skip
                    used = (cpu_seconds(pid) - cpu) / run["seconds"]
                    run["proxy_cpu"] = used
                    run["mb_cpu_s"] = run["mb_s"] / used if used else 0.0
                    runs.setdefault((name, coding), []).append(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [
        {"proxy": name, "coding": coding,
         **{key: statistics.median(run[key] for run in found) for key in found[0]},
         "runs": found}
        for (name, coding), found in runs.items()
    ]  # fmt: skip


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().rpartition("/")[2] or "?"


# Report ---------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{one:.2f}" for one in os.getloadavg())


def table(rows: list[dict[str, Any]], *columns: tuple[str, str]) -> None:
    """
    Print C{rows}, one line each: the C{columns}, (key, format spec) pairs.
    """
    widths = [int(spec.split(".")[0].rstrip("%f")) for _, spec in columns]
    print(
        " ".join(
            f"{key:>{width}}" for (key, _), width in zip(columns, widths, strict=True)
        )
    )
    for row in rows:
        print(" ".join(format(row[key], spec) for key, spec in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="levels,slices,proxy")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="proxy rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--proxy-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--html", type=Path, help="an HTML file to use as the page")
    parser.add_argument("--json-out", type=Path, help="write the figures here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    data = api_json()
    page = args.html.read_bytes() if args.html else html_page()
    results: dict[str, Any] = {}
    in_process = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.proxy_cpu})
    print(f"load average before: {load()}")
    if "levels" in parts:
        results["levels"] = rows = part_levels(
            {"json": data, "html": page}, args.rounds
        )
        print("\n== levels: fed in 64 KiB pieces; MB per CPU-second, best of rounds")
        table(rows, ("sample", "6"), ("bytes", "8"), ("coding", "6"), ("level", "5"),
              ("ratio", "6.2f"), ("mb_s", "7.1f"))  # fmt: skip
    if "slices" in parts:
        results["slices"] = rows = part_slices(data, args.rounds * 3)
        print(f"\n== slices: CPU time of a call per {SLICE >> 10} KiB of JSON"
              " (and the end), default levels")  # fmt: skip
        table(rows, ("coding", "6"), ("level", "5"), ("median_ms", "9.2f"),
              ("max_ms", "6.2f"), ("calls", "5"))  # fmt: skip
    os.sched_setaffinity(0, {args.load_cpu} if "proxy" in parts else in_process)
    if "proxy" in parts:
        results["proxy"] = rows = part_proxy(args, data)
        print(f"\n== proxy: 1 MiB JSON, one client, one connection, median of"
              f" {args.repeat} interleaved runs of {args.seconds:g} s; MB/s of decoded"
              " body; mb_cpu_s: MB per proxy CPU-second")  # fmt: skip
        table(rows, ("proxy", "14"), ("coding", "8"), ("req_s", "7.1f"),
              ("mb_s", "7.1f"), ("wire_bytes", "10"), ("proxy_cpu", "9.0%"),
              ("mb_cpu_s", "8.1f"))  # fmt: skip
    print(f"load average after: {load()}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
