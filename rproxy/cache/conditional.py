"""Conditional requests (RFC 9110 §13) in a cache: the request that
revalidates a stored response, a 304's fields merged into it (RFC 9111
§3.2, §4.3.4), and a client's preconditions evaluated against it (RFC 9110
§13.2.2) to answer 304 or 412 without the backend.  Pure functions.

Decisions worth knowing:

  - Revalidation sends C{If-None-Match} with the stored C{ETag} and
    C{If-Modified-Since} with the stored C{Last-Modified} (not C{Date}: a
    date the origin did not give as a validator may not match its clock);
    the client's own C{If-None-Match} / C{If-Modified-Since} are replaced.
  - A 304's fields replace the stored fields of the same names, except
    C{Content-Length} (and the framing fields, which are never stored) and
    those describing the stored content (C{ETag}, C{Content-Encoding},
    C{Content-Range}, C{Content-MD5}); C{Cache-Status} of a later cache is
    not kept.
  - Preconditions in RFC 9110 §13.2.2's order: C{If-Match}, else
    C{If-Unmodified-Since} (412 when false); then C{If-None-Match} (weak
    comparison), else C{If-Modified-Since} for GET and HEAD (304 when
    false).  A date precondition is only evaluated against a stored
    C{Last-Modified}.
"""

from __future__ import annotations

from collections.abc import Sequence

from rproxy.cache.control import field_values
from rproxy.cache.dates import parse_date

__all__ = [
    "PRECONDITIONS",
    "entity_tags",
    "evaluate",
    "if_range_holds",
    "merge_not_modified",
    "not_modified_headers",
    "revalidation_headers",
    "strong_match",
    "weak_match",
    "without_validators",
]

Fields = Sequence[tuple[bytes, bytes]]

#: the request fields that make a request conditional (If-Range aside).
PRECONDITIONS = frozenset(
    {b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since"}
)
_CLIENT_VALIDATORS = frozenset({b"if-none-match", b"if-modified-since"})
#: fields a 304 does not update: framing, and those describing the stored
#: content itself, which a 304 cannot change (RFC 9111 §3.2 lets a cache
#: keep them "to assure integrity of the stored response").
_NOT_UPDATED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"cache-status",
        b"content-encoding",
        b"content-range",
        b"content-md5",
        b"etag",
    }
)
#: representation metadata a 304 need not carry (RFC 9110 §15.4.5).
_NOT_IN_304 = frozenset(
    {b"content-length", b"content-type", b"content-range", b"transfer-encoding"}
)


def entity_tags(values: Sequence[bytes]) -> list[bytes] | None:
    """
    The entity-tags of C{If-Match} / C{If-None-Match} field values, each
    with its C{W/} prefix if it has one; C{None} for C{*}.  Tags that do
    not parse are left out.
    """
    tags: list[bytes] = []
    for value in values:
        i, text = 0, value
        while i < len(text):
            c = text[i : i + 1]
            if c in (b" ", b"\t", b","):
                i += 1
                continue
            if c == b"*":
                return None
            weak = text[i : i + 2] == b"W/"
            start = i + 2 if weak else i
            if text[start : start + 1] != b'"':
                i = _next_comma(text, i)
                continue
            close = text.find(b'"', start + 1)
            if close < 0:
                break
            tags.append(text[i : close + 1])
            i = close + 1
    return tags


def _next_comma(text: bytes, i: int) -> int:
    comma = text.find(b",", i)
    return len(text) if comma < 0 else comma + 1


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def weak_match(a: bytes, b: bytes) -> bool:
    """Weak comparison of two entity-tags (RFC 9110 §8.8.3.2)."""
    return _opaque(a) == _opaque(b)


def strong_match(a: bytes, b: bytes) -> bool:
    """Strong comparison of two entity-tags: neither weak, and the same."""
    return not a.startswith(b"W/") and a == b


def revalidation_headers(
    request_headers: Fields, stored_headers: Fields
) -> list[tuple[bytes, bytes]] | None:
    """
    The request fields that revalidate a stored response: the client's,
    less its own validators, plus the stored response's; C{None} when the
    stored response has no validator (fetch it anew).
    """
    etags = field_values(stored_headers, b"etag")
    modified = field_values(stored_headers, b"last-modified")
    if not etags and not modified:
        return None
    out = [f for f in request_headers if f[0].lower() not in _CLIENT_VALIDATORS]
    if etags:
        out.append((b"If-None-Match", etags[0]))
    if modified:
        out.append((b"If-Modified-Since", modified[0]))
    return out


def without_validators(request_headers: Fields) -> list[tuple[bytes, bytes]]:
    """
    The client's request fields less C{If-None-Match} and
    C{If-Modified-Since} (a miss fetches the whole response to store it).
    """
    return [f for f in request_headers if f[0].lower() not in _CLIENT_VALIDATORS]


def merge_not_modified(stored: Fields, received: Fields) -> list[tuple[bytes, bytes]]:
    """
    The stored response's fields updated by a 304's (RFC 9111 §3.2).
    """
    replace = {name.lower() for name, _ in received} - _NOT_UPDATED
    kept = [f for f in stored if f[0].lower() not in replace]
    kept.extend(f for f in received if f[0].lower() in replace)
    return kept


def not_modified_headers(stored: Fields) -> list[tuple[bytes, bytes]]:
    """
    The fields of a 304 the cache answers from a stored response.
    """
    return [f for f in stored if f[0].lower() not in _NOT_IN_304]


def _etag(stored: Fields) -> bytes | None:
    values = field_values(stored, b"etag")
    return values[0].strip() if values else None


def evaluate(method: bytes, request_headers: Fields, stored: Fields) -> int | None:
    """
    The status a client's preconditions call for against a stored response
    with fields C{stored}: 412, 304, or C{None} to answer as usual.
    """
    etag = _etag(stored)
    modified = _date(stored, b"last-modified")
    if_match = field_values(request_headers, b"if-match")
    if if_match:
        tags = entity_tags(if_match)
        if tags is not None and not (
            etag is not None and any(strong_match(t, etag) for t in tags)
        ):
            return 412
    else:
        since = _date(request_headers, b"if-unmodified-since")
        if since is not None and modified is not None and modified > since:
            return 412
    safe = method in (b"GET", b"HEAD")
    if_none_match = field_values(request_headers, b"if-none-match")
    if if_none_match:
        tags = entity_tags(if_none_match)
        if tags is None or (
            etag is not None and any(weak_match(t, etag) for t in tags)
        ):
            return 304 if safe else 412
        return None
    if safe:
        since = _date(request_headers, b"if-modified-since")
        if since is not None and modified is not None and modified <= since:
            return 304
    return None


def _date(headers: Fields, name: bytes) -> float | None:
    values = field_values(headers, name)
    return parse_date(values[0]) if values else None


def if_range_holds(request_headers: Fields, stored: Fields) -> bool:
    """
    Whether a C{Range} request's C{If-Range} (if any) lets the range be
    served (RFC 9110 §13.1.5): a strong C{ETag} match, or exactly the
    stored C{Last-Modified}.
    """
    values = field_values(request_headers, b"if-range")
    if not values:
        return True
    value = values[0].strip()
    if value.startswith((b'"', b"W/")):
        etag = _etag(stored)
        return etag is not None and strong_match(value, etag)
    when = parse_date(value)
    modified = _date(stored, b"last-modified")
    return when is not None and modified is not None and when == modified
