#!/usr/bin/env python3
"""The HTTP caching test suite (http-cache-tests) against one cache.

Starts the suite's origin server on 127.0.0.1 (``origin.mjs``), one cache in
front of it (``rproxy``, ``nginx``, ``varnish`` or ``haproxy``, each with
the config file of the same name in this directory; ``direct`` runs with no
cache), runs the suite's client against the cache (``suite.mjs``, bounded
by ``--timeout``) and prints how many required tests passed, how many
optimal ones passed, how many checks said yes, and every required test that
did not pass with the reason.  A test counts as passed as the suite's own
result pages count it: its result is a pass and so are those of the tests
it depends on.

    npm ci --prefix bench/cache_tests       # the suite, pinned, once
    cd bench/cache_tests
    python run.py --target nginx,varnish,haproxy --json /tmp/peers.json
    python run.py --target rproxy --expected expected_failures.toml
    python run.py --target nginx --keep freshness-max-age vary-match  # a few

The functions are what tests/integration/test_cache_conformance.py uses:
L{run_target}, L{load_expected} and L{compare}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS = ("rproxy", "nginx", "varnish", "haproxy", "direct")

#: what counts as passed, by test kind (the suite's "pass" and "yes").
PASSED = frozenset({"pass", "yes"})

#: the interpreter's twistd, whatever the PATH holds (as the tests run it).
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
]


class SuiteError(Exception):
    """The run could not be made: a program is missing or did not start."""


@dataclass(frozen=True)
class TestInfo:
    """One test definition: its kind is required, optimal or check."""

    id: str
    suite: str
    name: str
    kind: str
    depends_on: tuple[str, ...] = ()


@dataclass
class Summary:
    """What one run of the suite against one target gave."""

    target: str
    version: str
    suite_version: str
    seconds: float
    required_passed: int
    required_total: int
    optimal_passed: int
    optimal_total: int
    checks_yes: int
    checks_total: int
    #: the required tests run, by id.
    required: list[str] = field(default_factory=list)
    #: required test id -> (outcome, detail), for each one not passed.
    required_failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: suite id -> [required passed, required total].
    by_suite: dict[str, list[int]] = field(default_factory=dict)
    #: test id -> outcome, for every test run.
    outcomes: dict[str, str] = field(default_factory=dict)
    #: the client's raw results: test id -> true | [error name, message].
    results: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False

    def headline(self) -> str:
        """One line: the counts and how long the run took."""
        late = " (timed out: tests without a result count as failed)"
        return (
            f"{self.target} ({self.version}): required "
            f"{self.required_passed}/{self.required_total} passed, optimal "
            f"{self.optimal_passed}/{self.optimal_total} passed, checks "
            f"{self.checks_yes}/{self.checks_total} yes; {self.seconds:.1f} s"
            + (late if self.timed_out else "")
        )


# The suite and its results: pure functions of the definitions and results.


def outcome(
    test_id: str, tests: Mapping[str, TestInfo], results: Mapping[str, Any]
) -> str:
    """
    The result of one test as the suite's result pages show it: C{pass} or
    C{fail} (required), C{pass} or C{optional_fail} (optimal), C{yes} or
    C{no} (check); C{dependency_fail} when a test it depends on did not
    pass, C{setup_fail} or C{retry} when the exchange around the assertion
    went wrong, C{untested} when there is no result.
    """
    result = results.get(test_id)
    if result is None:
        return "untested"
    test = tests[test_id]
    if any(outcome(dep, tests, results) not in PASSED for dep in test.depends_on):
        return "dependency_fail"
    if isinstance(result, list) and result[:1] == ["Setup"]:
        return "retry" if result[1:2] == ["retry"] else "setup_fail"
    passed = result is True
    if test.kind == "required":
        return "pass" if passed else "fail"
    if test.kind == "optimal":
        return "pass" if passed else "optional_fail"
    if test.kind == "check":
        return "yes" if passed else "no"
    raise ValueError(f"test {test_id}: unknown kind {test.kind!r}")


def detail(
    test_id: str, tests: Mapping[str, TestInfo], results: Mapping[str, Any]
) -> str:
    """Why a test did not pass, in one line."""
    result = results.get(test_id)
    if result is None:
        return "no result (the run ended first)"
    failed = [
        dep
        for dep in tests[test_id].depends_on
        if outcome(dep, tests, results) not in PASSED
    ]
    if failed:
        return "depends on " + ", ".join(failed)
    if isinstance(result, list):
        return ": ".join(str(part) for part in result)
    return str(result)


def summarize(
    tests: Mapping[str, TestInfo],
    results: Mapping[str, Any],
    *,
    target: str,
    version: str = "",
    suite_version: str = "",
    seconds: float = 0.0,
    timed_out: bool = False,
    selected: Sequence[str] = (),
) -> Summary:
    """Count one run's results; C{selected} limits it to those ids."""
    ran = [test_id for test_id in (selected or tests) if test_id in tests]
    outcomes = {test_id: outcome(test_id, tests, results) for test_id in ran}
    kinds: dict[str, Counter[str]] = {
        "required": Counter(),
        "optimal": Counter(),
        "check": Counter(),
    }
    by_suite: dict[str, list[int]] = {}
    failed: dict[str, tuple[str, str]] = {}
    for test_id in ran:
        test = tests[test_id]
        passed = outcomes[test_id] in PASSED
        kinds[test.kind]["total"] += 1
        kinds[test.kind]["passed"] += passed
        if test.kind == "required":
            counts = by_suite.setdefault(test.suite, [0, 0])
            counts[0] += passed
            counts[1] += 1
            if not passed:
                failed[test_id] = (outcomes[test_id], detail(test_id, tests, results))
    return Summary(
        target=target,
        version=version,
        suite_version=suite_version,
        seconds=round(seconds, 1),
        required_passed=kinds["required"]["passed"],
        required_total=kinds["required"]["total"],
        optimal_passed=kinds["optimal"]["passed"],
        optimal_total=kinds["optimal"]["total"],
        checks_yes=kinds["check"]["passed"],
        checks_total=kinds["check"]["total"],
        required=[test_id for test_id in ran if tests[test_id].kind == "required"],
        required_failed=failed,
        by_suite=by_suite,
        outcomes=outcomes,
        results=dict(results),
        timed_out=timed_out,
    )


def with_dependencies(tests: Mapping[str, TestInfo], ids: Sequence[str]) -> list[str]:
    """C{ids} and every test they depend on, directly or not."""
    wanted: list[str] = []
    todo = list(ids)
    while todo:
        test_id = todo.pop()
        if test_id not in wanted:
            wanted.append(test_id)
            todo += tests[test_id].depends_on
    return sorted(wanted)


def load_expected(path: Path) -> dict[str, str]:
    """An expected-failures file: test id = "one-line reason"."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: {key} must be a one-line reason (a string)")
    return data


@dataclass(frozen=True)
class Comparison:
    """A run against an expected-failures list."""

    #: required tests that did not pass and are not listed.
    unexpected_failures: dict[str, tuple[str, str]]
    #: listed tests that passed.
    unexpected_passes: list[str]
    #: listed ids that are not required tests of this run.
    unknown: list[str]

    def __bool__(self) -> bool:
        return bool(self.unexpected_failures or self.unexpected_passes or self.unknown)

    def report(self) -> str:
        """What differs, a line per test."""
        lines = []
        if self.unexpected_failures:
            lines.append("required tests failed that are not expected to:")
            lines += [
                f"  {test_id} [{why[0]}] {why[1]}"
                for test_id, why in sorted(self.unexpected_failures.items())
            ]
        if self.unexpected_passes:
            lines.append("expected failures that passed (remove them from the list):")
            lines += [f"  {test_id}" for test_id in self.unexpected_passes]
        if self.unknown:
            lines.append("listed ids that are no required test of this run:")
            lines += [f"  {test_id}" for test_id in self.unknown]
        return "\n".join(lines)


def compare(summary: Summary, expected: Mapping[str, str]) -> Comparison:
    """Compare a run's required failures with an expected-failures list."""
    required = set(summary.required)
    return Comparison(
        unexpected_failures={
            test_id: why
            for test_id, why in summary.required_failed.items()
            if test_id not in expected
        },
        unexpected_passes=sorted(
            test_id
            for test_id in expected
            if test_id in required and test_id not in summary.required_failed
        ),
        unknown=sorted(test_id for test_id in expected if test_id not in required),
    )


def expected_toml(summary: Summary) -> str:
    """An expected-failures file listing this run's required failures."""
    lines = [
        f"# Required http-cache-tests {summary.target} failed "
        f"({summary.required_passed}/{summary.required_total} passed).",
        "# Replace each reason (the suite's message) with why.",
    ]
    for test_id, (kind, why) in sorted(summary.required_failed.items()):
        lines.append(f"{json.dumps(test_id)} = {json.dumps(f'[{kind}] {why}')}")
    return "\n".join(lines) + "\n"


# Running things.


def suite_dir() -> Path:
    """Where the suite is installed: $HTTP_CACHE_TESTS_DIR, or this directory's
    node_modules (C{npm ci --prefix bench/cache_tests})."""
    return Path(
        os.environ.get("HTTP_CACHE_TESTS_DIR")
        or HERE / "node_modules" / "http-cache-tests"
    )


def node() -> str:
    """The node program, or a SuiteError that says how to get it."""
    found = shutil.which("node")
    if found is None:
        raise SuiteError("node is not installed (.ci/run installs nodejs and npm)")
    return found


def check_suite(directory: Path) -> str:
    """
    The installed suite's version, or a SuiteError that says how to install
    it.  The default directory is filled with C{npm ci} (the pinned
    version) when the suite is not there yet and npm is.
    """
    default = HERE / "node_modules" / "http-cache-tests"
    npm = shutil.which("npm")
    if directory == default and not (directory / "package.json").exists() and npm:
        try:
            subprocess.run(
                [npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise SuiteError(f"`npm ci --prefix {HERE}` failed: {e}") from None
    try:
        package = json.loads((directory / "package.json").read_text())
    except OSError:
        raise SuiteError(
            f"http-cache-tests is not installed in {directory}: run "
            f"`npm ci --prefix {HERE.relative_to(ROOT)}` (.ci/run does)"
        ) from None
    return str(package["version"])


def list_tests(directory: Path, work: Path) -> dict[str, TestInfo]:
    """The suite's test definitions that apply to a shared cache (not the
    browser-only ones), by id."""
    out = work / "tests.json"
    subprocess.run(
        [node(), str(HERE / "suite.mjs"), "list", str(directory), str(out)],
        check=True,
        timeout=60,
    )
    return {
        item["id"]: TestInfo(
            id=item["id"],
            suite=item["suite"],
            name=item["name"],
            kind=item["kind"],
            depends_on=tuple(item["depends_on"]),
        )
        for item in json.loads(out.read_text())
        if not item["browser_only"]
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Processes:
    """The processes of one run, each logging to a file in C{work}; all of
    them stopped (SIGTERM, then SIGKILL) when the run ends."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start C{argv}, its output to C{work/NAME.log}."""
        try:
            with (self.work / f"{name}.log").open("wb") as log:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.work,
                    env=dict(env) if env is not None else None,
                )
        except FileNotFoundError:
            raise SuiteError(f"{name}: {argv[0]} is not installed") from None
        self.started.append((name, proc))
        return proc

    def log(self, name: str, lines: int = 20) -> str:
        """The last lines a process printed."""
        try:
            text = (self.work / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_port(self, name: str, port: int, deadline: float = 20.0) -> None:
        """Wait (bounded) until 127.0.0.1:C{port} accepts, while C{name} runs."""
        proc = dict(self.started)[name]
        end = time.monotonic() + deadline
        while True:
            if proc.poll() is not None:
                raise SuiteError(
                    f"{name} exited ({proc.returncode}):\n{self.log(name)}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise SuiteError(
                        f"{name}: nothing listens on {port}:\n{self.log(name)}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop every process started, the last started first."""
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.started):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def start_origin(procs: Processes, directory: Path) -> int:
    """Start the suite's origin on 127.0.0.1 and return its port."""
    port = free_port()
    procs.start("origin", [node(), str(HERE / "origin.mjs"), str(directory), str(port)])
    procs.wait_for_port("origin", port)
    return port


def render(template: str, **values: str | int) -> str:
    """A config file from this directory with its @NAME@ slots filled."""
    text = (HERE / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name.upper()}@", str(value))
    if leftover := re.search(r"@[A-Z_]+@", text):
        raise ValueError(f"{template}: {leftover.group()} is not filled in")
    return text


def program(name: str, *candidates: str) -> str:
    """The path of a program (PATH, then the usual sbin directories)."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate)
        if found:
            return found
        if os.access(candidate, os.X_OK):
            return candidate
    raise SuiteError(f"{name} is not installed (apt-get install {name})")


def _version(argv: Sequence[str], pattern: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def python_env() -> dict[str, str]:
    """The environment for twistd: this checkout first on the path (an
    editable install hides twisted/plugins from plugin discovery)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def start_cache(target: str, procs: Processes, origin: int) -> tuple[int, str]:
    """Start C{target} in front of the origin: (its port, its version)."""
    if target == "direct":
        return origin, "no cache"
    port = free_port()
    work = procs.work
    if target == "nginx":
        nginx = program("nginx", "/usr/sbin/nginx")
        conf = work / "nginx.conf"
        conf.write_text(render("nginx.conf", port=port, origin=origin, work=work))
        procs.start("nginx", [nginx, "-p", str(work), "-e", "stderr", "-c", str(conf)])
        version = _version([nginx, "-v"], r"nginx/(\S+)")
    elif target == "varnish":
        varnishd = program("varnishd", "/usr/sbin/varnishd")
        params = [
            line.strip()
            for line in (HERE / "varnish.params").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        argv = [
            varnishd,
            "-F",
            "-j",
            "none",
            "-n",
            str(work / "varnish"),
            "-a",
            f"127.0.0.1:{port}",
            "-b",
            f"127.0.0.1:{origin}",
            "-s",
            "malloc,64m",
        ]
        for param in params:
            argv += ["-p", param]
        procs.start("varnish", argv)
        version = _version([varnishd, "-V"], r"varnish-(\S+)")
    elif target == "haproxy":
        haproxy = program("haproxy", "/usr/sbin/haproxy")
        conf = work / "haproxy.cfg"
        conf.write_text(render("haproxy.cfg", port=port, origin=origin))
        procs.start("haproxy", [haproxy, "-db", "-f", str(conf)])
        version = _version([haproxy, "-v"], r"version (\S+)")
    elif target == "rproxy":
        conf = work / "rproxy.toml"
        conf.write_text(render("rproxy.toml", port=port, origin=origin))
        procs.start(
            "rproxy",
            [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(conf)],
            env=python_env(),
        )
        version = _version(
            [sys.executable, "-c", "from rproxy.cli import main; main()", "--version"],
            r"rproxy (.+)",
        )
    else:
        raise SuiteError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    procs.wait_for_port(target, port)
    return port, version


def run_client(
    directory: Path, base: str, work: Path, timeout: float, ids: Sequence[str] = ()
) -> tuple[dict[str, Any], bool]:
    """Run the suite's client against C{base}: (results, whether the
    deadline cut it short)."""
    out = work / "results.json"
    argv = [node(), str(HERE / "suite.mjs"), "run", str(directory), base, str(out)]
    with (work / "client.log").open("wb") as log:
        try:
            done = subprocess.run(
                [*argv, str(timeout), *ids],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout + 30,
            )
        except subprocess.TimeoutExpired:
            raise SuiteError(f"the client did not stop after {timeout} s") from None
    if done.returncode not in (0, 3) or not out.exists():
        raise SuiteError(
            f"the client failed ({done.returncode}):\n"
            + (work / "client.log").read_text(errors="replace")[-2000:]
        )
    return json.loads(out.read_text()), done.returncode == 3


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="rproxy-cache-tests-"))
    try:
        yield work
    finally:
        if keep:
            print(f"logs and results kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_target(
    target: str,
    *,
    timeout: float = 100.0,
    ids: Sequence[str] = (),
    keep: bool = False,
    directory: Path | None = None,
) -> Summary:
    """Run the suite (or the tests C{ids}, and those they depend on) against
    C{target} in front of the suite's origin; the client is stopped after
    C{timeout} seconds."""
    directory = directory or suite_dir()
    suite_version = check_suite(directory)
    node()
    with _workdir(keep) as work:
        tests = list_tests(directory, work)
        unknown = [test_id for test_id in ids if test_id not in tests]
        if unknown:
            raise SuiteError(f"no such tests: {', '.join(unknown)}")
        procs = Processes(work)
        try:
            origin = start_origin(procs, directory)
            port, version = start_cache(target, procs, origin)
            started = time.monotonic()
            results, timed_out = run_client(
                directory,
                f"http://127.0.0.1:{port}",
                work,
                timeout,
                with_dependencies(tests, ids),
            )
            seconds = time.monotonic() - started
        finally:
            procs.stop()
        return summarize(
            tests,
            results,
            target=target,
            version=version,
            suite_version=suite_version,
            seconds=seconds,
            timed_out=timed_out,
            selected=ids,
        )


def serve(target: str, directory: Path | None = None) -> None:
    """Start the origin and C{target} in front of it and wait for Ctrl-C
    (to run the suite's own client by hand, one test at a time)."""
    directory = directory or suite_dir()
    check_suite(directory)
    with _workdir(keep=True) as work:
        procs = Processes(work)
        try:
            origin = start_origin(procs, directory)
            port, version = start_cache(target, procs, origin)
            print(
                f"{target} ({version}) on http://127.0.0.1:{port}, origin on "
                f"{origin}; logs in {work}; try:\n  cd {directory} && "
                f"npm_config_base=http://127.0.0.1:{port} npm_config_id=TEST_ID "
                "node --no-warnings cli.mjs\nCtrl-C stops.",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt, SystemExit):
                while all(proc.poll() is None for _, proc in procs.started):
                    time.sleep(0.5)
        finally:
            procs.stop()


def show(summary: Summary) -> str:
    """The summary as text: the headline and each required test not passed."""
    lines = [summary.headline()]
    if summary.required_failed:
        lines.append(f"  required tests not passed ({len(summary.required_failed)}):")
        lines += [
            f"    {test_id} [{kind}] {why}"
            for test_id, (kind, why) in sorted(summary.required_failed.items())
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        default="rproxy",
        help=f"comma-separated, of {', '.join(TARGETS)} (default rproxy)",
    )
    parser.add_argument("--json", type=Path, help="write the summaries here")
    parser.add_argument(
        "--timeout", type=float, default=100.0, help="seconds per run (default 100)"
    )
    parser.add_argument(
        "--expected",
        type=Path,
        help="an expected-failures file: exit 1 if the run differs from it",
    )
    parser.add_argument(
        "--write-expected",
        type=Path,
        help="write the run's required failures as an expected-failures file",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and results")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="only start the origin and the (first) target, until Ctrl-C",
    )
    parser.add_argument("ids", nargs="*", help="run these tests only")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the processes started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if args.serve:
        try:
            serve(targets[0])
        except SuiteError as e:
            print(f"{targets[0]}: {e}", file=sys.stderr)
            return 2
        return 0
    summaries = {}
    status = 0
    for target in targets:
        try:
            summary = run_target(
                target, timeout=args.timeout, ids=args.ids, keep=args.keep
            )
        except SuiteError as e:
            print(f"{target}: {e}", file=sys.stderr)
            status = 2
            continue
        summaries[target] = summary
        print(show(summary), flush=True)
        if args.expected:
            differences = compare(summary, load_expected(args.expected))
            if differences:
                print(differences.report())
                status = max(status, 1)
            else:
                print(f"  as expected by {args.expected}")
    if args.json:
        args.json.write_text(
            json.dumps({t: asdict(s) for t, s in summaries.items()}, indent=1) + "\n"
        )
    if args.write_expected and len(summaries) == 1:
        args.write_expected.write_text(expected_toml(next(iter(summaries.values()))))
    return status


if __name__ == "__main__":
    sys.exit(main())
