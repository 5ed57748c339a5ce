"""The running rate limits (C{[limits.NAME]}): built from the config, kept
across a reload when their settings did not change (so their counts and
counters carry on), their Redis stores connected while the proxy runs and
shared by every limit naming the same server; and the filters a listener's
or a route's C{limit} key stands for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, gatherResults

from rproxy.config._limits import LimitConfig
from rproxy.http.filters.limits import RateLimit
from rproxy.http.routing import Route
from rproxy.limits.limiter import Limiter
from rproxy.limits.store import RedisAddress, RedisStore

__all__ = ["RunningLimits", "limit_filters", "route_with_limits"]


def limit_filters(
    names: Sequence[str], limiters: Mapping[str, Limiter]
) -> tuple[RateLimit, ...]:
    """
    The filters applying the limits C{names}, in order.
    """
    return tuple(RateLimit(limiters[name]) for name in names)


def route_with_limits(route: Route, limiters: Mapping[str, Limiter]) -> Route:
    """
    C{route} with the filters of its C{limit} key before its own (before a
    cache too: a refused request is not served from it).
    """
    if not route.limit:
        return route
    filters: tuple[Any, ...] = limit_filters(route.limit, limiters)
    return evolve(route, filters=filters + route.filters)


class RunningLimits:
    """
    The limiters of the config in use, by name, and the Redis stores they
    share, by address.

    L{prepare} makes the limiters a new config needs (keeping those whose
    settings are unchanged); L{commit} puts them in use once the whole
    config is applied, connecting new stores (if running) and closing
    those no limit uses any more.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.limiters: dict[str, Limiter] = {}
        self.stores: dict[RedisAddress, RedisStore] = {}
        self.running = False
        self._configs: dict[str, LimitConfig] = {}
        self._closing: set[Deferred[Any]] = set()

    def prepare(self, configs: Sequence[LimitConfig]) -> dict[str, Limiter]:
        """
        The limiters for C{configs}: the running one where its settings did
        not change, a new one otherwise.  Nothing connects yet.
        """
        prepared = {}
        stores = dict(self.stores)
        for config in configs:
            running = self.limiters.get(config.name)
            if running is not None and self._configs.get(config.name) == config:
                prepared[config.name] = running
            else:
                prepared[config.name] = self._build(config, stores)
        return prepared

    def _build(
        self, config: LimitConfig, stores: dict[RedisAddress, RedisStore]
    ) -> Limiter:
        store = None
        if config.store is not None:
            store = stores.get(config.store)
            if store is None:
                store = stores[config.store] = RedisStore(config.store, self.reactor)
        return Limiter(
            config.name,
            config.rate,
            config.burst,
            clock=self.reactor,
            key=config.key,
            mode=config.mode,
            store=store,
            fail=config.fail,
            max_keys=config.max_keys,
            headers=config.headers,
        )

    def commit(
        self, configs: Sequence[LimitConfig], limiters: Mapping[str, Limiter]
    ) -> list[str]:
        """
        Use C{limiters} (from L{prepare}) from now on.

        @return: what changed, for the log.
        """
        changes = []
        for name in self.limiters:
            if limiters.get(name) is not self.limiters[name]:
                changes.append(
                    f"limit {name} " + ("changed" if name in limiters else "removed")
                )
        if self.limiters:
            changes += [
                f"limit {name} added" for name in limiters if name not in self.limiters
            ]
        stores = {}
        for limiter in limiters.values():
            if limiter.store is not None:
                stores[limiter.store.address] = limiter.store
        for address, store in self.stores.items():
            if stores.get(address) is not store:
                self._stop(store)
        if self.running:
            for address, store in stores.items():
                if self.stores.get(address) is not store:
                    store.start()
        # In place: the admin interface holds this dict.
        self.limiters.clear()
        self.limiters.update(limiters)
        self.stores = stores
        self._configs = {config.name: config for config in configs}
        return changes

    def start(self) -> None:
        """
        Connect the stores (when the proxy starts).
        """
        self.running = True
        for store in self.stores.values():
            store.start()

    def _stop(self, store: RedisStore) -> None:
        if not self.running:
            return
        stopping = store.stop()
        self._closing.add(stopping)
        stopping.addBoth(lambda _: self._closing.discard(stopping))

    def stop(self) -> Deferred[Any]:
        """
        Disconnect the stores (at shutdown); fires once they are closed.
        """
        for store in self.stores.values():
            self._stop(store)
        self.running = False
        return gatherResults(list(self._closing), consumeErrors=True)
