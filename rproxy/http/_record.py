"""What an ended HTTP exchange leaves behind: its counts in the listener's
and the backend's counters, and its access event."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final

from rproxy.accesslog import access_events
from rproxy.http.messages import header
from rproxy.stats import LATENCY_BUCKETS, NO_RESPONSE

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["count", "emit"]

#: the index of C{5xx} in L{rproxy.stats.STATUS_CLASSES}.
_5XX: Final = 4


def count(exchange: Exchange) -> None:
    """
    Add C{exchange} to its listener's and its backend's counters.
    """
    # Inlined status_class and LatencyHistogram.observe: once per request.
    status = exchange.status
    index = (
        status // 100 - 1
        if type(status) is int and 100 <= status < 600
        else NO_RESPONSE
    )
    stats = exchange.factory.stats
    stats.requests[index] += 1
    bytes_in, bytes_out = exchange.bytes_in, exchange.bytes_out
    stats.bytes_in += bytes_in
    stats.bytes_out += bytes_out
    backend = exchange.backend
    if backend is None:
        return
    backend.bytes_in += bytes_in
    backend.bytes_out += bytes_out
    upstream_time = exchange.upstream_time
    if upstream_time is None:
        backend.responses[NO_RESPONSE] += 1
        return
    backend.responses[index] += 1
    if index == _5XX:
        outlier = exchange.pool.outlier if exchange.pool is not None else None
        if outlier is not None:
            outlier.five_xx(backend)
    latency = backend.latency
    latency.counts[bisect_left(LATENCY_BUCKETS, upstream_time)] += 1
    latency.sum += upstream_time


def emit(exchange: Exchange) -> None:
    """
    Emit C{exchange}'s access event, if anyone records them.
    """
    if not access_events.active:
        return
    request = exchange.request
    pool, backend = exchange.pool, exchange.backend
    notes = exchange._notes
    access_events.emit(
        "{client} {method} {path} {status}",
        client=exchange.client,
        listener=exchange.settings.listener,
        protocol="http",
        method=request.method.decode("latin-1") if request else None,
        path=request.target.decode("latin-1") if request else None,
        version=f"HTTP/{request.version[0]}.{request.version[1]}" if request else None,
        status=exchange.status,
        bytes_in=exchange.bytes_in,
        bytes_out=exchange.bytes_out,
        pool=pool.name if pool else None,
        backend=backend.name if backend else None,
        upstream_time=exchange.upstream_time,
        duration=exchange.clock.seconds() - exchange.started,
        referer=header(request.headers, b"referer") if request else None,
        user_agent=header(request.headers, b"user-agent") if request else None,
        # What answered instead of the backend, when a filter (or the pool's
        # queue or retry budget) refused it.
        refused_by=notes.get("refused_by") if notes else None,
    )
