"""How one named cache behaves: L{CacheSettings}, the frozen model the config
builds from a C{[caches.NAME]} table (storage sizes are the store's)."""

from __future__ import annotations

from typing import Literal

from attrs import field, frozen, validators

__all__ = ["CacheSettings"]

_non_negative = validators.ge(0)
_non_negative_float = validators.ge(0.0)


def _names(values: tuple[str, ...] | list[str]) -> tuple[bytes, ...]:
    return tuple(
        (v.encode("ascii") if isinstance(v, str) else v).lower() for v in values
    )


@frozen
class CacheSettings:
    """
    The rules one cache follows beyond what responses say.

    @ivar max_object: bytes past which a response streams through uncached.
    @ivar lock: whether concurrent misses for one key wait for one backend
        fetch (request coalescing, as nginx's C{proxy_cache_lock}).
    @ivar lock_timeout: seconds a request waits for another's fetch before
        it goes to the backend itself.
    @ivar hit_for_pass: seconds a key whose response could not be stored
        is fetched without coalescing (so requests for it do not queue).
    @ivar default_ttl: the heuristic freshness of a response that has no
        explicit expiry and no C{Last-Modified}, where RFC 9111 §4.2.2
        allows a heuristic (status heuristically cacheable, or C{public});
        0 for none.
    @ivar heuristic_fraction: the fraction of the time since
        C{Last-Modified} a heuristic freshness lifetime is (10%, as the RFC
        suggests).
    @ivar heuristic_max: the longest heuristic lifetime, in seconds.
    @ivar stale_while_revalidate: seconds a stale response may be served
        while it is refreshed in the background, where it says nothing
        itself (RFC 5861); 0 for none.
    @ivar stale_if_error: seconds a stale response may be served when the
        backend fails, where it says nothing itself; 0 for none.
    @ivar targets: the targeted cache-control fields this cache obeys, in
        order of precedence (RFC 9213); when one is present and valid,
        C{Cache-Control} and C{Expires} are ignored for caching.
    @ivar set_cookie: what to do with a response that sets cookies:
        C{"store"} it as any other (RFC 9111 §7.3: C{Set-Cookie} does not
        inhibit caching; the origin controls it with C{Cache-Control}),
        C{"strip"} the C{Set-Cookie} fields from the stored copy (the
        response that caused it keeps them), or C{"refuse"} to store it.
    @ivar client_directives: whether a request's own C{Cache-Control}
        (C{no-cache}, C{max-age}, C{min-fresh}, C{max-stale},
        C{only-if-cached}) is obeyed.
    @ivar status_name: the cache's name in C{Cache-Status} (RFC 9211).
    """

    max_object: int = field(default=8 << 20, validator=_non_negative)
    lock: bool = True
    lock_timeout: float = field(default=5.0, validator=_non_negative_float)
    hit_for_pass: float = field(default=120.0, validator=_non_negative_float)
    default_ttl: float = field(default=0.0, validator=_non_negative_float)
    heuristic_fraction: float = field(default=0.1, validator=_non_negative_float)
    heuristic_max: float = field(default=86400.0, validator=_non_negative_float)
    stale_while_revalidate: float = field(default=0.0, validator=_non_negative_float)
    stale_if_error: float = field(default=0.0, validator=_non_negative_float)
    targets: tuple[bytes, ...] = field(
        default=(b"cdn-cache-control",), converter=_names
    )
    set_cookie: Literal["store", "strip", "refuse"] = field(
        default="store", validator=validators.in_(("store", "strip", "refuse"))
    )
    client_directives: bool = True
    status_name: str = "rproxy"
