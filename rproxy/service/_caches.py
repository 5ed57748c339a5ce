"""The running caches (C{[caches.NAME]}): built from the config, kept across
a reload when their settings did not change, their disk tiers opened once
the config is in use and closed when the cache goes; and the filters a
route's C{cache} and C{compress} keys stand for."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from rproxy.cache.memory import MemoryStore
from rproxy.cache.settings import CacheSettings
from rproxy.cache.shared import Cache
from rproxy.cache.store import TieredStore
from rproxy.config import CacheConfig
from rproxy.http.routing import Route

__all__ = ["RunningCaches", "build_cache", "route_with_filters"]

log = Logger(namespace="rproxy.cache")


def build_cache(config: CacheConfig, clock: Any) -> Cache:
    """
    A cache for C{config}, its memory tier ready (the disk tier, if any, is
    opened by L{RunningCaches.commit}).
    """
    settings = CacheSettings(
        max_object=config.max_object,
        lock_timeout=config.lock_timeout,
        default_ttl=config.default_ttl,
    )
    store = TieredStore(MemoryStore(config.memory), None, config.max_object)
    return Cache(config.name, settings, store, clock)


def route_with_filters(
    route: Route,
    caches: Mapping[str, Cache],
    auth: Callable[[Route], Any] | None = None,
) -> Route:
    """
    C{route} with the filters its C{auth}, C{cache} and C{compress} keys
    ask for before its own: forward auth first (an unauthorised request
    never reaches the cache), then the cache, so that it stores (and
    serves) what compression made, one variant per encoding.

    @param auth: gives a route with C{auth} its filter
        (L{rproxy.service._auth.RunningAuth.filter_for}).
    """
    extra: list[Any] = []
    if route.auth is not None:
        if auth is None:
            raise ValueError("a route with auth needs the running auth filters")
        extra.append(auth(route))
    if route.cache is not None:
        from rproxy.http.filters.cache import CacheFilter

        extra.append(CacheFilter(caches[route.cache]))
    if route.compress is not None:
        from rproxy.http.filters.compress import Compress

        extra.append(Compress(route.compress))
    if not extra:
        return route
    return evolve(route, filters=(*extra, *route.filters))


class RunningCaches:
    """
    The caches of the config in use, by name.

    L{prepare} makes those a new config needs (keeping those whose settings
    are unchanged); L{commit} puts them in use once the whole config is
    applied.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.caches: dict[str, Cache] = {}
        self._configs: dict[str, CacheConfig] = {}
        self._closing: set[Deferred[Any]] = set()
        #: the threads the disk tiers' file operations run in (their own,
        #: so that a slow disk does not hold up the reactor's DNS lookups).
        self._threads: ThreadPool | None = None

    def prepare(self, configs: Sequence[CacheConfig]) -> dict[str, Cache]:
        """
        The caches for C{configs}: the running one where its settings did
        not change, a new one otherwise.  Nothing is opened yet.
        """
        prepared = {}
        for config in configs:
            running = self.caches.get(config.name)
            if running is not None and self._configs.get(config.name) == config:
                prepared[config.name] = running
            else:
                prepared[config.name] = build_cache(config, self.reactor)
        return prepared

    def commit(
        self, configs: Sequence[CacheConfig], caches: Mapping[str, Cache]
    ) -> list[str]:
        """
        Use C{caches} (from L{prepare}) from now on: open the new ones' disk
        tiers, close those no longer used.

        @return: what changed, for the log.
        """
        changes = []
        by_name = {config.name: config for config in configs}
        for name, cache in self.caches.items():
            if caches.get(name) is not cache:
                self._close(cache)
                changes.append(
                    f"cache {name} " + ("changed" if name in caches else "removed")
                )
        for name, cache in caches.items():
            if self.caches.get(name) is cache:
                continue
            if name not in self.caches and self.caches:
                changes.append(f"cache {name} added")
            disk = by_name[name].disk
            if disk is not None:
                self._open_disk(cache, disk.path, disk.size)
        # In place: the admin interface holds this dict.
        self.caches.clear()
        self.caches.update(caches)
        self._configs = by_name
        return changes

    def _open_disk(self, cache: Cache, path: str, size: int) -> None:
        from rproxy.cache.disk import DiskStore

        store = cache.store
        assert isinstance(store, TieredStore)
        if self._threads is None:
            self._threads = ThreadPool(0, 4, "rproxy-cache-disk")
            self._threads.start()
        opening = DiskStore.open(path, size, self.reactor, self._threads)

        def opened(disk: DiskStore) -> None:
            if cache.closed:
                disk.close()
                return
            store.disk = disk
            log.info(
                "cache {cache}: disk tier {path} open, {objects} responses "
                "({size} bytes) kept from before",
                cache=cache.name,
                path=path,
                objects=disk.objects,
                size=disk.bytes,
            )

        def failed(failure: Any) -> None:
            log.failure(
                "cache {cache}: disk tier {path} cannot be used; memory only",
                failure,
                cache=cache.name,
                path=path,
            )

        opening.addCallbacks(opened, failed)

    def _close(self, cache: Cache) -> None:
        cache.close()
        store = cache.store
        if isinstance(store, TieredStore):
            closing = store.close()
            self._closing.add(closing)
            closing.addBoth(lambda _: self._closing.discard(closing))

    def close(self) -> Deferred[Any]:
        """
        Close every cache (at shutdown): fires once their disk tiers have
        written what they were writing.
        """
        for cache in self.caches.values():
            self._close(cache)
        self.caches.clear()
        self._configs = {}
        closed = gatherResults(list(self._closing), consumeErrors=True)
        threads, self._threads = self._threads, None

        def stop_threads(result: object) -> object:
            if threads is not None:
                threads.stop()
            return result

        return closed.addBoth(stop_threads)
