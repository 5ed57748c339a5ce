"""A shared HTTP cache (RFC 9111): the rules as pure functions, the stores
(memory and disk), and the L{rproxy.http.filters.cache} filter that puts
them between a route's requests and its backends."""
