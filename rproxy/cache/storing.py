"""Whether a shared cache may store a response (RFC 9111 §3, §3.5, §5.2)
and which of its header fields it keeps (§3.1).  Pure functions.

Decisions worth knowing:

  - Only responses to GET are stored; 206 (partial) and 304 never are, and
    neither is any 1xx.
  - C{private} or C{no-cache} with field names: the cache stores the
    response without those fields (and may then reuse it without
    revalidation, RFC 9111 §5.2.2.4 and §5.2.2.7), instead of refusing it.
  - C{Set-Cookie} follows L{CacheSettings.set_cookie}: by default stored
    and served like any other field (RFC 9111 §7.3 note: it does not
    inhibit caching; origins say C{private} or C{no-cache="Set-Cookie"}).
  - C{Content-Length} and C{Transfer-Encoding} are not stored (a stored
    body is framed again when served), and a response without C{Date} gets
    one saying when it was received (RFC 9110 §6.6.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from rproxy.cache.control import Directives, Policy, field_values
from rproxy.cache.dates import format_date
from rproxy.cache.settings import CacheSettings
from rproxy.cache.variants import vary_names

__all__ = [
    "HEURISTIC_STATUS",
    "UNDERSTOOD_STATUS",
    "not_storable",
    "stored_headers",
]

Fields = Sequence[tuple[bytes, bytes]]

#: statuses whose responses are heuristically cacheable (RFC 9110 §15.1).
HEURISTIC_STATUS = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
#: statuses this cache understands (for C{must-understand}, RFC 9111
#: §5.2.2.3): the final statuses of RFC 9110 it stores.
UNDERSTOOD_STATUS = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308}
    | {400, 403, 404, 405, 410, 414, 451, 500, 501, 502, 503, 504}
)

_NOT_STORED = frozenset({b"content-length", b"transfer-encoding"})


def field_list(argument: bytes | None) -> frozenset[bytes]:
    """
    The lower-case field names a qualified C{private} or C{no-cache} lists.
    """
    if not argument:
        return frozenset()
    return frozenset(
        name.strip(b" \t").lower() for name in argument.split(b",") if name.strip()
    )


def not_storable(
    method: bytes,
    status: int,
    request_headers: Fields,
    request: Directives,
    headers: Fields,
    policy: Policy,
    settings: CacheSettings,
) -> str | None:
    """
    Why a shared cache may not store this response (a short reason, for
    C{Cache-Status}'s C{detail}), or C{None} when it may.

    @param request: the request's cache directives.
    @param policy: the response's (L{rproxy.cache.control.response_policy}).
    """
    if method != b"GET":
        return "method"
    if status < 200 or status in (206, 304):
        return "status"
    if b"no-store" in request:
        return "request-no-store"
    understood = b"must-understand" in policy and status in UNDERSTOOD_STATUS
    if b"must-understand" in policy and not understood:
        return "must-understand"
    if b"no-store" in policy and not understood:
        return "no-store"
    if b"private" in policy and policy.directives[b"private"] is None:
        return "private"
    allows_auth = any(d in policy for d in (b"public", b"s-maxage", b"must-revalidate"))
    if not allows_auth and field_values(request_headers, b"authorization"):
        return "authorization"
    if settings.set_cookie == "refuse" and field_values(headers, b"set-cookie"):
        return "set-cookie"
    if vary_names(headers) is None:
        return "vary-star"
    explicit = any(d in policy for d in (b"public", b"max-age", b"s-maxage"))
    if not explicit and not policy.targeted and field_values(headers, b"expires"):
        explicit = True
    if not explicit and status not in HEURISTIC_STATUS:
        return "no-freshness"
    return None


def stored_headers(
    headers: Fields, policy: Policy, settings: CacheSettings, response_time: float
) -> list[tuple[bytes, bytes]]:
    """
    The fields to store of a response that may be stored: without framing
    fields, those a qualified C{private} or C{no-cache} names, and (as
    C{settings.set_cookie} says) C{Set-Cookie}; with a C{Date}.
    """
    drop = set(_NOT_STORED)
    drop |= field_list(policy.directives.get(b"private"))
    drop |= field_list(policy.directives.get(b"no-cache"))
    if settings.set_cookie == "strip":
        drop.add(b"set-cookie")
    kept = [(name, value) for name, value in headers if name.lower() not in drop]
    if not any(name.lower() == b"date" for name, _ in kept):
        kept.append((b"Date", format_date(response_time)))
    return kept
