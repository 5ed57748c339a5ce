"""The admin interface shows the protection of a pool's backends: its queue,
retries and the budget's refusals, ejections and slow starts, in
/status.json, /metrics and the status page."""

from __future__ import annotations

from attrs import evolve
from prometheus_client.parser import text_string_to_metric_families

from rproxy.outlier import OutlierDetector
from rproxy.policy import OutlierPolicy
from tests.test_admin import _AdminCase


class ProtectionStatusTests(_AdminCase):
    def setUp(self) -> None:
        super().setUp()
        self.pool.policy = evolve(
            self.pool.policy,
            slow_start=10.0,
            outlier=OutlierPolicy(consecutive_5xx=1, max_ejection=0.5),
        )
        self.detector = OutlierDetector(self.pool, self.reactor)
        self.addCleanup(self.detector.stop)
        queue = self.pool.queue
        queue.queued_total, queue.served_total = 9, 5
        queue.timeouts_total, queue.full_total = 3, 2
        self.pool.retries_active, self.pool.retries_total = 1, 7
        self.pool.retries_refused = 4
        self.b0.responses[4] += 1
        self.detector.five_xx(self.b0)  # ejected for 30 s
        self.pool.mark_down(self.b1, "test")
        self.pool.mark_up(self.b1, "test")  # ramping: 1 of 10 s in
        self.reactor.advance(1.0)

    def test_status_json_shows_queue_retries_ejections_and_ramps(self) -> None:
        """The pool has queue, retries and ejections; each backend whether
        it is ejected (and until when) and its weight now."""
        [pool] = self.request("GET", "/status.json").json()["pools"]
        self.assertEqual(
            pool["queue"],
            {
                "waiting": 0,
                "queued_total": 9,
                "served_total": 5,
                "timeouts_total": 3,
                "full_total": 2,
            },
        )
        self.assertEqual(pool["retries"], {"active": 1, "total": 7, "refused_total": 4})
        self.assertEqual(pool["ejections"], {"ejected": 1, "total": 1, "held_total": 0})
        b0, b1 = pool["backends"]
        self.assertEqual(
            (b0["state"], b0["ejected"], b0["ejected_until"], b0["ejections_total"]),
            ("up", True, 1030.0, 1),
        )
        self.assertEqual((b1["ejected"], b1["effective_weight"]), (False, 0.1))

    def test_metrics_count_the_protections(self) -> None:
        """/metrics has the queue, retry and ejection counters and gauges."""
        body = self.request("GET", "/metrics").body.decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        self.assertEqual(value("rproxy_pool_queue_waiting", pool="web"), 0)
        for outcome, count in (
            ("queued", 9),
            ("served", 5),
            ("timeout", 3),
            ("full", 2),
        ):
            self.assertEqual(
                value("rproxy_pool_queue_total", pool="web", outcome=outcome), count
            )
        self.assertEqual(value("rproxy_pool_retries_active", pool="web"), 1)
        self.assertEqual(
            value("rproxy_pool_retries_total", pool="web", outcome="made"), 7
        )
        self.assertEqual(
            value("rproxy_pool_retries_total", pool="web", outcome="refused"), 4
        )
        self.assertEqual(
            value("rproxy_pool_ejections_total", pool="web", outcome="ejected"), 1
        )
        self.assertEqual(value("rproxy_backend_ejected", pool="web", backend="b0"), 1)
        self.assertEqual(
            value("rproxy_backend_effective_weight", pool="web", backend="b1"), 0.1
        )

    def test_status_page_marks_ejected_backends(self) -> None:
        """The page shows an ejected backend's state with 'ejected'."""
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="state">up, ejected</td>', page)
