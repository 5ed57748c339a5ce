"""Freshness (RFC 9111 §4.2): a stored response's freshness lifetime and
current age, and what a cache may do with it for one request: use it,
serve it stale (RFC 5861 C{stale-while-revalidate}, a client's
C{max-stale}), or validate it first.  Pure functions.

Decisions worth knowing:

  - Lifetime: for a shared cache C{s-maxage}, else C{max-age}, else
    C{Expires} minus C{Date} (a targeted field, RFC 9213, replaces both
    C{Cache-Control} and C{Expires}); a directive present but invalid, or an
    C{Expires} that is not an HTTP-date, gives 0 (stale).  Only with none of
    them is a heuristic used, and only for a heuristically cacheable status
    or a C{public} response: a fraction of the time since C{Last-Modified},
    else the configured C{default_ttl}.
  - Age: the corrected initial age of §4.2.3 (from C{Age}, C{Date} and the
    request and response times) plus the time since the response came.
    C{Age} with a list uses its first member; an invalid one counts as 0.
  - Stale responses are never served when the response says C{no-cache},
    C{must-revalidate} or C{proxy-revalidate}.  C{s-maxage} (which implies
    C{proxy-revalidate} for a shared cache) rules out the cache's default
    stale windows and a client's C{max-stale}, but not the origin's own
    C{stale-while-revalidate} / C{stale-if-error} in the same response,
    which say exactly how stale the origin allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from attrs import frozen

from rproxy.cache.control import Directives, Policy, delta_seconds, field_values
from rproxy.cache.dates import parse_date
from rproxy.cache.settings import CacheSettings
from rproxy.cache.storing import HEURISTIC_STATUS

__all__ = [
    "Use",
    "Verdict",
    "age_value",
    "corrected_initial_age",
    "current_age",
    "freshness_lifetime",
    "judge",
    "stale_if_error_window",
]

Fields = Sequence[tuple[bytes, bytes]]


def _first_date(headers: Fields, name: bytes) -> tuple[bool, float | None]:
    values = field_values(headers, name)
    if not values:
        return False, None
    return True, parse_date(values[0])


def date_value(headers: Fields, response_time: float) -> float:
    """
    The response's C{Date}, or C{response_time} without a valid one.
    """
    _, date = _first_date(headers, b"date")
    return response_time if date is None else date


def freshness_lifetime(
    status: int,
    headers: Fields,
    policy: Policy,
    settings: CacheSettings,
    response_time: float,
) -> float:
    """
    How long (seconds) a response stays fresh in a shared cache.
    """
    for name in (b"s-maxage", b"max-age"):
        if name in policy:
            return float(policy.seconds(name) or 0)
    if not policy.targeted:
        present, expires = _first_date(headers, b"expires")
        if present:
            if expires is None:
                return 0.0
            return max(0.0, expires - date_value(headers, response_time))
    if status not in HEURISTIC_STATUS and b"public" not in policy:
        return 0.0
    _, modified = _first_date(headers, b"last-modified")
    if modified is not None:
        since = date_value(headers, response_time) - modified
        return min(
            max(0.0, since * settings.heuristic_fraction), settings.heuristic_max
        )
    return settings.default_ttl


def age_value(headers: Fields) -> int:
    """
    The C{Age} of a response: its first list member as delta-seconds, or 0
    when there is none or it is invalid.
    """
    values = field_values(headers, b"age")
    if not values:
        return 0
    first = values[0].split(b",", 1)[0].strip(b" \t")
    return delta_seconds(first) or 0


def corrected_initial_age(
    headers: Fields, request_time: float, response_time: float
) -> float:
    """
    A response's age when it was received (RFC 9111 §4.2.3).
    """
    apparent = max(0.0, response_time - date_value(headers, response_time))
    corrected = age_value(headers) + max(0.0, response_time - request_time)
    return max(apparent, corrected)


def current_age(
    headers: Fields, request_time: float, response_time: float, now: float
) -> float:
    """
    A stored response's age at C{now}.
    """
    initial = corrected_initial_age(headers, request_time, response_time)
    return initial + max(0.0, now - response_time)


def _strict(policy: Policy) -> bool:
    """The response forbids serving it stale."""
    no_cache = b"no-cache" in policy and policy.directives[b"no-cache"] is None
    return no_cache or b"must-revalidate" in policy or b"proxy-revalidate" in policy


def stale_if_error_window(
    policy: Policy, request: Directives, settings: CacheSettings
) -> float:
    """
    How long past its lifetime a response may be served when the backend
    fails (RFC 5861 §4: the response's C{stale-if-error}, else the
    request's, else the cache's default), 0 where it may not be at all.
    """
    if _strict(policy):
        return 0.0
    own = policy.seconds(b"stale-if-error")
    if own is not None:
        return float(own)
    asked = delta_seconds(request.get(b"stale-if-error"))
    if asked is not None and b"s-maxage" not in policy:
        return float(asked)
    return 0.0 if b"s-maxage" in policy else settings.stale_if_error


class Use(Enum):
    """
    What a cache may do with a stored response for a request.

    C{FRESH}: serve it.  C{STALE}: serve it stale (the client allowed it).
    C{REFRESH}: serve it stale and refresh it in the background
    (C{stale-while-revalidate}).  C{VALIDATE}: ask the backend first.
    """

    FRESH = "fresh"
    STALE = "stale"
    REFRESH = "refresh"
    VALIDATE = "validate"


@frozen
class Verdict:
    """
    L{judge}'s answer.

    @ivar ttl: the response's remaining freshness (negative when stale).
    @ivar age: its current age.
    """

    use: Use
    ttl: float
    age: float


def judge(
    policy: Policy,
    lifetime: float,
    age: float,
    request: Directives,
    settings: CacheSettings,
) -> Verdict:
    """
    What to do with a stored response of C{lifetime} and C{age}, whose
    directives are C{policy}, for a request with directives C{request}.
    """
    ttl = lifetime - age

    def verdict(use: Use) -> Verdict:
        return Verdict(use, ttl, age)

    if b"no-cache" in policy and policy.directives[b"no-cache"] is None:
        return verdict(Use.VALIDATE)
    client = request if settings.client_directives else {}
    if b"no-cache" in client:
        return verdict(Use.VALIDATE)
    if b"max-age" in client:
        max_age = delta_seconds(client[b"max-age"])
        if max_age is None or age > max_age:
            return verdict(Use.VALIDATE)
    if b"min-fresh" in client:
        min_fresh = delta_seconds(client[b"min-fresh"])
        if min_fresh is not None and ttl < min_fresh:
            return verdict(Use.VALIDATE)
    if ttl > 0:
        return verdict(Use.FRESH)
    if _strict(policy):
        return verdict(Use.VALIDATE)
    shared_only = b"s-maxage" in policy
    if b"max-stale" in client and not shared_only:
        allowed = client[b"max-stale"]
        limit = delta_seconds(allowed)
        if allowed is None or (limit is not None and -ttl <= limit):
            return verdict(Use.STALE)
    own = policy.seconds(b"stale-while-revalidate")
    window = float(own) if own is not None else None
    if window is None and not shared_only:
        window = settings.stale_while_revalidate
    if window and -ttl <= window:
        return verdict(Use.REFRESH)
    return verdict(Use.VALIDATE)
