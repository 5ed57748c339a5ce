"""Rate limits: GCRA per key (L{rproxy.limits.gcra}), the keys requests are
counted under (L{rproxy.limits.keys}), a named limiter with its counters and
optional shared Redis store (L{rproxy.limits.limiter},
L{rproxy.limits.redis}).  The HTTP filter that applies one is
L{rproxy.http.filters.limits.RateLimit}."""
