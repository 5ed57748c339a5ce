"""A shared HTTP cache (RFC 9111): the rules as pure functions, the stores
(memory and disk), and the L{rproxy.http.filters.cache} filter that puts
them between a route's requests and its backends.

The rules: L{rproxy.cache.control} (directives, targeted fields),
L{rproxy.cache.dates}, L{rproxy.cache.storing} (what may be stored, which
fields), L{rproxy.cache.freshness} (lifetime, Age, stale serving),
L{rproxy.cache.variants} (Vary), L{rproxy.cache.invalidation},
L{rproxy.cache.conditional} (revalidation, 304 merging, preconditions),
L{rproxy.cache.ranges}, L{rproxy.cache.answers} (a response built from a
stored one), L{rproxy.cache.status} (Cache-Status) and L{rproxy.cache.keys}.
At run time: L{rproxy.cache.shared.Cache} (one named cache: settings from
L{rproxy.cache.settings}, store, counters), L{rproxy.cache.coalescing} and
L{rproxy.cache.request} (what the filter keeps per request)."""
