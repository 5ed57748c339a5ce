"""The shared HTTP cache (RFC 9111) as a filter: L{CacheFilter} puts one
L{Cache} between a route's requests and its backends.

GET and HEAD requests are looked up by scheme, C{Host} and the client's
request-target; a fresh stored response (or one a client's C{max-stale}
accepts) is answered locally, as a 304 / 412 where the client's
preconditions say so and as a 206 for one byte range; a stale one is
revalidated with the stored validators (a 304 updates it and its body is
served, the backend connection kept), or served while it is refreshed in
the background (C{stale-while-revalidate}), or served in place of a 5xx or
a failed backend (C{stale-if-error}).  A miss is forwarded without the
client's validators and its response teed into the store as it streams to
the client (never past the cache's C{max_object}); concurrent misses wait
for it.  A miss with C{Range} is passed through as it is and not stored, so
a client seeking in a large file is never made to wait for all of it.
Every response through the cache gets a C{Cache-Status} member; unsafe
requests invalidate what they changed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rproxy._fastwrite import Data
from rproxy.cache.answers import Answer, answer
from rproxy.cache.coalescing import ABANDONED, ERROR, UNCACHEABLE, Fetch
from rproxy.cache.conditional import (
    revalidation_headers,
    without_validators,
)
from rproxy.cache.entry import StoredResponse
from rproxy.cache.freshness import Use
from rproxy.cache.invalidation import SAFE_METHODS, invalidated_keys, invalidates
from rproxy.cache.keys import cache_key
from rproxy.cache.request import RequestState, request_directives
from rproxy.cache.shared import Cache
from rproxy.cache.status import FIELD, CacheStatus
from rproxy.cache.variants import vary_matches
from rproxy.http.exchange import Phase
from rproxy.http.filters import HTTPFilter, LocalReply, Step
from rproxy.http.filters._cache_store import (
    begin_store,
    in_place,
    revalidated,
    store_response,
    uncacheable,
)
from rproxy.http.framing import RequestHead, ResponseHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["NOTE", "REFRESH", "Cache", "CacheFilter"]

log = Logger(namespace="rproxy.cache")

#: the exchange note holding the filter's state for the request.
NOTE = "rproxy.cache"
#: the note that makes a request a background refresh (the L{Fetch} it
#: leads).
REFRESH = "rproxy.cache.refresh"

Fields = list[tuple[bytes, bytes]]

_LOOKED_UP = (b"GET", b"HEAD")
#: statuses a backend's failure may be hidden behind (RFC 5861 §4).
_ERRORS = frozenset({500, 502, 503, 504})
#: request fields the cache's own fetch of a whole response leaves out.
_RANGE = frozenset({b"range", b"if-range"})
_DONE = Phase.DONE
#: request fields that take a GET off the fast way to a fresh hit (each
#: needs the full rules: directives, credentials, ranges, preconditions).
_NOT_PLAIN = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"authorization",
        b"range",
        b"if-range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
    }
)


class CacheFilter(HTTPFilter):
    """
    Caches a route's responses in C{cache} (see the module docstring).
    """

    name = "cache"

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    # Requests ---------------------------------------------------------

    def request_head(self, exchange: Exchange, head: RequestHead) -> Step:
        if head.method == b"GET" and head.upgrade is None:
            for name, _ in head.headers:
                if name.lower() in _NOT_PLAIN:
                    break
            else:
                hit = self._fresh_hit(exchange, head)
                if hit is not None:
                    return hit
        cache = self.cache
        key = cache_key(exchange.settings.scheme, head.host, head.target)
        headers = head.headers
        names = frozenset([name.lower() for name, _ in headers])
        state = RequestState(key, head.method, headers, names, cache.clock.seconds())
        notes = exchange.notes
        notes[NOTE] = state
        if head.method not in _LOOKED_UP or head.upgrade is not None:
            state.unsafe = head.method not in SAFE_METHODS
            state.status.fwd = "method" if head.upgrade is None else "bypass"
            cache.count("bypass")
            return None
        state.directives = request_directives(headers, names)
        refresh = notes.get(REFRESH)
        if refresh is not None:
            return self._refresh(head, state, refresh)
        return self._lookup(exchange, head, state, None)

    def _fresh_hit(self, exchange: Exchange, head: RequestHead) -> LocalReply | None:
        """
        The answer to a plain GET (no directives, credentials, ranges or
        preconditions) from a fresh response held in memory, or None for
        the full rules: what most hits are, the same answer as those rules
        give, for a fraction of their cost.
        """
        if REFRESH in exchange.notes:
            return None
        cache = self.cache
        key = cache_key(exchange.settings.scheme, head.host, head.target)
        for entry in cache.store.variants(key):
            if entry.vary and not vary_matches(entry.vary, entry.variant, head.headers):
                continue
            body = entry.body
            if body is None:
                return None  # on disk only: the full rules read it
            facts = cache.facts(entry)
            if facts.revalidate:
                return None
            age = facts.initial_age + max(
                0.0, cache.clock.seconds() - entry.response_time
            )
            ttl = facts.lifetime - age
            if ttl <= 0:
                return None
            cache.count("hit")
            cache.store.touch(entry)
            headers = list(facts.served)
            headers.append((b"Age", b"%d" % age))
            headers.append((FIELD, cache.hit_status + b"%d" % math.floor(ttl)))
            return LocalReply(entry.status, headers, body, entry.reason)
        return None

    def _lookup(
        self,
        exchange: Exchange,
        head: RequestHead,
        state: RequestState,
        waited: str | None,
    ) -> Step:
        if exchange.phase is _DONE:
            return None  # the client went away while it waited
        cache = self.cache
        now = cache.clock.seconds()
        entry, others = cache.lookup(state.key, state.client_headers)
        if entry is not None and b"authorization" in state.names:
            policy = cache.policy(entry)
            if not any(
                d in policy for d in (b"public", b"s-maxage", b"must-revalidate")
            ):
                entry, state.status.detail = None, "authorization"
        if entry is None:
            return self._miss(exchange, head, state, others, waited)
        verdict = cache.judge(entry, state.directives, now)
        use, status = verdict.use, state.status
        status.ttl = verdict.ttl
        if use is Use.FRESH or use is Use.STALE or use is Use.REFRESH:
            status.hit = True
            cache.count("hit" if use is Use.FRESH else "stale")
            if use is Use.REFRESH:
                self._refresh_later(exchange, head, state)
            return self._serve(exchange, head, state, entry, verdict.age)
        if (
            b"only-if-cached" in state.directives
            and self.cache.settings.client_directives
        ):
            return _gateway_timeout(state, self.cache)
        if (
            waited is None
            and cache.settings.lock
            and cache.coalescer.under_way(state.key)
        ):
            return self._wait(exchange, head, state)
        if waited == ERROR and cache.may_serve_on_error(entry, state.directives, now):
            status.hit, status.detail = True, "stale-if-error"
            cache.count("stale")
            return self._serve(exchange, head, state, entry, cache.age(entry, now))
        cache.count("miss")
        status.fwd = "stale" if verdict.ttl <= 0 else "request"
        self._fetch(head, state, entry)
        return None

    def _miss(
        self,
        exchange: Exchange,
        head: RequestHead,
        state: RequestState,
        others: bool,
        waited: str | None,
    ) -> Step:
        cache = self.cache
        if b"only-if-cached" in state.directives and cache.settings.client_directives:
            return _gateway_timeout(state, cache)
        coalescer = cache.coalescer
        ranged = b"range" in state.names
        if (
            waited is None
            and not ranged
            and cache.settings.lock
            and coalescer.under_way(state.key)
            and not coalescer.passing(state.key)
        ):
            return self._wait(exchange, head, state)
        cache.count("miss")
        state.status.fwd = "vary-miss" if others else "uri-miss"
        if head.method == b"GET" and not ranged:
            self._fetch(head, state, None)
        return None

    def _fetch(
        self, head: RequestHead, state: RequestState, stale: StoredResponse | None
    ) -> None:
        """Forward the request as the cache's own fetch of a whole response."""
        cache, client = self.cache, state.client_headers
        state.store = head.method == b"GET"
        state.stale = stale
        state.request_time = cache.clock.seconds()
        if (
            state.store
            and cache.settings.lock
            and not cache.coalescer.passing(state.key)
        ):
            state.fetch = cache.coalescer.begin(state.key, state)
        fields = [f for f in client if f[0].lower() not in _RANGE]
        validating = revalidation_headers(fields, stale.headers) if stale else None
        state.revalidating = validating is not None
        head.headers = (
            validating if validating is not None else without_validators(fields)
        )
        state.check_client = len(head.headers) != len(client) or state.revalidating

    def _wait(self, exchange: Exchange, head: RequestHead, state: RequestState) -> Step:
        state.status.collapsed = True
        waiting = self.cache.coalescer.wait(state.key)
        return waiting.addCallback(
            lambda outcome: self._lookup(exchange, head, state, outcome)
        )

    def _refresh(self, head: RequestHead, state: RequestState, fetch: Fetch) -> Step:
        # A background refresh (stale-while-revalidate): revalidate, store.
        cache = self.cache
        state.background = True
        entry, _ = cache.lookup(state.key, state.client_headers)
        cache.coalescer.lead(fetch, state)
        state.fetch = fetch
        state.status.fwd = "stale"
        self._fetch(head, state, entry)
        state.fetch = fetch  # _fetch does not begin another for the key
        return None

    def _refresh_later(
        self, exchange: Exchange, head: RequestHead, state: RequestState
    ) -> None:
        coalescer = self.cache.coalescer
        if coalescer.under_way(state.key):
            return
        try:
            from rproxy.http.subrequest import background_request
        except ImportError:  # an exchange without background requests
            return
        fetch = coalescer.begin(state.key)
        assert fetch is not None
        fields = without_validators(state.client_headers)
        request = RequestHead(b"GET", head.target, head.version, fields, host=head.host)
        self.cache.count("refresh")
        done = background_request(exchange, request, {REFRESH: fetch})
        done.addBoth(lambda _: coalescer.finish(fetch, ABANDONED))

    def _serve(
        self,
        exchange: Exchange,
        head: RequestHead,
        state: RequestState,
        entry: StoredResponse,
        age: float,
    ) -> LocalReply | Deferred[LocalReply | None]:
        cache = self.cache
        built = answer(
            entry,
            state.method,
            state.client_headers,
            age,
            state.status.render(cache.settings.status_name),
            state.names,
        )
        head_only = state.method == b"HEAD"
        if not built.needs_body and not (head_only and built.length):
            return _local(built, b"")
        if entry.body is not None:
            cache.store.touch(entry)
        body = entry.body if entry.body is not None else cache.store.body(entry)
        if isinstance(body, Deferred):

            def unreadable(failure: Any) -> Step:
                log.failure(
                    "cache {cache} could not read a body", failure, cache=cache.name
                )
                cache.store.remove(entry)
                return self._lookup(exchange, head, state, ERROR)

            return body.addCallbacks(
                lambda data: _local(built, data if head_only else built.cut(data)),
                unreadable,
            )
        return _local(built, body if head_only else built.cut(body))

    # Responses --------------------------------------------------------

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        state: RequestState | None = exchange.notes.get(NOTE)
        if state is None or head.status == 101:
            return
        cache = self.cache
        now = cache.clock.seconds()
        code, status = head.status, state.status
        if status.fwd is not None:
            status.fwd_status = code
        if state.unsafe:
            if invalidates(state.method, code):
                cache.invalidate(invalidated_keys(state.key, head.headers))
            self._mark(head, status)
            return
        stale, fetch = state.stale, state.fetch
        if code == 304 and stale is not None and state.revalidating:
            revalidated(cache, head, state, stale, now)
            return
        failed = getattr(exchange, "upstream_error", None) is not None
        if failed or code in _ERRORS:
            if fetch is not None:
                cache.coalescer.finish(fetch, ERROR)
            if stale is not None and cache.may_serve_on_error(
                stale, state.directives, now
            ):
                cache.count("stale")
                status.detail = "stale-if-error"
                in_place(cache, head, state, stale, cache.age(stale, now))
                return
            if failed:
                state.store = False
        if state.store:
            begin_store(cache, head, state, now)
        elif fetch is not None:
            cache.coalescer.finish(fetch, UNCACHEABLE)
        self._mark(head, status)

    def _mark(self, head: ResponseHead, status: CacheStatus) -> None:
        head.headers.append((FIELD, status.render(self.cache.settings.status_name)))

    def response_body(self, exchange: Exchange, data: Data) -> Data:
        state: RequestState | None = exchange.notes.get(NOTE)
        if state is None:
            return data
        tee = state.tee
        if tee is not None and not tee.feed(data):
            state.tee = None
            uncacheable(self.cache, state)
        return b"" if state.replace is not None else data

    def response_end(
        self, exchange: Exchange, trailers: list[tuple[bytes, bytes]]
    ) -> Data | Deferred[Data]:
        state: RequestState | None = exchange.notes.get(NOTE)
        if state is None:
            return b""
        if state.tee is not None:
            store_response(self.cache, state, trailers)
        replace = state.replace
        if replace is None or not replace[0].needs_body:
            return b""
        built, entry = replace
        if entry.body is not None:
            return built.cut(entry.body)
        body = self.cache.store.body(entry)
        if isinstance(body, Deferred):
            return body.addCallback(built.cut)
        return built.cut(body)


def _local(built: Answer, body: bytes) -> LocalReply:
    return LocalReply(built.status, built.headers, body, built.reason)


def _gateway_timeout(state: RequestState, cache: Cache) -> LocalReply:
    # only-if-cached and nothing usable stored (RFC 9111 §5.2.1.7).
    state.status.detail = "only-if-cached"
    return LocalReply(
        504,
        [(FIELD, state.status.render(cache.settings.status_name))],
        b"504 Gateway Timeout\n",
    )
