#!/usr/bin/env python3
"""TCP throughput on loopback: direct, through rproxy, HAProxy and portforward.

One run of this script measures iperf3 throughput on 127.0.0.1 to an iperf3
server directly and through three proxies, each proxy pinned alone to one CPU
while iperf3 (client and server) is pinned to another:

- ``direct``: iperf3 client to the iperf3 server, no proxy;
- ``rproxy``: ``twistd -n rproxy`` with one TCP listener over one backend;
- ``haproxy``: HAProxy ``mode tcp``, ``nbthread 1``, no logging;
- ``haproxy-splice``: the same with ``option splice-request`` and
  ``splice-response`` (always splice), HAProxy's own
  use of splice(2), the like-for-like peer of rproxy's splice path;
- ``portforward``: ``twistd -n portforward``, Twisted's plain splice.

Each target is measured ``--repeat`` times in interleaved order, every run
with freshly started processes; the median is reported with the proxy's CPU
use and peak RSS (VmHWM).  ``--profile`` adds one rproxy run under
``py-spy record`` and prints where its time went.  Linux only (reads /proc).

    python bench/tcp_throughput.py --seconds 5 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TARGETS = ("direct", "rproxy", "haproxy", "haproxy-splice", "portforward")
PROXIES = TARGETS[1:]
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0  # seconds a started process gets to listen
STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL
INSTALL = {
    "iperf3": "apt-get install -y iperf3",
    "haproxy": "apt-get install -y haproxy",
    "taskset": "apt-get install -y util-linux",
    "py-spy": "pip install py-spy",
}
# twistd from this interpreter, without going through a pyenv/venv shim, so
# the pid taskset and py-spy see is the Python process itself.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
]


class BenchError(Exception):
    """A run could not be measured; the message says why."""


# Processes ----------------------------------------------------------------


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Processes:
    """
    Every process the benchmark starts.  Each is ended by its own pid:
    SIGTERM, then SIGKILL after L{STOP_GRACE} seconds.
    """

    def __init__(self, workdir: Path, pin: bool, verbose: bool):
        self.workdir = workdir
        self.pin = pin
        self.verbose = verbose
        self.started: list[Started] = []
        self._count = 0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        env: dict[str, str] | None = None,
    ) -> Started:
        if self.pin and cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self._count += 1
        log = self.workdir / f"{self._count:03d}-{name}.log"
        if self.verbose:
            print("  $ " + " ".join(argv), file=sys.stderr)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
            )
        started = Started(name, proc, log)
        self.started.append(started)
        return started

    def stop(self, started: Started, sig: int = signal.SIGTERM) -> None:
        proc = started.proc
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)

    def stop_all(self) -> None:
        for started in reversed(self.started):
            try:
                self.stop(started)
            except Exception as error:  # keep stopping the others
                print(f"could not stop {started.name}: {error}", file=sys.stderr)

    def still_running(self) -> list[str]:
        return [
            f"{s.name} (pid {s.proc.pid})"
            for s in self.started
            if s.proc.poll() is None
        ]


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all different (held open together)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state, read from /proc (no connection made)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(started: Started, port: int) -> None:
    """
    Poll, bounded by L{READY_TIMEOUT}, until C{port} listens.  Connecting
    to find out would open a stray connection to the iperf3 server, so the
    kernel's socket table is read instead.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if port in listening_ports():
            return
        code = started.proc.poll()
        if code is not None:
            raise BenchError(
                f"{started.name} exited with status {code} before listening "
                f"on {port}:\n{tail(started.log)}"
            )
        time.sleep(0.02)
    raise BenchError(
        f"{started.name} did not listen on {port} within {READY_TIMEOUT:.0f}s:"
        f"\n{tail(started.log)}"
    )


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of C{pid} so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, field: str) -> int | None:
    """A memory figure of C{pid} from /proc/PID/status (VmRSS, VmHWM), in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


# Proxies ------------------------------------------------------------------


def twistd_env() -> dict[str, str]:
    """
    The environment for twistd: the repository on PYTHONPATH.  With a
    PEP 660 editable install (``pip install -e``), the repository is not on
    sys.path, so Twisted's plugin discovery never sees
    ``twisted/plugins/rproxy_plugin.py``; putting it there fixes that.
    """
    env = dict(os.environ)
    parts = [str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def rproxy_argv(workdir: Path, port: int, backend: int) -> list[str]:
    config = workdir / "rproxy.toml"
    config.write_text(
        f"""\
[pools.sink]
balance = "round_robin"
backends = ["{HOST}:{backend}"]

[pools.sink.health]
check = "none"

[[listeners]]
name = "bench"
protocol = "tcp"
listen = "tcp:{port}:interface={HOST}"
pool = "sink"
"""
    )
    return [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)]


def haproxy_argv(
    workdir: Path, port: int, backend: int, options: str = ""
) -> list[str]:
    config = workdir / "haproxy.cfg"
    config.write_text(
        f"""\
global
    nbthread 1
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{options}
listen bench
    bind {HOST}:{port}
    server sink {HOST}:{backend}
"""
    )
    return ["haproxy", "-db", "-f", str(config)]


def portforward_argv(workdir: Path, port: int, backend: int) -> list[str]:
    return [
        *TWISTD,
        "-n",
        "--pidfile=",
        "portforward",
        "-p",
        f"tcp:{port}:interface={HOST}",
        "-h",
        HOST,
        "-d",
        str(backend),
    ]


def haproxy_splice_argv(workdir: Path, port: int, backend: int) -> list[str]:
    return haproxy_argv(
        workdir,
        port,
        backend,
        "    option splice-request\n    option splice-response\n",
    )


PROXY_ARGV = {
    "rproxy": rproxy_argv,
    "haproxy": haproxy_argv,
    "haproxy-splice": haproxy_splice_argv,
    "portforward": portforward_argv,
}


# One measurement ----------------------------------------------------------


@dataclass
class Run:
    target: str
    round: int
    gbits: float
    sent_gbits: float
    retransmits: int | None
    load_cpu_percent: float | None = None
    proxy_cpu_percent: float | None = None
    proxy_idle_rss_kib: int | None = None
    proxy_peak_rss_kib: int | None = None


@dataclass
class Plan:
    seconds: int
    omit: int
    streams: int
    reverse: bool
    proxy_cpu: int
    load_cpu: int
    backend_port: int
    proxy_ports: dict[str, int]


def iperf3_client(
    procs: Processes, plan: Plan, port: int, target: str, round_: int
) -> Run:
    """
    Run the iperf3 client to C{port}.  The run's C{load_cpu_percent} is the
    iperf3 client's plus the server's CPU use: near 100 means the load
    generator's CPU, not the proxy, was the limit.
    """
    argv = [
        "iperf3",
        "-c",
        HOST,
        "-p",
        str(port),
        "-t",
        str(plan.seconds),
        "-O",
        str(plan.omit),
        "-P",
        str(plan.streams),
        "--connect-timeout",
        "5000",
        "-J",
    ]
    if plan.reverse:
        argv.append("-R")
    client = procs.start("iperf3-client", argv, plan.load_cpu)
    try:
        client.proc.wait(plan.seconds + plan.omit + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"iperf3 client did not finish:\n{tail(client.log)}") from None
    finally:
        procs.stop(client)
    try:
        report = json.loads(client.log.read_text())
    except ValueError:
        raise BenchError(f"iperf3 client wrote no JSON:\n{tail(client.log)}") from None
    if "error" in report:
        raise BenchError(f"iperf3: {report['error']}")
    end = report["end"]
    cpu = end.get("cpu_utilization_percent", {})
    return Run(
        target,
        round_,
        gbits=end["sum_received"]["bits_per_second"] / 1e9,
        sent_gbits=end["sum_sent"]["bits_per_second"] / 1e9,
        retransmits=end["sum_sent"].get("retransmits"),
        load_cpu_percent=cpu.get("host_total", 0) + cpu.get("remote_total", 0),
    )


def measure(
    procs: Processes,
    plan: Plan,
    target: str,
    round_: int,
    profile: ProfileRequest | None = None,
) -> Run:
    """One iperf3 run to C{target}, with fresh server and proxy processes."""
    started: list[Started] = []
    try:
        server = procs.start(
            "iperf3-server",
            ["iperf3", "-s", "-1", "-B", HOST, "-p", str(plan.backend_port)],
            plan.load_cpu,
        )
        started.append(server)
        wait_listening(server, plan.backend_port)
        if target == "direct":
            return iperf3_client(procs, plan, plan.backend_port, target, round_)

        port = plan.proxy_ports[target]
        argv = PROXY_ARGV[target](procs.workdir, port, plan.backend_port)
        env = twistd_env() if argv[0] == sys.executable else None
        proxy = procs.start(target, argv, plan.proxy_cpu, env)
        started.append(proxy)
        wait_listening(proxy, port)
        pid = proxy.proc.pid
        idle_rss = memory_kib(pid, "VmRSS")
        if profile is not None:
            started.append(profile.attach(procs, pid, plan))
        cpu_before, clock_before = cpu_seconds(pid), time.monotonic()
        run = iperf3_client(procs, plan, port, target, round_)
        cpu_after, clock_after = cpu_seconds(pid), time.monotonic()
        if cpu_before is not None and cpu_after is not None:
            cpu_used = cpu_after - cpu_before
            run.proxy_cpu_percent = 100 * cpu_used / (clock_after - clock_before)
        if proxy.proc.poll() is not None:
            raise BenchError(f"{target} exited during the run:\n{tail(proxy.log)}")
        run.proxy_idle_rss_kib = idle_rss
        run.proxy_peak_rss_kib = memory_kib(pid, "VmHWM")
        return run
    finally:
        for each in reversed(started):
            # py-spy writes its profile when interrupted.
            sig = signal.SIGINT if each.name == "py-spy" else signal.SIGTERM
            procs.stop(each, sig)


# Profiling ----------------------------------------------------------------


@dataclass
class ProfileRequest:
    output: Path
    format: str
    native: bool
    rate: int

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
            # An upper bound: normally stopped (SIGINT) when iperf3 is done.
            "--duration",
            str(plan.seconds + plan.omit + 30),
            # Do not stop the proxy to sample it: keeps the load realistic.
            "--nonblocking",
        ]
        if self.native:
            argv.append("--native")
        spy = procs.start("py-spy", argv, plan.load_cpu)
        # py-spy says "Sampling process ..." once attached; wait (bounded).
        deadline = time.monotonic() + READY_TIMEOUT
        while b"Sampling process" not in spy.log.read_bytes():
            if spy.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"py-spy could not attach to {pid}:\n{tail(spy.log)}")
            time.sleep(0.02)
        return spy


def py_spy() -> str:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else "py-spy"


def _short(file: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarize_speedscope(path: Path, top: int, out: TextIO) -> dict[str, Any]:
    """
    Print the source lines with the most self time and the functions with
    the most total time (self + callees) in a py-spy speedscope file.
    """
    data = json.loads(path.read_text())

    def line_of(frame: dict[str, Any]) -> str:
        return f"{frame['name']} ({_short(frame.get('file', ''))}:{frame.get('line')})"

    def function_of(frame: dict[str, Any]) -> str:
        return f"{frame['name']} ({_short(frame.get('file', ''))})"

    frames = data["shared"]["frames"]
    lines = [line_of(f) for f in frames]
    functions = [function_of(f) for f in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    sampled = 0.0
    unit = "samples"
    for profile in data["profiles"]:
        unit = profile.get("unit", unit)
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            sampled += weight
            if stack:
                own[lines[stack[-1]]] += weight
            for function in {functions[i] for i in stack}:
                total[function] += weight
    summary: dict[str, Any] = {"sampled": sampled, "unit": unit}
    if not sampled:
        print("py-spy recorded no samples", file=out)
        return summary
    summary["self"] = own.most_common(top)
    # Frames under (nearly) every sample, the reactor loop and twistd's
    # start-up, say nothing about where the time goes: left out.
    summary["total"] = [(f, c) for f, c in total.most_common() if c < 0.9 * sampled]
    del summary["total"][top:]
    print(f"\nTop lines by self time (of {sampled:.2f} {unit} sampled):", file=out)
    for line, weight in summary["self"]:
        print(f"  {100 * weight / sampled:5.1f}%  {line}", file=out)
    print("\nTop functions by total time (self + callees), below 90%:", file=out)
    for function, weight in summary["total"]:
        print(f"  {100 * weight / sampled:5.1f}%  {function}", file=out)
    return summary


# Reporting ----------------------------------------------------------------


def medians(runs: list[Run]) -> dict[str, float]:
    by_target: dict[str, list[float]] = {}
    for run in runs:
        by_target.setdefault(run.target, []).append(run.gbits)
    return {t: statistics.median(v) for t, v in by_target.items()}


RATIOS = (
    ("rproxy", "haproxy"),
    ("rproxy", "haproxy-splice"),
    ("rproxy", "direct"),
    ("rproxy", "portforward"),
    ("haproxy", "direct"),
    ("portforward", "direct"),
)


def ratios(median: dict[str, float]) -> dict[str, float]:
    return {
        f"{a}/{b}": median[a] / median[b]
        for a, b in RATIOS
        if a in median and b in median and median[b] > 0
    }


def _median_of(values: Sequence[float | int | None], scale: float = 1.0) -> str:
    present = [v / scale for v in values if v is not None]
    return f"{statistics.median(present):.0f}" if present else "-"


def table(runs: list[Run], plan: Plan, pinned: bool) -> str:
    """
    The results as plain text: per target the median and spread of the
    runs, the proxy's and iperf3's CPU use and the proxy's memory.
    """
    median = medians(runs)
    head = (
        f"{'target':<12} {'Gbit/s':>7} {'min':>6} {'max':>6} "
        f"{'proxy':>6} {'iperf3':>6} {'RSS MiB':>8} {'peak':>5}  runs Gbit/s"
    )
    units = (
        f"{'':<12} {'median':>7} {'':>6} {'':>6} "
        f"{'CPU%':>6} {'CPU%':>6} {'idle':>8} {'':>5}"
    )
    lines = [
        f"TCP throughput over {HOST}: {plan.streams} stream(s), {plan.seconds}s "
        f"per run ({plan.omit}s warm-up omitted), "
        f"{'download (-R)' if plan.reverse else 'upload'}",
        f"proxy pinned to CPU {plan.proxy_cpu}, iperf3 client+server to CPU "
        f"{plan.load_cpu}"
        if pinned
        else "not pinned (fewer than two usable CPUs)",
        "",
        head,
        units.rstrip(),
    ]
    for target in TARGETS:
        mine = [r for r in runs if r.target == target]
        if not mine:
            continue
        speeds = [r.gbits for r in mine]
        idle = _median_of([r.proxy_idle_rss_kib for r in mine], 1024)
        peak = [r.proxy_peak_rss_kib for r in mine if r.proxy_peak_rss_kib]
        lines.append(
            f"{target:<12} {median[target]:>7.2f} {min(speeds):>6.2f} "
            f"{max(speeds):>6.2f} "
            f"{_median_of([r.proxy_cpu_percent for r in mine]):>6} "
            f"{_median_of([r.load_cpu_percent for r in mine]):>6} "
            f"{idle:>8} {f'{max(peak) / 1024:.0f}' if peak else '-':>5}  "
            + ", ".join(f"{s:.2f}" for s in speeds)
        )
    found = ratios(median)
    if found:
        lines += ["", f"{'ratio of medians':<24} {'value':>6}"]
        lines += [f"{name:<24} {value:>6.3f}" for name, value in found.items()]
    return "\n".join(lines)


def version_of(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "?"


def environment(tools: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """
    What the figures were measured on; C{tools} maps a name to the command
    printing its version (this script's own by default).
    """
    import twisted

    if tools is None:
        tools = {
            "haproxy": ["haproxy", "-v"],
            "iperf3": ["iperf3", "--version"],
        }

    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        **{name: version_of(command) for name, command in tools.items()},
        "kernel": platform.release(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "git": version_of(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
    }


# Main ---------------------------------------------------------------------


def preflight(targets: Sequence[str], pin: bool, profile: bool) -> list[str]:
    """Problems that stop the benchmark before it starts anything."""
    needed = ["iperf3"]
    if any(t.startswith("haproxy") for t in targets):
        needed.append("haproxy")
    if pin:
        needed.append("taskset")
    return tool_problems(needed, INSTALL, targets, profile)


def tool_problems(
    needed: Sequence[str],
    install: Mapping[str, str],
    targets: Sequence[str],
    profile: bool,
) -> list[str]:
    """
    What is missing of the C{needed} tools (with how to C{install} each),
    py-spy when profiling, and a loadable C{twistd rproxy} when it is
    measured or profiled.
    """
    problems = []
    for tool in needed:
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing: {install[tool]}")
    if profile and shutil.which(py_spy()) is None:
        problems.append(f"py-spy is missing: {install['py-spy']}")
    if "rproxy" in targets or profile:
        done = subprocess.run(
            [*TWISTD, "rproxy", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=twistd_env(),
            check=False,
        )
        if done.returncode != 0:
            problems.append(
                "`twistd rproxy` does not load; try `pip install -e "
                f"{REPO}`:\n" + (done.stderr or done.stdout).strip()[-2000:]
            )
    return problems


def add_common_arguments(
    parser: argparse.ArgumentParser,
    targets: Sequence[str],
    *,
    load_cpu_help: str,
    results: str,
    logs: str,
    profile_help: str,
) -> None:
    """
    The options both benchmarks take: which targets, CPU pinning, where
    results and logs go, profiling, verbosity.
    """
    parser.add_argument(
        "--targets",
        default=",".join(targets),
        help=f"comma-separated subset of {','.join(targets)}",
    )
    parser.add_argument("--proxy-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0, help=load_cpu_help)
    parser.add_argument(
        "--json",
        type=Path,
        help=f"write results here (default: bench/results/{results}-TIME.json)",
    )
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help=f"keep configs and process logs in bench/results/{logs}-TIME/",
    )
    parser.add_argument("--profile", action="store_true", help=profile_help)
    parser.add_argument(
        "--profile-format",
        choices=("speedscope", "flamegraph", "raw"),
        default="speedscope",
    )
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native (C frames)"
    )
    parser.add_argument(
        "--profile-rate", type=int, default=200, help="py-spy samples per second"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show commands")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Loopback TCP throughput: direct, rproxy, HAProxy, portforward.",
    )
    parser.add_argument("--seconds", type=int, default=10, help="iperf3 -t per run")
    parser.add_argument("--streams", type=int, default=1, help="iperf3 -P")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per target (0: profile only)"
    )
    parser.add_argument(
        "--omit", type=int, default=1, help="iperf3 -O: warm-up seconds not counted"
    )
    parser.add_argument(
        "--reverse", action="store_true", help="iperf3 -R: server sends"
    )
    add_common_arguments(
        parser,
        TARGETS,
        load_cpu_help="CPU for iperf3",
        results="tcp_throughput",
        logs="logs",
        profile_help="add one rproxy run under py-spy record; "
        "save it in bench/results/",
    )
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.seconds < 1 or args.streams < 1 or args.repeat < 0 or args.omit < 0:
        parser.error("--seconds and --streams must be >= 1, --repeat/--omit >= 0")
    if args.repeat == 0 and not args.profile:
        parser.error("--repeat 0 only makes sense with --profile")
    return args


#: py-spy output formats and the file suffix each is saved with.
PROFILE_SUFFIX = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}


def setup_checks(
    args: argparse.Namespace,
    preflight: Callable[[Sequence[str], bool, bool], list[str]],
) -> bool | None:
    """
    Whether the proxy and the load can be pinned to their two CPUs (warning
    if not), or None after printing what C{preflight} found missing.
    """
    usable = os.sched_getaffinity(0)
    pin = args.proxy_cpu != args.load_cpu and {args.proxy_cpu, args.load_cpu} <= usable
    if not pin:
        print(
            f"warning: CPUs {args.proxy_cpu} and {args.load_cpu} are not two "
            f"usable CPUs (have {sorted(usable)}); running unpinned",
            file=sys.stderr,
        )
    problems = preflight(args.targets, pin, args.profile)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return None
    return pin


def terminate(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that unwinds (so every started process is ended)."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin = setup_checks(args, preflight)
    if pin is None:
        return 2

    ports = free_ports(1 + len(PROXIES))
    plan = Plan(
        seconds=args.seconds,
        omit=args.omit,
        streams=args.streams,
        reverse=args.reverse,
        proxy_cpu=args.proxy_cpu,
        load_cpu=args.load_cpu,
        backend_port=ports[0],
        proxy_ports=dict(zip(PROXIES, ports[1:], strict=True)),
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profile = None
    if args.profile:
        suffix = PROFILE_SUFFIX
        RESULTS.mkdir(parents=True, exist_ok=True)
        profile = ProfileRequest(
            RESULTS / f"profile-rproxy-{stamp}.{suffix[args.profile_format]}",
            args.profile_format,
            args.profile_native,
            args.profile_rate,
        )

    signal.signal(signal.SIGTERM, terminate)
    runs: list[Run] = []
    profiled: Run | None = None
    profile_summary: dict[str, Any] | None = None
    with contextlib.ExitStack() as cleanup:
        if args.keep_logs:
            workdir = RESULTS / f"logs-{stamp}"
            workdir.mkdir(parents=True)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="rproxy-bench-")
            workdir = Path(cleanup.enter_context(tmp))
        procs = Processes(workdir, pin, args.verbose)
        try:
            for round_ in range(args.repeat):
                shift = round_ % len(args.targets)
                for target in args.targets[shift:] + args.targets[:shift]:
                    run = measure(procs, plan, target, round_)
                    runs.append(run)
                    print(
                        f"round {round_ + 1}/{args.repeat} {target:<12} "
                        f"{run.gbits:6.2f} Gbit/s",
                        file=sys.stderr,
                        flush=True,
                    )
            if profile is not None:
                profiled = measure(procs, plan, "rproxy", -1, profile)
                print(
                    f"profiled rproxy run: {profiled.gbits:.2f} Gbit/s, "
                    f"proxy CPU {profiled.proxy_cpu_percent or 0:.0f}%",
                    file=sys.stderr,
                )
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
            left = procs.still_running()
            if left:
                print(f"warning: still running: {', '.join(left)}", file=sys.stderr)

    if runs:
        print()
        print(table(runs, plan, pin))
    if profile is not None:
        print(f"\nrproxy profile: {profile.output}")
        if profile.format == "speedscope" and profile.output.exists():
            print("(open it at https://www.speedscope.app or with `speedscope`)")
            profile_summary = summarize_speedscope(profile.output, 15, sys.stdout)

    if not args.no_json:
        path = args.json or RESULTS / f"tcp_throughput-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        median = medians(runs)
        path.write_text(
            json.dumps(
                {
                    "plan": asdict(plan),
                    "pinned": pin,
                    "environment": environment(),
                    "median_gbits": median,
                    "ratios": ratios(median),
                    "runs": [asdict(r) for r in runs],
                    "profile": None
                    if profile is None
                    else {
                        "file": str(profile.output),
                        "run": asdict(profiled) if profiled else None,
                        "summary": profile_summary,
                    },
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
