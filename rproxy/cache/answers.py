"""What a cache answers from a stored response (RFC 9111 §4): the status,
fields and part of the body for one request, given the request's
preconditions and range.  Pure functions; the body is sliced by the caller
when it has it (a disk tier reads it later).

The answer's fields are the stored ones with C{Age} set to the current age
(C{Date} is never rewritten) and this cache's C{Cache-Status} member
appended; it never holds framing fields (the caller frames the body)."""

from __future__ import annotations

import math
from collections.abc import Sequence, Set

from attrs import frozen

from rproxy.cache.conditional import (
    PRECONDITIONS,
    evaluate,
    if_range_holds,
    not_modified_headers,
)
from rproxy.cache.control import field_values
from rproxy.cache.entry import StoredResponse
from rproxy.cache.ranges import UNSATISFIABLE, byte_range
from rproxy.cache.status import FIELD

__all__ = ["Answer", "answer", "served_headers"]

Fields = list[tuple[bytes, bytes]]

_REPLACED = frozenset({b"age", b"content-length", b"transfer-encoding"})


@frozen
class Answer:
    """
    A response built from a stored one.

    @ivar span: the first and last byte of the stored body it carries
        (C{None}: no body).
    @ivar length: the body length its C{Content-Length} states (also for a
        HEAD request, which gets no body), or C{None} for a status that has
        no body (304).
    """

    status: int
    reason: bytes
    headers: Fields
    span: tuple[int, int] | None
    length: int | None

    @property
    def needs_body(self) -> bool:
        """Whether some of the stored body is sent."""
        return self.span is not None

    def cut(self, body: bytes) -> bytes:
        """The part of the stored C{body} this answer carries."""
        if self.span is None:
            return b""
        first, last = self.span
        return body[first : last + 1]


def served_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    The stored fields a response from the cache carries, before its C{Age}
    and C{Cache-Status}: all but those and the framing fields.
    """
    return [f for f in headers if f[0].lower() not in _REPLACED]


def answer(
    entry: StoredResponse,
    method: bytes,
    request_headers: Sequence[tuple[bytes, bytes]],
    age: float,
    cache_status: bytes,
    names: Set[bytes] | None = None,
) -> Answer:
    """
    The answer to a C{method} request with C{request_headers} from C{entry},
    whose current age is C{age}.

    @param names: the lower-case names of C{request_headers}, if known (to
        skip looking for fields the request does not have).
    """
    stored = served_headers(entry.headers)
    stored.append((b"Age", b"%d" % max(0, math.floor(age))))
    stored.append((FIELD, cache_status))
    condition = None
    if names is None or not names.isdisjoint(PRECONDITIONS):
        condition = evaluate(method, request_headers, entry.headers)
    if condition == 304:
        return Answer(304, b"Not Modified", not_modified_headers(stored), None, None)
    if condition == 412:
        return Answer(412, b"Precondition Failed", [(FIELD, cache_status)], None, 0)
    length = entry.length
    head_only = method == b"HEAD"
    ranges = (
        field_values(request_headers, b"range")
        if names is None or b"range" in names
        else None
    )
    if (
        ranges
        and method == b"GET"
        and entry.status == 200
        and if_range_holds(request_headers, entry.headers)
    ):
        wanted = byte_range(ranges[0], length)
        if wanted == UNSATISFIABLE:
            fields = [f for f in stored if f[0].lower() != b"content-type"]
            fields.append((b"Content-Range", b"bytes */%d" % length))
            return Answer(416, b"Range Not Satisfiable", fields, None, 0)
        if isinstance(wanted, tuple):
            first, last = wanted
            stored.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, length)))
            return Answer(
                206, b"Partial Content", stored, (first, last), last - first + 1
            )
    span = None if head_only or length == 0 else (0, length - 1)
    return Answer(entry.status, entry.reason, stored, span, length)
