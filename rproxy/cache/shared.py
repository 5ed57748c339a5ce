"""One named shared cache at run time: L{Cache} holds its settings, its
store, its clock, its counters and its coalescing table, and answers the
questions the cache filter asks (which stored variant, how fresh) and the
admin's (purge, counters)."""

from __future__ import annotations

import builtins
import weakref
from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from rproxy.cache.answers import served_headers
from rproxy.cache.coalescing import Coalescer
from rproxy.cache.control import Directives, Policy, response_policy
from rproxy.cache.entry import Fields, StoredResponse
from rproxy.cache.freshness import (
    Verdict,
    corrected_initial_age,
    freshness_lifetime,
    judge,
    stale_if_error_window,
)
from rproxy.cache.keys import url_key
from rproxy.cache.settings import CacheSettings
from rproxy.cache.status import item
from rproxy.cache.variants import vary_matches

__all__ = ["COUNTERS", "Cache", "Facts", "Store"]

#: the counters a cache keeps, as L{Cache.snapshot} names them.
COUNTERS = (
    "hit",
    "miss",
    "stale",
    "bypass",
    "revalidated",
    "stored",
    "collapsed",
    "lock_timeout",
    "pass",
    "refresh",
    "invalidated",
    "purged",
)


class Store(Protocol):
    """
    What a cache keeps its responses in (the memory and disk tiers of
    L{rproxy.cache.store}); for L{Cache.snapshot} it also has C{bytes} and
    C{objects}, or C{memory_bytes}, C{disk_bytes}, C{memory_objects} and
    C{disk_objects}.
    """

    max_object: int

    def variants(self, key: builtins.bytes) -> list[StoredResponse]:
        """The stored variants of C{key}, most recent first."""

    def body(self, entry: StoredResponse) -> builtins.bytes | Deferred[builtins.bytes]:
        """The body of C{entry}, at once or when the disk tier read it."""

    def put(self, entry: StoredResponse) -> object:
        """Store C{entry}, replacing the same key and variant."""

    def update(
        self,
        entry: StoredResponse,
        headers: Fields,
        *,
        request_time: float | None = None,
        response_time: float | None = None,
    ) -> StoredResponse | None:
        """
        After a 304: C{entry}'s fields are now C{headers}, and its times
        those given; the updated response (the store owns what it holds:
        C{entry} itself is not changed), or C{None} if it no longer holds it.
        """

    def touch(self, entry: StoredResponse) -> None:
        """C{entry} was just used (for the least-recently-used order)."""

    def remove(self, entry: StoredResponse) -> object:
        """Drop C{entry}."""

    def purge(self, key: builtins.bytes) -> int:
        """Drop every variant of C{key}; how many there were."""

    def purge_prefix(self, prefix: builtins.bytes) -> int:
        """Drop every entry whose key starts with C{prefix}; how many."""


class Facts:
    """
    What a stored response's fields say, worked out once per fields.

    @ivar served: the fields a hit is answered with, before its C{Age} and
        C{Cache-Status} (those and the framing fields left out).
    @ivar revalidate: the response must be revalidated on every use (an
        unqualified C{no-cache}).
    """

    __slots__ = (
        "headers",
        "initial_age",
        "lifetime",
        "policy",
        "revalidate",
        "served",
    )

    def __init__(
        self, headers: Fields, policy: Policy, lifetime: float, initial_age: float
    ) -> None:
        self.headers = headers
        self.policy = policy
        self.lifetime = lifetime
        self.initial_age = initial_age
        self.served = served_headers(headers)
        self.revalidate = (
            b"no-cache" in policy and policy.directives[b"no-cache"] is None
        )


class Cache:
    """
    One named cache: what routes with C{cache = NAME} share.

    @param name: the config's name for it.
    @param settings: its rules.
    @param store: where its responses are kept.
    @param clock: the time (seconds since the epoch: HTTP dates are
        compared with it).
    @ivar counters: per name in L{COUNTERS}, how often it happened.
    @ivar coalescer: the fetches under way and the hit-for-pass marks.
    """

    def __init__(
        self, name: str, settings: CacheSettings, store: Store, clock: IReactorTime
    ) -> None:
        self.name = name
        self.settings = settings
        self.store = store
        self.clock = clock
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: the cache was closed (a reload dropped it).
        self.closed = False
        #: how a fresh hit's Cache-Status begins (its ttl follows).
        self.hit_status = (item(settings.status_name) + "; hit; ttl=").encode("latin-1")
        self.coalescer = Coalescer(
            clock, settings.lock_timeout, settings.hit_for_pass, self.count
        )
        self._facts: weakref.WeakKeyDictionary[StoredResponse, Facts] = (
            weakref.WeakKeyDictionary()
        )

    def count(self, name: str, n: int = 1) -> None:
        """Add C{n} to counter C{name}."""
        self.counters[name] += n

    @property
    def max_object(self) -> int:
        """The largest body this cache stores."""
        return min(self.settings.max_object, self.store.max_object)

    def lookup(
        self, key: builtins.bytes, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[StoredResponse | None, bool]:
        """
        The stored variant of C{key} a request with C{request_headers}
        selects (the most recent that matches), and whether C{key} has
        any variant at all.
        """
        variants = self.store.variants(key)
        for entry in variants:
            if vary_matches(entry.vary, entry.variant, request_headers):
                return entry, True
        return None, bool(variants)

    def policy(self, entry: StoredResponse) -> Policy:
        """The directives that govern C{entry}."""
        return self._facts_of(entry).policy

    def facts(self, entry: StoredResponse) -> Facts:
        """What C{entry}'s fields say (worked out once per fields)."""
        return self._facts_of(entry)

    def _facts_of(self, entry: StoredResponse) -> Facts:
        facts = self._facts.get(entry)
        if facts is None or facts.headers is not entry.headers:
            headers = entry.headers
            policy = response_policy(headers, self.settings.targets)
            lifetime = freshness_lifetime(
                entry.status, headers, policy, self.settings, entry.response_time
            )
            initial = corrected_initial_age(
                headers, entry.request_time, entry.response_time
            )
            facts = self._facts[entry] = Facts(headers, policy, lifetime, initial)
        return facts

    def age(self, entry: StoredResponse, now: float) -> float:
        """C{entry}'s current age at C{now}."""
        initial = self._facts_of(entry).initial_age
        return initial + max(0.0, now - entry.response_time)

    def judge(self, entry: StoredResponse, request: Directives, now: float) -> Verdict:
        """What a request with directives C{request} may do with C{entry}."""
        facts = self._facts_of(entry)
        age = facts.initial_age + max(0.0, now - entry.response_time)
        return judge(facts.policy, facts.lifetime, age, request, self.settings)

    def may_serve_on_error(
        self, entry: StoredResponse, request: Directives, now: float
    ) -> bool:
        """
        Whether C{entry} may be served in place of a backend's failure
        (fresh, or stale within its C{stale-if-error} window).
        """
        facts = self._facts_of(entry)
        staleness = self.age(entry, now) - facts.lifetime
        if staleness < 0:
            return True
        return staleness <= stale_if_error_window(facts.policy, request, self.settings)

    def invalidate(self, keys: Sequence[builtins.bytes]) -> int:
        """Drop the stored responses of C{keys}; how many there were."""
        dropped = sum(self.store.purge(key) for key in keys)
        self.count("invalidated", dropped)
        return dropped

    def purge(self, url: str | builtins.bytes) -> int:
        """
        Drop the stored responses of C{url} (an absolute URL, or a cache
        key); how many there were.
        """
        key = url_key(url) or (url.encode("latin-1") if isinstance(url, str) else url)
        dropped = self.store.purge(key)
        self.count("purged", dropped)
        return dropped

    def purge_prefix(self, prefix: str | builtins.bytes) -> int:
        """
        Drop the stored responses whose URL starts with C{prefix}; how many.
        """
        raw = prefix.encode("latin-1") if isinstance(prefix, str) else prefix
        dropped = self.store.purge_prefix(url_key(raw) or raw)
        self.count("purged", dropped)
        return dropped

    def snapshot(self) -> dict[str, int]:
        """
        The counters, and the bytes and objects the store holds.
        """
        out = dict(self.counters)
        store = self.store
        for name in ("bytes", "objects"):
            # A tiered store counts each tier; another store in all.
            tiers = [f"{tier}_{name}" for tier in ("memory", "disk")]
            if all(hasattr(store, tier) for tier in tiers):
                for tier in tiers:
                    out[tier] = int(getattr(store, tier))
            else:
                out[name] = int(getattr(store, name, 0))
        out["fetching"] = len(self.coalescer.fetches)
        return out

    def close(self) -> None:
        """Release every request waiting for a fetch (the cache goes)."""
        self.closed = True
        self.coalescer.close()
