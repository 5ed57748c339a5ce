"""Prometheus metrics: a collector that reads the live counters of every
listener, pool and backend each time it is scraped.

prometheus-client does the exposition format (escaping, histogram buckets,
C{_total} suffixes); the counters themselves stay where traffic updates them
(L{rproxy.backends.Backend}, L{rproxy.stats.ListenerStats}), so nothing here
runs on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from rproxy.admin._h2_metrics import http2_metrics
from rproxy.admin._protection import protection_metrics
from rproxy.admin._status import listener_counters, listener_kind, refusals
from rproxy.backends import BackendState, Pool
from rproxy.service._auth import auth_filters
from rproxy.service._listeners import ListenerService
from rproxy.service._rules import live_rule_sets
from rproxy.stats import STATUS_CLASSES

__all__ = ["ProxyCollector", "metrics_registry"]

_LISTENER = ["listener"]
_BACKEND = ["pool", "backend"]


class ProxyCollector(Collector):
    """
    Collects rproxy's metrics from the pools C{pools()} returns and the
    listeners in C{listeners}, both looked up at every scrape.
    """

    def __init__(
        self,
        pools: Callable[[], Iterable[Pool]],
        listeners: Mapping[str, ListenerService],
        caches: Mapping[str, Any] | None = None,
        *,
        limits: Mapping[str, Any] | None = None,
        discovery: Mapping[str, Any] | None = None,
    ) -> None:
        self._pools = pools
        self._discovery = discovery if discovery is not None else {}
        self._listeners = listeners
        self._caches = caches if caches is not None else {}
        self._limits = limits if limits is not None else {}

    def collect(self) -> Iterator[Metric]:
        yield from self._listener_metrics()
        yield from http2_metrics(self._listeners)
        yield self._refusal_metrics()
        yield from self._backend_metrics(list(self._pools()))
        yield from protection_metrics(list(self._pools()))
        yield from self._rule_metrics()
        yield from self._cache_metrics()
        yield self._auth_metrics()
        yield from self._limit_metrics()
        yield from self._discovery_metrics()

    def _auth_metrics(self) -> Metric:
        counted = CounterMetricFamily(
            "rproxy_forward_auth_total",
            "Requests a route's forward auth decided, by outcome: allowed (a "
            "2xx, or a remembered one), cached (allowed from a remembered "
            "2xx; also counted in allowed), denied (the auth service's 401, "
            "403 or 3xx passed on), errors (any other answer, no answer or a "
            "timeout: 503).",
            labels=[*_LISTENER, "route", "outcome"],
        )
        for name, service in list(self._listeners.items()):
            for route, found in auth_filters(service):
                for outcome, count in found.counters.items():
                    counted.add_metric([name, route, outcome], count)
        return counted

    def _cache_metrics(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "rproxy_cache_events_total",
            "What a cache did with requests, by event: hit (a fresh stored "
            "response), miss, stale (served stale), revalidated (a 304 "
            "refreshed a stored response), bypass (not for the cache), "
            "pass (hit-for-pass), collapsed (waited for another's fetch), "
            "lock_timeout, stored, refresh (background), invalidated, purged.",
            labels=["cache", "event"],
        )
        held = GaugeMetricFamily(
            "rproxy_cache_bytes",
            "Bytes of responses a cache holds, by tier.",
            labels=["cache", "tier"],
        )
        objects = GaugeMetricFamily(
            "rproxy_cache_objects",
            "Responses a cache holds, by tier.",
            labels=["cache", "tier"],
        )
        for name, cache in list(self._caches.items()):
            snapshot = cache.snapshot()
            for event, count in cache.counters.items():
                events.add_metric([name, event], count)
            for tier in ("memory", "disk"):
                held.add_metric([name, tier], snapshot.get(f"{tier}_bytes", 0))
                objects.add_metric([name, tier], snapshot.get(f"{tier}_objects", 0))
        yield from (events, held, objects)

    def _limit_metrics(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "rproxy_limit_requests_total",
            "Requests a rate limit checked, by outcome: allowed (let on, at "
            "once or after being held), delayed (of those, held first), "
            "rejected (429, or 503 with its store down and fail = closed), "
            "fallback (checked without the shared store: it was unreachable).",
            labels=["limit", "outcome"],
        )
        held = GaugeMetricFamily(
            "rproxy_limit_held_requests",
            "Requests a delay-mode rate limit holds now.",
            labels=["limit"],
        )
        keys = GaugeMetricFamily(
            "rproxy_limit_keys",
            "Keys a rate limit holds in this process's memory.",
            labels=["limit"],
        )
        for name, limiter in list(self._limits.items()):
            for outcome, count in limiter.counters().items():
                decisions.add_metric([name, outcome], count)
            held.add_metric([name], limiter.held)
            keys.add_metric([name], len(limiter.local))
        yield from (decisions, held, keys)

    def _listener_metrics(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "rproxy_listener_info",
            "A listener's protocol (http, tcp or sni); the value is always 1.",
            labels=[*_LISTENER, "protocol"],
        )
        connections = CounterMetricFamily(
            "rproxy_listener_connections_total",
            "Client connections accepted.",
            labels=_LISTENER,
        )
        active = GaugeMetricFamily(
            "rproxy_listener_connections_active",
            "Client connections open now.",
            labels=_LISTENER,
        )
        requests = CounterMetricFamily(
            "rproxy_listener_requests_total",
            "HTTP requests answered, by the class of the status sent "
            '("none": the client was sent no response).',
            labels=[*_LISTENER, "code"],
        )
        received = CounterMetricFamily(
            "rproxy_listener_received_bytes_total",
            "Body (HTTP) or stream (TCP) bytes received from clients, counted "
            "as each request or connection ends.",
            labels=_LISTENER,
        )
        sent = CounterMetricFamily(
            "rproxy_listener_sent_bytes_total",
            "Body (HTTP) or stream (TCP) bytes sent to clients, counted as "
            "each request or connection ends.",
            labels=_LISTENER,
        )
        body_timeouts = CounterMetricFamily(
            "rproxy_listener_request_body_timeouts_total",
            "HTTP requests answered 408 while their body was read, by reason "
            '("idle": nothing came for the body timeout; "slow": it came '
            "under the listener's minimum rate).",
            labels=[*_LISTENER, "reason"],
        )
        for name, service in list(self._listeners.items()):
            stats = service.factory.stats
            total, open_now, _ = listener_counters(service)
            info.add_metric([name, listener_kind(service)], 1)
            connections.add_metric([name], total)
            active.add_metric([name], open_now)
            for code, count in zip(STATUS_CLASSES, stats.requests, strict=True):
                requests.add_metric([name, code], count)
            received.add_metric([name], stats.bytes_in)
            sent.add_metric([name], stats.bytes_out)
            body_timeouts.add_metric([name, "idle"], stats.request_body_timeouts)
            body_timeouts.add_metric([name, "slow"], stats.request_body_too_slow)
        yield from (info, connections, active, requests, received, sent, body_timeouts)

    def _refusal_metrics(self) -> Metric:
        refused = CounterMetricFamily(
            "rproxy_listener_refused_total",
            "Connections refused as they arrived, by reason (full: "
            "max_connections; per_ip: max_connections_per_ip; rate: "
            "accept_rate_per_ip; denied: the allow or deny list; fds: no file "
            "descriptor to spare), and requests a route's allow or deny list "
            "answered 403 (route_denied).",
            labels=[*_LISTENER, "reason"],
        )
        for name, service in list(self._listeners.items()):
            for reason, count in refusals(service).items():
                refused.add_metric([name, reason], count)
        return refused

    def _backend_metrics(self, pools: list[Pool]) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            "rproxy_pool_backends",
            "Backends of a pool in each state.",
            labels=["pool", "state"],
        )
        state = GaugeMetricFamily(
            "rproxy_backend_state",
            "1 for the state a backend is in (what new traffic sees), 0 for "
            "the others.",
            labels=[*_BACKEND, "state"],
        )
        healthy = GaugeMetricFamily(
            "rproxy_backend_healthy",
            "1 if health checks and traffic say the backend works, whatever "
            "its admin state.",
            labels=_BACKEND,
        )
        weight = GaugeMetricFamily(
            "rproxy_backend_weight", "The backend's weight.", labels=_BACKEND
        )
        active = GaugeMetricFamily(
            "rproxy_backend_connections_active",
            "Connections (TCP) or requests (HTTP) to the backend in flight.",
            labels=_BACKEND,
        )
        connections = CounterMetricFamily(
            "rproxy_backend_connections_total",
            "Connections (TCP) or requests (HTTP) sent to the backend.",
            labels=_BACKEND,
        )
        requests = CounterMetricFamily(
            "rproxy_backend_requests_total",
            "HTTP requests sent to the backend, by the class of its response "
            '("none": it sent none).',
            labels=[*_BACKEND, "code"],
        )
        failures = CounterMetricFamily(
            "rproxy_backend_failures_total",
            "Connects refused or timed out, resets, bad or late responses.",
            labels=_BACKEND,
        )
        sent = CounterMetricFamily(
            "rproxy_backend_sent_bytes_total",
            "Bytes sent to the backend (request bodies, TCP streams).",
            labels=_BACKEND,
        )
        received = CounterMetricFamily(
            "rproxy_backend_received_bytes_total",
            "Bytes received from the backend (response bodies, TCP streams).",
            labels=_BACKEND,
        )
        changed = GaugeMetricFamily(
            "rproxy_backend_state_change_timestamp_seconds",
            "When the backend's state last changed.",
            labels=_BACKEND,
        )
        check_ok = GaugeMetricFamily(
            "rproxy_backend_health_check_success",
            "1 if the last active health check passed, 0 if it failed.",
            labels=_BACKEND,
        )
        check_at = GaugeMetricFamily(
            "rproxy_backend_health_check_timestamp_seconds",
            "When the last active health check ended.",
            labels=_BACKEND,
        )
        check_duration = GaugeMetricFamily(
            "rproxy_backend_health_check_duration_seconds",
            "How long the last active health check took.",
            labels=_BACKEND,
        )
        latency = HistogramMetricFamily(
            "rproxy_backend_upstream_latency_seconds",
            "Time from sending a request to the backend to its response head.",
            labels=_BACKEND,
        )
        for pool in pools:
            in_state = dict.fromkeys(BackendState, 0)
            for backend in pool.backends:
                labels = [pool.name, backend.name]
                current = backend.state
                in_state[current] += 1
                for each in BackendState:
                    state.add_metric([*labels, each.value], int(each is current))
                healthy.add_metric(labels, int(backend.healthy))
                weight.add_metric(labels, backend.weight)
                active.add_metric(labels, backend.active)
                connections.add_metric(labels, backend.connections_total)
                for code, count in zip(STATUS_CLASSES, backend.responses, strict=True):
                    requests.add_metric([*labels, code], count)
                failures.add_metric(labels, backend.failures_total)
                sent.add_metric(labels, backend.bytes_in)
                received.add_metric(labels, backend.bytes_out)
                changed.add_metric(labels, backend.changed_at)
                if backend.last_check_at is not None:
                    check_ok.add_metric(labels, int(bool(backend.last_check_ok)))
                    check_at.add_metric(labels, backend.last_check_at)
                if backend.last_check_duration is not None:
                    check_duration.add_metric(labels, backend.last_check_duration)
                histogram = backend.latency
                latency.add_metric(
                    labels,
                    [
                        (floatToGoString(bound), count)
                        for bound, count in histogram.cumulative()
                    ],
                    histogram.sum,
                )
            for each, count in in_state.items():
                members.add_metric([pool.name, each.value], count)
        yield from (
            members,
            state,
            healthy,
            weight,
            active,
            connections,
            requests,
            failures,
            sent,
            received,
            changed,
            check_ok,
            check_at,
            check_duration,
            latency,
        )

    def _rule_metrics(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "rproxy_rule_hits_total",
            "Requests a request rule matched (a log rule's are dry-run hits).",
            labels=["rules", "rule", "action"],
        )
        held = GaugeMetricFamily(
            "rproxy_rules_tarpit_held",
            "Requests a rule set's tarpit rules hold now.",
            labels=["rules"],
        )
        overflows = CounterMetricFamily(
            "rproxy_rules_tarpit_overflows_total",
            "Requests a tarpit rule dropped at once: the set held its most.",
            labels=["rules"],
        )
        for rule_set in live_rule_sets(self._listeners):
            for rule in rule_set.rules:
                hits.add_metric(
                    [rule_set.name, rule.name, rule.action], rule.stats.hits
                )
            held.add_metric([rule_set.name], rule_set.tarpit.held)
            overflows.add_metric([rule_set.name], rule_set.tarpit.overflows)
        yield from (hits, held, overflows)

    def _discovery_metrics(self) -> Iterator[Metric]:
        queries = CounterMetricFamily(
            "rproxy_discovery_queries_total",
            "Rounds of DNS queries for a discovering pool's backends, by "
            "outcome (ok, or failed: NXDOMAIN, SERVFAIL, timeouts, no records).",
            labels=["pool", "outcome"],
        )
        changes = CounterMetricFamily(
            "rproxy_discovery_changes_total",
            "DNS answers that changed a discovering pool's backends.",
            labels=["pool"],
        )
        backends = GaugeMetricFamily(
            "rproxy_discovery_backends",
            "Backends of a discovering pool from its last DNS answer in use.",
            labels=["pool"],
        )
        for pool, state in list(self._discovery.items()):
            queries.add_metric([pool, "ok"], state.queries - state.failures)
            queries.add_metric([pool, "failed"], state.failures)
            changes.add_metric([pool], state.changes)
            backends.add_metric([pool], len(state.backends))
        yield from (queries, changes, backends)


def metrics_registry(collector: ProxyCollector) -> CollectorRegistry:
    """
    A registry of its own holding C{collector} only (never the process-wide
    default registry, which other code may fill).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
