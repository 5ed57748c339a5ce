"""The C{[caches.NAME]} tables: named HTTP caches that routes opt into with
C{cache = "NAME"}."""

from __future__ import annotations

from attrs import field, frozen, validators

from rproxy.config._tls import _base, _path
from rproxy.config._validate import (
    Table,
    byte_size,
    non_negative_number,
    positive_number,
)

__all__ = ["CACHE_KEYS", "CacheConfig", "DiskTierConfig", "parse_caches"]

#: the keys of a C{[caches.NAME]} table.
CACHE_KEYS = ("memory", "max_object", "disk", "default_ttl", "lock_timeout")


@frozen
class DiskTierConfig:
    """
    A cache's disk tier: a directory of its own (made if missing) and the
    most bytes of bodies and heads it may hold there.
    """

    path: str
    size: int = field(validator=validators.gt(0))


@frozen
class CacheConfig:
    """
    One named cache.

    @ivar memory: bytes of responses held in memory (a least-recently-used
        store).
    @ivar max_object: the largest response stored; larger ones stream
        through uncached (by default 8 MiB, or C{memory} if smaller).
    @ivar disk: the optional second tier, which survives a restart.
    @ivar default_ttl: seconds of freshness for a response that gives none
        and that RFC 9111 lets a cache reuse heuristically; 0 for the RFC's
        own heuristic only (a tenth of the time since Last-Modified).
    @ivar lock_timeout: how long concurrent misses for one response wait
        for the first one's fetch before going to the backend themselves.
    """

    name: str
    memory: int = field(default=64 << 20, validator=validators.gt(0))
    max_object: int = field(default=8 << 20, validator=validators.gt(0))
    disk: DiskTierConfig | None = None
    default_ttl: float = field(default=0.0, validator=validators.ge(0.0))
    lock_timeout: float = field(default=5.0, validator=validators.gt(0.0))


def parse_caches(top: Table, source: str) -> dict[str, CacheConfig | None]:
    """
    The C{[caches.NAME]} tables of the file C{source}, by name (problems
    reported to C{top}; a broken cache is None, so that routes naming it
    are not reported too).
    """
    return top.named(
        "caches", "caches", CACHE_KEYS, lambda t, name: _cache(t, name, source)
    )


def _cache(table: Table, name: str, source: str) -> CacheConfig | None:
    found = len(table.problems.lines)
    defaults = CacheConfig(name)
    memory = table.get("memory", byte_size, defaults.memory)
    # Unless given, objects may be as large as 8 MiB or the whole memory.
    max_object = table.get("max_object", byte_size, min(defaults.max_object, memory))
    if max_object > memory:
        table.report(
            "max_object",
            f"is larger than memory ({max_object} > {memory} bytes): "
            "no response that size could be held",
        )
    disk = None
    if disk_table := table.table("disk", ("path", "size")):
        path = disk_table.require("path", _path(_base(source)))
        size = disk_table.require("size", byte_size)
        if path is not None and size is not None:
            disk = DiskTierConfig(path, size)
    default_ttl = table.get("default_ttl", non_negative_number, defaults.default_ttl)
    lock_timeout = table.get("lock_timeout", positive_number, defaults.lock_timeout)
    if len(table.problems.lines) != found:
        return None
    return CacheConfig(name, memory, max_object, disk, default_ttl, lock_timeout)
