"""Outlier ejection on 5xx responses, on a Clock: runs, rates, how long an
ejection lasts, the cap on the share ejected, and what an ejection leaves
alone (health, admin state)."""

from __future__ import annotations

import pytest
from attrs import evolve
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rproxy.backends import Backend, BackendState, Pool
from rproxy.balancing import SmoothWeighted
from rproxy.outlier import OutlierDetector
from rproxy.policy import OutlierPolicy, PoolPolicy
from rproxy.protection import ejection_steps, ejection_time, may_eject
from rproxy.testing import HTTPHarness

_CLASSES = {"2xx": 1, "4xx": 3, "5xx": 4}


@pytest.mark.parametrize(
    ("ejected", "members", "share", "allowed"),
    [
        (0, 4, 0.5, True),
        (1, 4, 0.5, True),
        (2, 4, 0.5, False),
        (0, 2, 0.5, True),
        (0, 1, 1.0, False),
        (2, 3, 1.0, False),
        (0, 3, 0.2, False),
        (0, 10, 0.1, True),
    ],
)
def test_may_eject_caps_the_share_and_keeps_one(
    ejected: int, members: int, share: float, allowed: bool
) -> None:
    """At most share x members (rounded down) at once, never all."""
    assert may_eject(ejected, members, share) is allowed


@pytest.mark.parametrize(
    ("steps", "unejected_for", "interval", "after"),
    [(0, 0.0, 10.0, 1), (1, 5.0, 10.0, 2), (3, 25.0, 10.0, 2), (2, 1000.0, 10.0, 1)],
)
def test_ejections_in_a_row_decay_with_time_unejected(
    steps: int, unejected_for: float, interval: float, after: int
) -> None:
    """One step fewer for each whole interval since the last ejection."""
    assert ejection_steps(steps, unejected_for, interval) == after


def test_ejection_time_grows_with_steps_up_to_the_longest() -> None:
    """n times the base, capped."""
    assert [ejection_time(n, 30.0, 100.0) for n in (1, 2, 3, 4)] == [
        30.0,
        60.0,
        90.0,
        100.0,
    ]


class OutlierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.backends = [Backend("10.0.0.1", 80 + i, name=f"b{i}") for i in range(4)]
        self.policy = OutlierPolicy(
            consecutive_5xx=3, interval=10.0, base_ejection=30.0, max_ejection=0.5
        )
        self.pool = Pool(
            "web",
            self.backends,
            SmoothWeighted(),
            now=self.clock.seconds,
            policy=PoolPolicy(outlier=self.policy),
        )
        self.detector = OutlierDetector(self.pool, self.clock)
        self.addCleanup(self.detector.stop)

    def respond(self, backend: Backend, *classes: str) -> None:
        for name in classes:
            backend.responses[_CLASSES[name]] += 1
            if name == "5xx":
                self.detector.five_xx(backend)

    def test_run_of_5xx_ejects_the_backend_out_of_balancing(self) -> None:
        """consecutive_5xx in a row eject: no more picks, yet its health and
        state are untouched."""
        bad = self.backends[0]
        self.assertIs(self.pool.outlier, self.detector)
        with capturedLogs() as events:
            self.respond(bad, "5xx", "5xx", "5xx")
        self.assertTrue(bad.ejected)
        self.assertEqual(bad.ejected_until, 1030.0)
        self.assertEqual((bad.state, bad.healthy), (BackendState.UP, True))
        self.assertNotIn(bad, self.pool.candidates())
        self.assertIn("ejected for 30s", events[-1]["log_format"].format(**events[-1]))
        self.assertEqual((bad.ejections_total, self.detector.ejections_total), (1, 1))

    def test_another_response_breaks_the_run(self) -> None:
        """A response that is not a 5xx starts the run over."""
        bad = self.backends[0]
        self.respond(bad, "5xx", "5xx", "2xx", "5xx", "5xx", "4xx", "5xx")
        self.assertFalse(bad.ejected)

    def test_ejection_ends_after_its_time_with_a_slow_start(self) -> None:
        """Back after base_ejection, ramping up over the pool's slow_start."""
        self.pool.policy = evolve(self.pool.policy, slow_start=20.0)
        bad = self.backends[0]
        self.respond(bad, "5xx", "5xx", "5xx")
        self.clock.advance(29.9)
        self.assertTrue(bad.ejected)
        self.clock.advance(0.1)
        self.assertFalse(bad.ejected)
        self.assertIsNone(bad.ejected_until)
        self.assertIn(bad, self.pool.candidates())
        self.assertEqual(list(self.pool.ramps), [bad])

    def test_repeated_ejections_last_longer_and_decay(self) -> None:
        """The second ejection in a row lasts twice the base; after long
        enough unejected, the next is back to the base."""
        bad = self.backends[0]
        self.respond(bad, "5xx", "5xx", "5xx")
        self.clock.advance(30.0)
        self.respond(bad, "5xx", "5xx", "5xx")
        self.assertEqual(bad.ejected_until, self.clock.seconds() + 60.0)
        self.clock.advance(60.0)
        self.clock.advance(100.0)  # ten intervals unejected
        self.respond(bad, "5xx", "5xx", "5xx")
        self.assertEqual(bad.ejected_until, self.clock.seconds() + 30.0)

    def test_at_most_max_ejection_of_the_pool_at_once(self) -> None:
        """With half the pool ejected, a third bad backend stays in (the
        hold is counted)."""
        for backend in self.backends[:3]:
            self.respond(backend, "5xx", "5xx", "5xx")
        self.assertEqual([b.ejected for b in self.backends], [True, True, False, False])
        self.assertEqual(self.detector.ejections_held, 1)

    def test_never_the_last_backend_left(self) -> None:
        """A backend is not ejected when no other of its kind is up, even
        under the cap."""
        self.pool.policy = evolve(
            self.pool.policy, outlier=evolve(self.policy, max_ejection=1.0)
        )
        for backend in self.backends[1:]:
            self.pool.mark_down(backend, "test")
        self.respond(self.backends[0], "5xx", "5xx", "5xx")
        self.assertFalse(self.backends[0].ejected)

    def test_rate_of_5xx_over_a_window_ejects(self) -> None:
        """With rate_5xx, a window of min_requests or more with more than
        that share of 5xx ejects, judged at a 5xx once interval has passed."""
        self.pool.policy = evolve(
            self.pool.policy,
            outlier=evolve(
                self.policy, consecutive_5xx=0, rate_5xx=0.25, min_requests=10
            ),
        )
        bad, fine = self.backends[0], self.backends[1]
        for backend in (bad, fine):
            self.respond(backend, "5xx")  # opens the window
            for _ in range(4):
                self.respond(backend, "2xx", "2xx")
        self.respond(bad, "5xx", "2xx", "5xx", "2xx")
        self.respond(fine, "2xx", "2xx", "2xx", "2xx")
        self.clock.advance(10.0)
        self.respond(bad, "5xx")  # 4 of 14
        self.respond(fine, "5xx")  # 2 of 14
        self.assertEqual((bad.ejected, fine.ejected), (True, False))

    def test_small_windows_are_not_judged(self) -> None:
        """Fewer than min_requests responses in a window: no rate ejection."""
        self.pool.policy = evolve(
            self.pool.policy,
            outlier=evolve(self.policy, consecutive_5xx=0, rate_5xx=0.1),
        )
        bad = self.backends[0]
        self.respond(bad, "5xx", "2xx", "5xx", "2xx")
        self.clock.advance(10.0)
        self.respond(bad, "5xx")
        self.assertFalse(bad.ejected)

    def test_no_policy_no_ejection(self) -> None:
        """Without an outlier policy (a reload removed it) nothing is ejected."""
        self.pool.policy = PoolPolicy()
        self.respond(self.backends[0], *["5xx"] * 10)
        self.assertFalse(self.backends[0].ejected)

    def test_a_backend_leaving_the_pool_is_forgotten(self) -> None:
        """Removing an ejected backend ends its ejection and its timer."""
        bad = self.backends[0]
        self.respond(bad, "5xx", "5xx", "5xx")
        self.pool.remove(bad.name)
        self.assertFalse(bad.ejected)
        self.assertEqual(self.clock.getDelayedCalls(), [])


def test_backend_answering_5xx_is_ejected_from_http_traffic() -> None:
    """Through the HTTP listener: after its run of 503s, requests go to the
    other backend."""
    clock = Clock()
    pool = Pool(
        "web",
        [Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)],
        now=clock.seconds,
        policy=PoolPolicy(
            keep_alive_max_idle=0, outlier=OutlierPolicy(consecutive_5xx=2)
        ),
    )
    detector = OutlierDetector(pool, clock)
    harness = HTTPHarness(pools=[pool], clock=clock)
    bad, good = pool.backends
    try:
        for _ in range(4):
            client = harness.request("GET", "/")
            connect = harness.endpoints.last
            status = b"503 Service Unavailable" if connect.backend is bad else b"200 OK"
            harness.backend_responds(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
            )
            client.close()
        assert bad.ejected
        asked = len(harness.endpoints.attempts)
        for _ in range(3):
            harness.request("GET", "/")
        assert {a.backend for a in harness.endpoints.attempts[asked:]} == {good}
    finally:
        detector.stop()
        harness.close()
