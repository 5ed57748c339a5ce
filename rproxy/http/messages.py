"""The heads rproxy sends: a request head for a backend and a response head
for a client, built from what was received.  Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.headers import (
    ForwardingPolicy,
    forward_request_headers,
    forward_response_headers,
)

__all__ = [
    "header",
    "request_head",
    "response_head",
    "response_trailers",
    "switching_head",
]

Headers = Sequence[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> bytes | None:
    """
    The first value of the field called C{name} (lowercase), or None.
    """
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def request_head(
    head: RequestHead,
    target: bytes,
    *,
    backend_address: bytes,
    client_ip: str,
    scheme: bytes,
    policy: ForwardingPolicy,
) -> bytes:
    """
    The HTTP/1.1 head to send a backend for C{head}, with C{target} (the
    route may have stripped a prefix) and the forwarding fields.  Whatever
    Content-Length and Transfer-Encoding fields the client sent are replaced
    by one canonical field for the body as the proxy sends it, so a backend
    can never read the framing differently from the proxy.
    """
    upgrade = head.upgrade is not None
    headers = forward_request_headers(
        head.headers,
        client_ip=client_ip,
        scheme=scheme,
        host=head.host,
        policy=policy,
        backend_host=None if policy.preserve_host else backend_address,
        keep_upgrade=upgrade,
    )
    if head.host is None and policy.preserve_host:
        headers.insert(0, (b"Host", backend_address))
    lines = [head.method + b" " + target + b" HTTP/1.1"]
    if head.body == "none" and head.content_length is None:
        # The client sent no framing field (parsing would have noted it).
        lines.extend(map(b": ".join, headers))
    else:
        lines.extend(
            name + b": " + value
            for name, value in headers
            if name.lower() not in _FRAMING
        )
    if head.body == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
    elif head.content_length is not None:
        lines.append(b"Content-Length: %d" % head.content_length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
#: fields that may never travel as trailers (framing, routing, forwarding).
_NOT_TRAILERS = _FRAMING | frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
    | {b"forwarded", b"via", b"connection", b"te", b"trailer", b"upgrade"}
)


def response_trailers(trailers: Headers) -> list[tuple[bytes, bytes]]:
    """
    The trailer fields of a response that may be passed to a client.
    """
    return [
        (name, value)
        for name, value in forward_response_headers(trailers)
        if name.lower() not in _NOT_TRAILERS
    ]


def response_head(
    head: ResponseHead, request: RequestHead, *, keep_alive: bool
) -> tuple[bytes, bool, bool]:
    """
    The HTTP/1.1 head to send the client for a final response whose fields
    have been forwarded (hop-by-hop fields removed).  A body of unknown
    length (C{"close"}) is chunked for an HTTP/1.1 client; a chunked one
    keeps the backend's Transfer-Encoding field (it may name codings before
    C{chunked}); an HTTP/1.0 client gets neither, and the connection closes
    after the body.

    @param keep_alive: whether the client connection may stay open.
    @return: the head, whether the body must be chunked on the way out, and
        whether the client connection stays open after this response.
    """
    http11 = request.version >= (1, 1)
    chunk_out = False
    body = head.body
    if body == "chunked" or body == "close":
        if http11:
            chunk_out = True
        else:
            # HTTP/1.0 has no chunked coding: send the payload and close.
            keep_alive = False
    lines = [b"HTTP/1.1 %d %s" % (head.status, head.reason)]
    if body == "close" or (body == "chunked" and not http11):
        lines.extend(
            name + b": " + value
            for name, value in head.headers
            if name.lower() != b"transfer-encoding"
        )
        if chunk_out:
            lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.extend(map(b": ".join, head.headers))
    if not keep_alive:
        lines.append(b"Connection: close")
    elif not http11:
        lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n", chunk_out, keep_alive


def switching_head(head: ResponseHead) -> bytes:
    """
    The 101 head to send the client; its fields were forwarded keeping
    Upgrade and Connection.
    """
    lines = [b"HTTP/1.1 101 %s" % (head.reason or b"Switching Protocols")]
    lines.extend(name + b": " + value for name, value in head.headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"
