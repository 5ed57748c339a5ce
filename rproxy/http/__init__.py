"""HTTP reverse proxying: the HTTP/1.1 codec (L{rproxy.http.h1}), one
exchange per request (L{rproxy.http.exchange}), the filters between request
and response (L{rproxy.http.filters}), routing, the backend connections and
their keep-alive pool, and the pure decision code they use (framing, header
rewriting)."""
