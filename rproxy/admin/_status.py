"""What the admin interface shows: every listener, pool and backend as plain
data (the JSON status; the HTML page renders the same), and the per-second
rates worked out from samples of the counters.

Pools, backends and listeners are looked up when a snapshot is taken, never
kept, so that a config reload (which adds and removes them) shows at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from rproxy.admin._protection import backend_protection, pool_protection
from rproxy.backends import Backend, Pool
from rproxy.service._listeners import ListenerService
from rproxy.stats import STATUS_CLASSES, ListenerStats

__all__ = ["RateSampler", "Snapshot", "listener_kind", "refusals", "snapshot"]

#: what a rate is kept under: ("listener", name) or ("backend", pool, name).
RateKey = tuple[str, ...]
Snapshot = dict[str, Any]


def listener_kind(service: ListenerService) -> str:
    """
    C{http}, C{sni} or C{tcp}: what the listener's factory proxies.
    """
    protocol: str = service.factory.describe().protocol
    return protocol


def listener_counters(service: ListenerService) -> tuple[int, int, int]:
    """
    A listener's (connections accepted, connections open now, requests
    answered).
    """
    factory = service.factory
    stats: ListenerStats = factory.stats
    active = len(factory.connections)
    return stats.connections_closed + active, active, sum(stats.requests)


def refusals(service: ListenerService) -> dict[str, int]:
    """
    A listener's refusals by reason: those of L{REFUSALS}, and C{fds}
    (closed at accept for want of file descriptors).
    """
    counts = dict(service.factory.stats.refused)
    counts["fds"] = service.refused
    return counts


class RateSampler:
    """
    Per-second rates of connections and requests, from counter samples.

    Each L{sample} records the counters and sets every rate to the growth
    since the previous sample over the time between the two (by
    C{clock}).  A counter that shrank (a listener or backend replaced by a
    reload) counts from zero.  Something first seen has no rate until the
    next sample.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._previous: dict[RateKey, tuple[int, int]] = {}
        self._at: float | None = None
        self.rates: dict[RateKey, tuple[float, float]] = {}

    def sample(
        self, pools: Iterable[Pool], listeners: Mapping[str, ListenerService]
    ) -> None:
        """
        Read the counters of C{pools}' backends and of C{listeners} now.
        """
        counters: dict[RateKey, tuple[int, int]] = {}
        for name, service in list(listeners.items()):
            total, _, requests = listener_counters(service)
            counters[("listener", name)] = (total, requests)
        for pool in pools:
            for backend in pool.backends:
                counters[("backend", pool.name, backend.name)] = (
                    backend.connections_total,
                    sum(backend.responses),
                )
        now = self._clock.seconds()
        at, previous = self._at, self._previous
        if at is not None and now > at:
            elapsed = now - at
            rates = {}
            for key, values in counters.items():
                before = previous.get(key)
                if before is not None:
                    rates[key] = (
                        _growth(values[0], before[0]) / elapsed,
                        _growth(values[1], before[1]) / elapsed,
                    )
            self.rates = rates
        self._previous, self._at = counters, now

    def rate(self, key: RateKey) -> tuple[float | None, float | None]:
        """
        (connections, requests) per second of C{key}, None before two
        samples.
        """
        return self.rates.get(key, (None, None))


def _growth(now: int, before: int) -> int:
    return now - before if now >= before else now


def _classes(counts: list[int]) -> dict[str, int]:
    return dict(zip(STATUS_CLASSES, counts, strict=True))


def backend_status(backend: Backend, now: float) -> dict[str, Any]:
    """
    One backend's state, settings and counters, as the JSON status shows it
    (its rates are added by L{snapshot}).

    @param now: the time ages are counted to (the clock of the pool's
        timestamps).
    """
    checked_at = backend.last_check_at
    last_check = None
    if checked_at is not None:
        last_check = {
            "ok": backend.last_check_ok,
            "at": checked_at,
            "age": max(now - checked_at, 0.0),
            "duration": backend.last_check_duration,
        }
    return {
        "name": backend.name,
        "address": backend.address,
        "state": backend.state.value,
        "admin": backend.admin.value,
        "healthy": backend.healthy,
        "weight": backend.weight,
        "backup": backend.backup,
        "max_connections": backend.max_connections,
        "active": backend.active,
        "connections_total": backend.connections_total,
        "requests_total": sum(backend.responses),
        "responses": _classes(backend.responses),
        "failures_total": backend.failures_total,
        "bytes_in": backend.bytes_in,
        "bytes_out": backend.bytes_out,
        "state_since": backend.changed_at,
        "state_age": max(now - backend.changed_at, 0.0),
        "reason": backend.reason,
        "last_check": last_check,
    }


def pool_status(
    pool: Pool, now: float, rates: RateSampler, discovery: Any = None
) -> dict[str, Any]:
    """
    One pool and its backends, with their rates, and C{discovery} (its
    L{rproxy.discovery.DiscoveryState}; None: its backends are the file's):
    where its backends come from, when DNS last answered, when it is asked
    next and the last error.
    """
    backends = []
    for backend in pool.backends:
        entry = backend_status(backend, now)
        entry.update(backend_protection(pool, backend))
        entry["connections_per_second"], entry["requests_per_second"] = rates.rate(
            ("backend", pool.name, backend.name)
        )
        backends.append(entry)
    return {
        "name": pool.name,
        "balancer": type(pool.balancer).__name__,
        "backends": backends,
        **pool_protection(pool),
        "discovery": None if discovery is None else discovery.as_json(),
    }


def listener_status(
    name: str, service: ListenerService, rates: RateSampler
) -> dict[str, Any]:
    """
    One listener's address, kind, pools and counters, with its rates.

    C{pool} is where traffic no route claims goes (None if nowhere);
    C{pools} every pool the listener's routes name.
    C{request_body_timeouts} and C{request_body_too_slow} count the HTTP
    requests answered 408 because the client left too long between two
    reads of its body, or sent it under the listener's minimum rate.
    C{refused_full}, C{refused_per_ip}, C{refused_rate}, C{refused_denied}
    and C{refused_fds} count the connections refused as they arrived (see
    L{rproxy.admission}), C{refused_route_denied} the requests a route's
    address lists answered 403.  C{http2} (HTTP listeners that speak
    HTTP/2) counts its HTTP/2 connections and streams (L{rproxy.http.h2.stats.H2Stats}).
    """
    factory = service.factory
    serves = factory.describe()
    stats: ListenerStats = factory.stats
    total, active, requests = listener_counters(service)
    bound = service.bound
    host, port = getattr(bound, "host", None), getattr(bound, "port", None)
    connections_rate, requests_rate = rates.rate(("listener", name))
    return {
        "name": name,
        "listen": service.description,
        "address": f"{host}:{port}" if host is not None else None,
        "protocol": serves.protocol,
        "tls": service.tls is not None,
        "pool": serves.pool,
        "pools": list(serves.pools),
        "active": active,
        "connections_total": total,
        "connections_per_second": connections_rate,
        "requests_total": requests,
        "requests_per_second": requests_rate,
        "requests": _classes(stats.requests),
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "request_body_timeouts": stats.request_body_timeouts,
        "request_body_too_slow": stats.request_body_too_slow,
        **{f"refused_{reason}": count for reason, count in refusals(service).items()},
        **_http2(factory),
    }


def _http2(factory: Any) -> dict[str, Any]:
    # Only for listeners that speak HTTP/2 (or did before a reload).
    h2_stats = getattr(factory, "h2_stats", None)
    settings = getattr(factory, "settings", None)
    if h2_stats is None or (
        getattr(settings, "http2", None) is None and not h2_stats.connections
    ):
        return {}
    return {"http2": h2_stats.as_dict()}


def snapshot(
    pools: Iterable[Pool],
    listeners: Mapping[str, ListenerService],
    rates: RateSampler,
    now: float,
    discovery: Mapping[str, Any] | None = None,
) -> Snapshot:
    """
    Everything the status page shows, as JSON-ready data.
    """
    return {
        "time": now,
        "listeners": [
            listener_status(name, service, rates)
            for name, service in list(listeners.items())
        ],
        "pools": [
            pool_status(pool, now, rates, (discovery or {}).get(pool.name))
            for pool in pools
        ],
    }
