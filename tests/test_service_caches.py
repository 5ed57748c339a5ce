"""The service and the caches: a route's cache key puts the cache's filter
on it, a reload keeps a cache whose settings did not change (and what it
holds), and a changed or removed cache is closed."""

from __future__ import annotations

import tomllib

from twisted.internet.testing import MemoryReactorClock

from rproxy.cache.shared import Cache
from rproxy.config import Config, parse_config
from rproxy.http.filters.cache import CacheFilter
from rproxy.http.listener import HTTPProxyFactory
from rproxy.service import ProxyService
from tests.test_admin_caches import stored

CONFIG = """
[caches.static]
memory = "{memory}"

[pools.web]
backends = ["10.0.0.1:80"]

[[listeners]]
name = "public"
protocol = "http"
listen = "tcp:8080"
pool = "web"
[[listeners.routes]]
path_prefix = "/assets/"
pool = "web"
cache = "static"
"""


def parse(memory: str = "1MiB", text: str = CONFIG) -> Config:
    return parse_config(tomllib.loads(text.format(memory=memory)), "c.toml")


def route_cache(service: ProxyService) -> Cache:
    factory = service.listeners["public"].factory
    assert isinstance(factory, HTTPProxyFactory)
    (route,) = [r for r in factory.settings.router.routes if r.cache is not None]
    (cache_filter,) = [f for f in route.filters if isinstance(f, CacheFilter)]
    return cache_filter.cache


def test_route_gets_the_named_cache() -> None:
    """The route's filters hold a CacheFilter of the running cache."""
    service = ProxyService(parse(), MemoryReactorClock())
    cache = route_cache(service)
    assert cache is service.caches.caches["static"]
    assert cache.settings.max_object == 1 << 20  # at most the memory


def test_reload_keeps_an_unchanged_cache_and_its_responses() -> None:
    """A reload with the same cache settings keeps the cache object and
    what it stored; the new routes use it."""
    service = ProxyService(parse(), MemoryReactorClock())
    cache = route_cache(service)
    cache.store.put(stored(b"http://a.example/assets/x"))
    changes = service.apply(parse())
    assert route_cache(service) is cache
    assert len(cache.store.variants(b"http://a.example/assets/x")) == 1
    assert not cache.closed
    assert not [c for c in changes if c.startswith("cache")]


def test_reload_with_new_settings_replaces_and_closes_the_cache() -> None:
    """Changed settings make a new, empty cache; the old one is closed."""
    service = ProxyService(parse(), MemoryReactorClock())
    old = route_cache(service)
    old.store.put(stored(b"http://a.example/assets/x"))
    changes = service.apply(parse(memory="2MiB"))
    new = route_cache(service)
    assert new is not old and old.closed and not new.closed
    assert new.store.variants(b"http://a.example/assets/x") == []
    assert "cache static changed" in changes


def test_reload_without_the_cache_closes_it() -> None:
    """A cache the new config drops is closed and no longer listed."""
    service = ProxyService(parse(), MemoryReactorClock())
    old = route_cache(service)
    text = CONFIG.replace('cache = "static"\n', "").replace(
        '[caches.static]\nmemory = "{memory}"\n', ""
    )
    changes = service.apply(parse(text=text))
    assert old.closed
    assert service.caches.caches == {}
    assert "cache static removed" in changes
