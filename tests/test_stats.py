"""Tests for rproxy.stats: status classes, the latency histogram, listener
counters."""

from __future__ import annotations

import pytest

from rproxy.stats import (
    LATENCY_BUCKETS,
    NO_RESPONSE,
    STATUS_CLASSES,
    LatencyHistogram,
    ListenerStats,
    status_class,
)


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (100, "1xx"),
        (101, "1xx"),
        (200, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (499, "4xx"),
        (502, "5xx"),
        (599, "5xx"),
        ("-", "none"),
        (600, "none"),
        (99, "none"),
    ],
)
def test_status_class(status: int | str, label: str) -> None:
    """A status code falls in its hundred; anything else is none."""
    assert STATUS_CLASSES[status_class(status)] == label


def test_no_response_is_the_none_class() -> None:
    assert STATUS_CLASSES[NO_RESPONSE] == "none"


def test_histogram_bounds_are_inclusive_and_cumulative() -> None:
    """
    An observation equal to a bound counts in that bucket (Prometheus'
    "le"); cumulative counts grow to the total, the last bucket infinite.
    """
    histogram = LatencyHistogram()
    for seconds in (0.001, 0.005, 0.0051, 0.3, 60.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative[0.005] == 2
    assert cumulative[0.01] == 3
    assert cumulative[0.25] == 3
    assert cumulative[0.5] == 4
    assert cumulative[10.0] == 4
    assert cumulative[float("inf")] == 5
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(60.3111)
    assert [bound for bound, _ in histogram.cumulative()] == [
        *LATENCY_BUCKETS,
        float("inf"),
    ]


def test_listener_stats_count_ended_connections() -> None:
    """Each ended TCP connection adds one and its bytes."""
    stats = ListenerStats()
    stats.connection_ended(10, 20)
    stats.connection_ended(1, 2)
    assert (stats.connections_closed, stats.bytes_in, stats.bytes_out) == (2, 11, 22)
    assert stats.requests == [0] * len(STATUS_CLASSES)
