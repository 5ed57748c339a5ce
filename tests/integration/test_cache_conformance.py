"""
The HTTP caching test suite (http-cache-tests, by Mark Nottingham; node and
the pinned suite are installed by .ci/run) against rproxy's cache in front of
the suite's own origin, driven by bench/cache_tests/run.py: every required
test passes except those bench/cache_tests/expected_failures.toml lists, and
every one listed still fails.  One run takes about 20 s.

For trying the test itself against another cache only:
RPROXY_CACHE_TESTS_TARGET=nginx (or varnish, haproxy) and
RPROXY_CACHE_TESTS_EXPECTED=FILE (an expected-failures file for it, written
by run.py --write-expected).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

CACHE_TESTS = Path(__file__).resolve().parents[2] / "bench" / "cache_tests"

#: the client's deadline; the whole run stays under two minutes.
TIMEOUT = 90.0


def _load_run() -> ModuleType:
    """bench/cache_tests/run.py, imported by path (bench is no package)."""
    name = "rproxy_bench_cache_tests_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CACHE_TESTS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run = _load_run()


class CacheConformanceTests(SynchronousTestCase):
    """The suite against rproxy's cache (or the target the environment names)."""

    def test_required_tests_pass_but_the_expected_failures(self) -> None:
        """Every required test passes unless the expected-failures file lists
        it, and every test listed is a required test that fails."""
        target = os.environ.get("RPROXY_CACHE_TESTS_TARGET", "rproxy")
        expected = run.load_expected(
            Path(
                os.environ.get("RPROXY_CACHE_TESTS_EXPECTED")
                or CACHE_TESTS / "expected_failures.toml"
            )
        )
        try:
            summary = run.run_target(target, timeout=TIMEOUT)
        except run.SuiteError as e:
            self.fail(f"the cache test suite could not run against {target}: {e}")
        self.assertFalse(summary.timed_out, summary.headline())
        comparison = run.compare(summary, expected)
        if comparison:
            self.fail(summary.headline() + "\n" + comparison.report())


def _tests(**kinds: tuple[str, ...]) -> dict[str, Any]:
    """Test definitions: id=(kind, *depends_on)."""
    return {
        test_id: run.TestInfo(
            id=test_id, suite="s", name=test_id, kind=kind, depends_on=tuple(deps)
        )
        for test_id, (kind, *deps) in kinds.items()
    }


class HarnessTests(SynchronousTestCase):
    """run.py's counting, on results written by hand."""

    TESTS = _tests(
        basic=("check",),
        stores=("optimal", "basic"),
        fresh=("required", "basic"),
        stale=("required",),
        setup=("required",),
    )

    def test_a_failed_dependency_fails_the_test(self) -> None:
        """A test that passed counts as failed when one it depends on failed."""
        results = {"basic": ["Assertion", "cached"], "stores": True, "fresh": True}
        self.assertEqual(run.outcome("fresh", self.TESTS, results), "dependency_fail")
        self.assertEqual(run.outcome("stores", self.TESTS, results), "dependency_fail")
        self.assertEqual(run.outcome("basic", self.TESTS, results), "no")

    def test_outcomes_by_kind(self) -> None:
        """Required, optimal and check tests pass as pass, pass and yes; a setup
        error and a missing result are neither."""
        results = {
            "basic": True,
            "stores": ["Assertion", "not cached"],
            "fresh": True,
            "stale": ["Assertion", "served stale"],
            "setup": ["Setup", "PUT config resulted in 405"],
        }
        outcomes = {t: run.outcome(t, self.TESTS, results) for t in self.TESTS}
        self.assertEqual(
            outcomes,
            {
                "basic": "yes",
                "stores": "optional_fail",
                "fresh": "pass",
                "stale": "fail",
                "setup": "setup_fail",
            },
        )
        self.assertEqual(run.outcome("fresh", self.TESTS, {}), "untested")

    def test_summary_counts_required_tests(self) -> None:
        """The summary counts required passes and lists the required tests not
        passed."""
        results = {"basic": True, "stores": True, "fresh": True, "stale": ["X", "y"]}
        summary = run.summarize(self.TESTS, results, target="t")
        self.assertEqual((summary.required_passed, summary.required_total), (1, 3))
        self.assertEqual((summary.optimal_passed, summary.checks_yes), (1, 1))
        self.assertEqual(
            summary.required_failed,
            {
                "stale": ("fail", "X: y"),
                "setup": ("untested", "no result (the run ended first)"),
            },
        )
        self.assertEqual(summary.by_suite, {"s": [1, 3]})

    def test_comparison_finds_both_directions(self) -> None:
        """A failure not listed, a listed test that passed and a listed id the
        run does not have are all differences; the listed failure is not."""
        results = {
            "basic": True,
            "fresh": True,
            "stale": ["X", "y"],
            "setup": ["X", "z"],
        }
        summary = run.summarize(self.TESTS, results, target="t")
        comparison = run.compare(
            summary, {"stale": "why", "fresh": "why", "gone": "why", "basic": "why"}
        )
        self.assertEqual(list(comparison.unexpected_failures), ["setup"])
        self.assertEqual(comparison.unexpected_passes, ["fresh"])
        self.assertEqual(comparison.unknown, ["basic", "gone"])
        self.assertFalse(run.compare(summary, {"stale": "why", "setup": "why"}))

    def test_chosen_tests_run_with_their_dependencies(self) -> None:
        """Running some tests only runs the tests they depend on too."""
        tests = _tests(a=("check",), b=("optimal", "a"), c=("required", "b"))
        self.assertEqual(run.with_dependencies(tests, ["c"]), ["a", "b", "c"])
        self.assertEqual(run.with_dependencies(tests, ["a"]), ["a"])

    def test_expected_file_round_trip(self) -> None:
        """The expected-failures file run.py writes for a run matches that run."""
        results = {"basic": True, "fresh": True, "stale": ["X", 'a "quoted" y']}
        summary = run.summarize(self.TESTS, results, target="t")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "expected.toml"
            path.write_text(run.expected_toml(summary))
            expected = run.load_expected(path)
        self.assertEqual(set(expected), {"stale", "setup"})
        self.assertFalse(run.compare(summary, expected))
