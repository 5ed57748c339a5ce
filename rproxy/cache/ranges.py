"""Byte ranges (RFC 9110 §14) served from a complete stored response.

Decisions worth knowing: one satisfiable range is answered 206 with
C{Content-Range}; a C{Range} no range of which overlaps the body is 416
with C{Content-Range: bytes */length}; a request for several ranges, a
unit other than C{bytes}, a malformed C{Range} or an empty body is
answered with the whole 200 (a server may ignore C{Range}), as multipart
byteranges are not worth their cost in a cache.
"""

from __future__ import annotations

import re

__all__ = ["UNSATISFIABLE", "byte_range"]

#: what L{byte_range} returns for a range outside the body.
UNSATISFIABLE = "unsatisfiable"

_SPEC = re.compile(rb"([0-9]*)-([0-9]*)")


def byte_range(value: bytes, length: int) -> tuple[int, int] | str | None:
    """
    The first and last byte offsets C{Range: value} asks of a body of
    C{length} bytes; L{UNSATISFIABLE}; or C{None} to ignore the field.
    """
    unit, _, specs = value.strip().partition(b"=")
    if unit.strip().lower() != b"bytes" or length <= 0:
        return None
    items = [item.strip(b" \t") for item in specs.split(b",") if item.strip(b" \t")]
    if len(items) != 1:
        return None
    m = _SPEC.fullmatch(items[0])
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0:
            return UNSATISFIABLE
        return max(0, length - suffix), length - 1
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None
    if first >= length:
        return UNSATISFIABLE
    last = int(m[2]) if m[2] else length - 1
    return first, min(last, length - 1)
