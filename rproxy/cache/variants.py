"""Negotiated responses (RFC 9111 §4.1): the fields a response's C{Vary}
names, the request's values of them normalised, and whether a stored
variant matches a request.  Pure functions.

Normalisation (what RFC 9111 §4.1 allows): field lines of one name are
combined, whitespace around list commas removed; values of the fields whose
values are case-insensitive (C{Accept}, C{Accept-Charset},
C{Accept-Language}, C{Accept-Encoding}) are lower-cased; C{Accept-Encoding}
becomes the sorted set of the codings it accepts (C{q=0} refuses one), so
C{br, gzip} and C{gzip;q=0.8, br} are one variant.  C{Vary: *} (anywhere in
the list) never matches: such a response is not stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["normalise", "request_variant", "vary_matches", "vary_names"]

Fields = Sequence[tuple[bytes, bytes]]

_CASELESS = frozenset(
    {b"accept", b"accept-charset", b"accept-language", b"accept-encoding"}
)
_LIST_SPACE = re.compile(rb"[ \t]*,[ \t]*")
_SPACE = re.compile(rb"[ \t]+")
_QVALUE = re.compile(rb"q=([0-9](?:\.[0-9]{0,3})?)")


def vary_names(headers: Fields) -> tuple[bytes, ...] | None:
    """
    The lower-case field names the C{Vary} fields of C{headers} list, in
    order, each once; C{None} for C{Vary: *}.
    """
    names: dict[bytes, None] = {}
    for key, value in headers:
        if key.lower() != b"vary":
            continue
        for item in value.split(b","):
            name = item.strip(b" \t").lower()
            if name == b"*":
                return None
            if name:
                names[name] = None
    return tuple(names)


def normalise(name: bytes, values: Sequence[bytes]) -> bytes | None:
    """
    The request's value of field C{name} (lower case) for matching, from
    its field lines C{values}; C{None} when it has none.
    """
    if not values:
        return None
    text = _LIST_SPACE.sub(b",", b",".join(v.strip(b" \t") for v in values))
    if name in _CASELESS:
        text = text.lower()
    if name == b"accept-encoding":
        return _codings(text)
    return _SPACE.sub(b" ", text)


def _codings(text: bytes) -> bytes:
    accepted = set()
    for item in text.split(b","):
        coding, *params = (p.strip(b" \t") for p in item.split(b";"))
        if not coding:
            continue
        q = 1.0
        for param in params:
            m = _QVALUE.fullmatch(param.replace(b" ", b""))
            if m is not None:
                q = float(m[1])
        if q > 0:
            accepted.add(coding)
    return b",".join(sorted(accepted))


def request_variant(vary: Sequence[bytes], headers: Fields) -> tuple[bytes | None, ...]:
    """
    The normalised values in request C{headers} of the fields C{vary} names.
    """
    if not vary:
        return ()
    lines: dict[bytes, list[bytes]] = {name: [] for name in vary}
    for key, value in headers:
        found = lines.get(key.lower())
        if found is not None:
            found.append(value)
    return tuple(normalise(name, lines[name]) for name in vary)


def vary_matches(
    vary: Sequence[bytes], variant: Sequence[bytes | None], headers: Fields
) -> bool:
    """
    Whether a request with C{headers} selects the stored variant whose
    response varied on C{vary} with the values C{variant}.
    """
    return request_variant(vary, headers) == tuple(variant)
