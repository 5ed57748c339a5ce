"""The C{[caches.NAME]} tables and a route's C{cache} key: sizes with units,
defaults, a disk tier relative to the file, and each mistake refused with
its file and key."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import CacheConfig, Config, ConfigError, DiskTierConfig, parse_config
from rproxy.config._validate import byte_size

HTTP = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
path_prefix = "/assets/"
pool = "web"
cache = "static"
"""


def parse(text: str, source: str = "/etc/rproxy/c.toml") -> Config:
    return parse_config(tomllib.loads(text), source)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_cache_with_sizes_and_disk_tier() -> None:
    """Sizes take binary and decimal units; the disk path is relative to
    the config file; the route names its cache."""
    config = parse(
        HTTP
        + """
[caches.static]
memory = "256MiB"
max_object = "8MiB"
disk = { path = "cache/static", size = "10GiB" }
default_ttl = 30
lock_timeout = 2.5
"""
    )
    assert config.caches == (
        CacheConfig(
            "static",
            256 << 20,
            8 << 20,
            DiskTierConfig("/etc/rproxy/cache/static", 10 << 30),
            30.0,
            2.5,
        ),
    )
    assert config.listeners[0].routes[0].cache == "static"


def test_cache_defaults() -> None:
    """An empty cache table takes the stated defaults: 64 MiB in memory,
    8 MiB objects, no disk tier, no default TTL, a 5 s lock."""
    (cache,) = parse(HTTP + "[caches.static]\n").caches
    assert cache == CacheConfig("static")
    assert (cache.memory, cache.max_object, cache.disk) == (64 << 20, 8 << 20, None)
    assert (cache.default_ttl, cache.lock_timeout) == (0.0, 5.0)


@pytest.mark.parametrize(
    ("value", "size"),
    [(1, 1), ("512KiB", 512 << 10), ("1GB", 10**9), (" 7 B ", 7), ("3TiB", 3 << 40)],
)
def test_byte_sizes(value: object, size: int) -> None:
    """A size is a positive integer or a number with a unit."""
    assert byte_size(value) == size


@pytest.mark.parametrize("value", [0, -1, "0MiB", "1.5GiB", "12 parsecs", True, ""])
def test_bad_byte_sizes(value: object) -> None:
    """Zero, negatives, fractions, unknown units and non-numbers are
    refused."""
    with pytest.raises(ValueError, match="must be a size in bytes"):
        byte_size(value)


def test_unknown_cache_named_by_a_route() -> None:
    """A route naming a cache that does not exist is refused, with the
    caches there are."""
    text = HTTP.replace('cache = "static"', 'cache = "statik"') + "[caches.static]\n"
    assert errors(text) == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].cache: no cache named "
        "'statik'; did you mean 'static'?"
    ]


def test_route_cache_without_any_cache() -> None:
    """Naming a cache with no [caches] at all says so."""
    assert errors(HTTP) == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].cache: no cache named "
        "'static'; there is no [caches.NAME]"
    ]


def test_cache_mistakes_name_file_and_key() -> None:
    """A bad size, an object cap above the memory, a disk table without a
    size and an unknown key are each reported under their key."""
    found = errors(
        HTTP
        + """
[caches.static]
memory = "1MiB"
max_object = "2MiB"
disk = { path = "d" }
ttl = 3
lock_timeout = "soon"
"""
    )
    assert found == [
        "/etc/rproxy/c.toml: caches.static.ttl: unknown key; known keys are "
        "'memory', 'max_object', 'disk', 'default_ttl', 'lock_timeout'",
        "/etc/rproxy/c.toml: caches.static.max_object: is larger than memory "
        "(2097152 > 1048576 bytes): no response that size could be held",
        "/etc/rproxy/c.toml: caches.static.disk.size: missing required key",
        "/etc/rproxy/c.toml: caches.static.lock_timeout: must be a positive "
        "number, got 'soon'",
    ]


def test_caches_must_be_a_table_of_tables() -> None:
    """C{caches = 3} is refused."""
    assert errors("caches = 3\n" + HTTP.replace('cache = "static"\n', "")) == [
        "/etc/rproxy/c.toml: caches: must be a table of named caches, as [caches.NAME]"
    ]
