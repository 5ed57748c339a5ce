"""HTTP/2 in /status.json and in the metrics: connections, streams,
requests by version, resets and floods."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.core import Metric

from rproxy.admin._h2_metrics import http2_metrics
from rproxy.admin._status import RateSampler, listener_status

from ._h2 import H2Case, get, response


def _samples(metrics: list[Metric]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for metric in metrics
        for sample in metric.samples
    }


class AdminTests(H2Case):
    def service(self) -> SimpleNamespace:
        return SimpleNamespace(
            factory=self.factory, bound=None, description="tcp:0", tls=None, refused=0
        )

    def test_status_json_shows_http2_connections_and_streams(self) -> None:
        """The listener's status counts HTTP/2 connections and streams."""
        client = self.connect()
        client.request(get())
        client.request(get(b"/2"))
        status = listener_status("front", self.service(), RateSampler(self.clock))
        self.assertEqual(status["http2"]["open_connections"], 1)
        self.assertEqual(status["http2"]["open_streams"], 2)
        self.assertEqual(status["http2"]["streams"], 2)

    def test_metrics_count_requests_by_version_and_streams(self) -> None:
        """HTTP/2 requests are counted apart from HTTP/1.1 ones."""
        client = self.connect()
        client.request(get())
        self.backend_responds(response())
        client.receive()
        samples = _samples(list(http2_metrics({"front": self.service()})))
        key = "rproxy_listener_requests_by_version_total"
        self.assertEqual(samples[(key, ("front", "HTTP/2"))], 1)
        self.assertEqual(samples[(key, ("front", "HTTP/1.1"))], 0)
        self.assertEqual(
            samples[("rproxy_listener_http2_connections_total", ("front",))], 1
        )
        self.assertEqual(
            samples[("rproxy_listener_http2_floods_total", ("front", "ping"))], 0
        )
