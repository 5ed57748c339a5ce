"""Stored responses for the store tests."""

from __future__ import annotations

from rproxy.cache.entry import Fields, StoredResponse


def stored(
    key: bytes = b"https://example.com/",
    body: bytes = b"hello",
    *,
    variant: tuple[bytes | None, ...] = (),
    vary: tuple[bytes, ...] | None = None,
    headers: Fields | None = None,
    response_time: float = 100.0,
) -> StoredResponse:
    """
    A 200 response for C{key} with C{body}; C{variant} gives values of as
    many made-up C{Vary} fields, unless C{vary} names them.
    """
    if vary is None:
        vary = tuple(b"x-vary-%d" % i for i in range(len(variant)))
    return StoredResponse(
        key=key,
        vary=vary,
        variant=variant,
        status=200,
        reason=b"OK",
        headers=[(b"Content-Type", b"text/plain")] if headers is None else headers,
        request_time=response_time - 0.5,
        response_time=response_time,
        length=len(body),
        body=body,
    )
