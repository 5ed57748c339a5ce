"""What a cache holds for one stored response: L{StoredResponse}."""

from __future__ import annotations

from attrs import define, field

__all__ = ["Fields", "StoredResponse"]

#: header fields as the codec has them: (name, value) byte pairs, names in
#: the case they were received in.
Fields = list[tuple[bytes, bytes]]


@define(slots=True, eq=False)
class StoredResponse:
    """
    One stored response (one variant of one cache key).

    @ivar key: the primary cache key (scheme, authority and target of the
        request, as L{rproxy.cache} builds it).
    @ivar vary: the lower-cased field names the response's C{Vary} lists,
        in order.
    @ivar variant: the normalised values of those fields in the request
        that caused the response (C{None} for a field the request lacked).
    @ivar status: the response status.
    @ivar reason: its reason phrase.
    @ivar headers: the stored response header fields (hop-by-hop fields and
        those named by C{Connection} already gone).
    @ivar request_time: when the request that caused it was sent upstream
        (seconds, the clock's).
    @ivar response_time: when its response head was received.
    @ivar length: the body's length in bytes.
    @ivar body: the body, or C{None} where only the disk tier holds it.
    @ivar trailers: trailer fields that came after the body.
    """

    key: bytes
    vary: tuple[bytes, ...]
    variant: tuple[bytes | None, ...]
    status: int
    reason: bytes
    headers: Fields
    request_time: float
    response_time: float
    length: int
    body: bytes | None = None
    trailers: Fields = field(factory=list)

    @property
    def size(self) -> int:
        """
        Bytes this entry costs a memory store: body, fields and a fixed
        overhead for the objects around them.
        """
        fields = sum(len(n) + len(v) + 64 for n, v in self.headers)
        return (len(self.body) if self.body is not None else 0) + fields + 512
