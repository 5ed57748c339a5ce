"""What the admin interface shows of the protection of a pool's backends:
its queue, its retries and the budget's refusals, its ejections and slow
starts, as JSON status fields and as Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from rproxy.backends import Backend, Pool

__all__ = ["backend_protection", "pool_protection", "protection_metrics"]


def _detector_counts(pool: Pool) -> tuple[int, int]:
    outlier = pool.outlier
    if outlier is None:
        return 0, 0
    return outlier.ejections_total, outlier.ejections_held


def pool_protection(pool: Pool) -> dict[str, Any]:
    """
    The C{queue}, C{retries} and C{ejections} of C{pool}'s status.

    C{queue.waiting} is what waits now for a backend to have room;
    C{queued_total} what joined the queue, C{served_total} and
    C{timeouts_total} how their waits ended (the rest left with their
    client), C{full_total} what was refused at once, the queue being full.
    C{retries.active} are retries under way, C{retries.refused_total} those
    the retry budget refused.  C{ejections.held_total} are ejections the
    C{max_ejection} cap held back.
    """
    queue = pool.queue
    ejected, held = _detector_counts(pool)
    return {
        "queue": {
            "waiting": len(queue),
            "queued_total": queue.queued_total,
            "served_total": queue.served_total,
            "timeouts_total": queue.timeouts_total,
            "full_total": queue.full_total,
        },
        "retries": {
            "active": pool.retries_active,
            "total": pool.retries_total,
            "refused_total": pool.retries_refused,
        },
        "ejections": {
            "ejected": sum(b.ejected for b in pool.backends),
            "total": ejected,
            "held_total": held,
        },
    }


def backend_protection(pool: Pool, backend: Backend) -> dict[str, Any]:
    """
    The ejection and slow-start fields of C{backend}'s status: whether it is
    ejected and until when, how often it was, and its weight now (below its
    weight while a slow start ramps it up).
    """
    return {
        "ejected": backend.ejected,
        "ejected_until": backend.ejected_until,
        "ejections_total": backend.ejections_total,
        "effective_weight": pool.weight_of(backend),
    }


def protection_metrics(pools: Iterable[Pool]) -> Iterator[Metric]:
    """
    The protection metrics of C{pools}.
    """
    waiting = GaugeMetricFamily(
        "rproxy_pool_queue_waiting",
        "Requests (HTTP) or connections (TCP) waiting in the pool's queue "
        "for a backend to have room under its max_connections.",
        labels=["pool"],
    )
    queue = CounterMetricFamily(
        "rproxy_pool_queue_total",
        "What came to the pool's queue, by outcome: queued (joined it), "
        "served (a backend took it), timeout (refused with 503 after "
        "queue_timeout), full (refused with 503 at once: queue_max waited).",
        labels=["pool", "outcome"],
    )
    retries_active = GaugeMetricFamily(
        "rproxy_pool_retries_active",
        "Requests or connections retrying another backend now (what the "
        "retry budget counts).",
        labels=["pool"],
    )
    retries = CounterMetricFamily(
        "rproxy_pool_retries_total",
        "Requests or connections that retried another backend after a "
        "failure, by outcome: made, or refused by the retry budget (the "
        "failure went to the client).",
        labels=["pool", "outcome"],
    )
    ejections = CounterMetricFamily(
        "rproxy_pool_ejections_total",
        "Backends ejected for their 5xx responses, by outcome: ejected, or "
        "held (the max_ejection cap, or the last backend left, kept it in).",
        labels=["pool", "outcome"],
    )
    ejected = GaugeMetricFamily(
        "rproxy_backend_ejected",
        "1 while the backend is ejected for its 5xx responses.",
        labels=["pool", "backend"],
    )
    weight = GaugeMetricFamily(
        "rproxy_backend_effective_weight",
        "The backend's weight now: below its weight during a slow start.",
        labels=["pool", "backend"],
    )
    for pool in pools:
        name = pool.name
        counts = pool.queue
        waiting.add_metric([name], len(counts))
        queue.add_metric([name, "queued"], counts.queued_total)
        queue.add_metric([name, "served"], counts.served_total)
        queue.add_metric([name, "timeout"], counts.timeouts_total)
        queue.add_metric([name, "full"], counts.full_total)
        retries_active.add_metric([name], pool.retries_active)
        retries.add_metric([name, "made"], pool.retries_total)
        retries.add_metric([name, "refused"], pool.retries_refused)
        total, held = _detector_counts(pool)
        ejections.add_metric([name, "ejected"], total)
        ejections.add_metric([name, "held"], held)
        for backend in pool.backends:
            labels = [name, backend.name]
            ejected.add_metric(labels, int(backend.ejected))
            weight.add_metric(labels, pool.weight_of(backend))
    yield from (waiting, queue, retries_active, retries, ejections, ejected, weight)
