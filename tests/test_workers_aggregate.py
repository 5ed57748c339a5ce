"""Tests for the group's status and metrics: the supervisor's state with the
workers' counters summed, and each worker's own."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from rproxy.workers._aggregate import (
    Retired,
    add_counts,
    group_metrics,
    group_status,
    render_metrics,
)


def backend(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": "up",
        "weight": 2,
        "active": 0,
        "requests_total": 0,
        "responses": {"2xx": 0, "5xx": 0},
        "state_since": 10.0,
        "connections_per_second": None,
        **fields,
    }


def status(**backend_fields: Any) -> dict[str, Any]:
    return {
        "time": 5.0,
        "listeners": [{"name": "http", "requests_total": 0, "active": 0}],
        "pools": [
            {
                "name": "web",
                "backends": [backend("a", **backend_fields)],
                "queue": {"waiting": 0},
            }
        ],
    }


def test_counters_are_summed_and_state_is_the_supervisors() -> None:
    """
    Numbers add up by name through nested objects and named lists; weights,
    times and states stay the supervisor's.
    """
    own = status(state="down")
    add_counts(own, status(requests_total=3, responses={"2xx": 3, "5xx": 0}))
    add_counts(
        own,
        status(
            requests_total=4,
            responses={"2xx": 3, "5xx": 1},
            weight=9,
            state_since=99.0,
            connections_per_second=1.5,
        ),
    )
    a = own["pools"][0]["backends"][0]
    assert a["requests_total"] == 7
    assert a["responses"] == {"2xx": 6, "5xx": 1}
    assert a["connections_per_second"] == 1.5
    assert (a["weight"], a["state_since"], a["state"]) == (2, 10.0, "down")
    assert own["time"] == 5.0


def test_what_the_supervisor_does_not_list_is_not_added() -> None:
    """A listener or backend only a worker reports is left out of the sums."""
    own = status()
    other = status()
    other["listeners"].append({"name": "gone", "requests_total": 5})
    add_counts(own, other)
    assert [entry["name"] for entry in own["listeners"]] == ["http"]


def test_the_group_status_lists_every_worker_with_its_own_counters() -> None:
    """C{workers} has each worker, with its counters once it has reported."""
    own = group_status(
        status(),
        [
            ({"worker": 1, "pid": 11, "state": "running"}, status(requests_total=2)),
            ({"worker": 2, "pid": 12, "state": "starting"}, None),
        ],
    )
    first, second = own["workers"]
    assert first["pid"] == 11
    assert first["pools"][0]["backends"][0]["requests_total"] == 2
    assert "pools" not in second and second["state"] == "starting"
    assert own["pools"][0]["backends"][0]["requests_total"] == 2


def families(*metrics: Metric) -> list[Metric]:
    """What a worker's text reads back as."""

    class Fixed:
        def collect(self) -> list[Metric]:
            return list(metrics)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def requests(value: float) -> CounterMetricFamily:
    family = CounterMetricFamily("rproxy_listener_requests", "Requests.", labels=["l"])
    family.add_metric(["http"], value)
    return family


def healthy(value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily("rproxy_backend_healthy", "Up.", labels=["backend"])
    family.add_metric(["a"], value)
    return family


def samples(metrics: list[Metric]) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics
        for s in family.samples
    }


def test_metrics_sum_the_workers_and_repeat_them_per_worker() -> None:
    """
    A counter is the workers' sum under its own name and each worker's under
    C{rproxy_worker_*} with a C{worker} label; health is the supervisor's.
    """
    own = families(requests(0), healthy(0))
    out = samples(
        group_metrics(
            own, {1: families(requests(3), healthy(1)), 2: families(requests(4))}
        )
    )
    assert out[("rproxy_listener_requests_total", (("l", "http"),))] == 7
    assert (
        out[("rproxy_worker_listener_requests_total", (("l", "http"), ("worker", "1")))]
        == 3
    )
    assert (
        out[("rproxy_worker_listener_requests_total", (("l", "http"), ("worker", "2")))]
        == 4
    )
    assert out[("rproxy_backend_healthy", (("backend", "a"),))] == 0
    assert not any(name == "rproxy_worker_backend_healthy" for name, _ in out)


def test_histograms_add_bucket_by_bucket() -> None:
    """Latency buckets, sums and counts of the workers add up."""

    def latency(count: float) -> HistogramMetricFamily:
        family = HistogramMetricFamily("rproxy_latency_seconds", "Latency.")
        family.add_metric([], [("0.1", count), ("+Inf", count)], sum_value=count / 10)
        return family

    out = samples(group_metrics([], {1: families(latency(2)), 2: families(latency(3))}))
    assert out[("rproxy_latency_seconds_bucket", (("le", "0.1"),))] == 5
    assert out[("rproxy_latency_seconds_count", ())] == 5


def test_the_group_metrics_render_as_prometheus_text() -> None:
    """What the admin serves: the supervisor's registry plus the workers'
    texts, parsed back with the summed values; a worker yet to report is
    left out."""
    text = render_metrics(
        _registry([requests(0)]),
        {1: generate_latest(_registry([requests(2)])).decode(), 2: ""},
    ).decode()
    assert 'rproxy_listener_requests_total{l="http"} 2.0' in text
    assert 'rproxy_worker_listener_requests_total{l="http",worker="1"} 2.0' in text
    assert 'worker="2"' not in text


def _registry(metrics: list[Metric]) -> CollectorRegistry:
    class Fixed:
        def collect(self) -> list[Metric]:
            return metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    return registry


def test_the_status_page_lists_the_workers() -> None:
    """The HTML page of a group has a table of its workers."""
    from rproxy.admin._page import render_page

    own = group_status(
        {"listeners": [], "pools": []},
        [
            (
                {"worker": 1, "pid": 4242, "state": "running", "restarts": 0},
                {"listeners": [{"name": "http", "requests_total": 9, "active": 1}]},
            ),
            ({"worker": 2, "pid": 4243, "state": "starting", "restarts": 3}, None),
        ],
    )
    page = render_page(own).decode()
    assert '<table id="workers">' in page
    assert "<td>4242</td>" in page and "<td>9</td>" in page
    assert '<td class="state">starting</td>' in page
    assert "Workers" not in render_page({"listeners": [], "pools": []}).decode()


def test_an_ended_workers_counts_stay_in_the_sums() -> None:
    """
    What a worker that ended had counted stays in the group's counters
    (status and metrics), not in its gauges, so a restart does not take the
    totals back.
    """
    retired = Retired()
    last = status(requests_total=5, active=2)
    last["pools"][0]["queue"]["waiting"] = 3

    def active(value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily("rproxy_active", "Open.", labels=["l"])
        family.add_metric(["http"], value)
        return family

    text = generate_latest(_registry([requests(5), active(2)])).decode()
    retired.add(last, text)
    retired.add(status(requests_total=1), "")
    own = group_status(status(), [({"worker": 1}, status(requests_total=2))], retired)
    a = own["pools"][0]["backends"][0]
    assert a["requests_total"] == 8 and a["active"] == 0
    assert own["pools"][0]["queue"]["waiting"] == 0
    out = samples(
        group_metrics(
            families(requests(0), active(0)),
            {1: families(requests(2), active(1))},
            retired.metrics,
        )
    )
    assert out[("rproxy_listener_requests_total", (("l", "http"),))] == 7
    assert out[("rproxy_active", (("l", "http"),))] == 1


def test_an_ended_workers_counts_of_gone_series_are_dropped() -> None:
    """A series the group no longer has (a removed listener) is not kept
    alive by what an ended worker had counted."""
    retired = Retired()
    gone = CounterMetricFamily("rproxy_listener_requests", "Requests.", labels=["l"])
    gone.add_metric(["old"], 4)
    retired.add(None, generate_latest(_registry([gone, requests(3)])).decode())
    out = samples(group_metrics(families(requests(0)), {}, retired.metrics))
    assert out == {("rproxy_listener_requests_total", (("l", "http"),)): 3}


def test_ended_workers_add_up_whatever_they_served() -> None:
    """A listener only the second ended worker had is carried too."""
    retired = Retired()
    retired.add(status(requests_total=1), "")
    later = status(requests_total=2)
    later["listeners"].append({"name": "new", "requests_total": 4, "active": 1})
    retired.add(later, "")
    assert retired.status is not None
    assert retired.status["listeners"][1] == {
        "name": "new",
        "requests_total": 4,
        "active": 0,
    }
    assert retired.status["pools"][0]["backends"][0]["requests_total"] == 3
