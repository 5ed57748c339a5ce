"""The HTTP/2 metrics of the HTTP listeners: requests by protocol version,
HTTP/2 connections and streams, resets and flood limits gone past."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rproxy.http.h2.stats import FLOODS

__all__ = ["http2_metrics"]


def http2_metrics(listeners: Mapping[str, Any]) -> Iterator[Metric]:
    """
    The HTTP/2 families for the HTTP listeners of C{listeners} (services
    whose factory has C{h2_stats}).
    """
    by_version = CounterMetricFamily(
        "rproxy_listener_requests_by_version_total",
        "Requests a listener answered, by HTTP version (HTTP/1.1 counts HTTP/1.0 too).",
        labels=["listener", "version"],
    )
    connections = CounterMetricFamily(
        "rproxy_listener_http2_connections_total",
        "Client connections that spoke HTTP/2.",
        labels=["listener"],
    )
    open_connections = GaugeMetricFamily(
        "rproxy_listener_http2_connections_active",
        "HTTP/2 client connections open now.",
        labels=["listener"],
    )
    streams = CounterMetricFamily(
        "rproxy_listener_http2_streams_total",
        "HTTP/2 streams clients opened.",
        labels=["listener"],
    )
    open_streams = GaugeMetricFamily(
        "rproxy_listener_http2_streams_active",
        "HTTP/2 streams under way now.",
        labels=["listener"],
    )
    resets = CounterMetricFamily(
        "rproxy_listener_http2_resets_total",
        "HTTP/2 streams reset: by the client, by rproxy (a malformed request, "
        "a backend failing mid-response), or stalled on a shut window.",
        labels=["listener", "by"],
    )
    floods = CounterMetricFamily(
        "rproxy_listener_http2_floods_total",
        "HTTP/2 connections closed for going past a flood limit.",
        labels=["listener", "limit"],
    )
    for name, service in list(listeners.items()):
        factory = service.factory
        h2 = getattr(factory, "h2_stats", None)
        if h2 is None:
            continue
        answered = sum(factory.stats.requests)
        by_version.add_metric([name, "HTTP/2"], h2.requests)
        by_version.add_metric([name, "HTTP/1.1"], max(answered - h2.requests, 0))
        connections.add_metric([name], h2.connections)
        open_connections.add_metric([name], h2.open_connections)
        streams.add_metric([name], h2.streams)
        open_streams.add_metric([name], h2.open_streams)
        resets.add_metric([name, "client"], h2.client_resets)
        resets.add_metric([name, "rproxy"], h2.stream_errors)
        resets.add_metric([name, "stalled"], h2.stalled)
        for limit in FLOODS:
            floods.add_metric([name, limit], h2.floods[limit])
    yield from (by_version, connections, open_connections, streams, open_streams)
    yield from (resets, floods)
