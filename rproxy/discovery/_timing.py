"""When discovery asks DNS again and how long it keeps an answer: the TTL
clamped to a floor and a ceiling, the retry delay after failures, and the
hold period.  Pure arithmetic on seconds."""

from __future__ import annotations

import math

__all__ = ["clamp_ttl", "hold_expired", "retry_delay"]


def clamp_ttl(ttl: float | None, floor: float, ceiling: float) -> float:
    """
    Seconds until the next query of an answer whose records' least TTL is
    C{ttl}: the TTL, but at least C{floor} (a TTL of 0 would mean asking
    without pause) and at most C{ceiling} (a long TTL would hide changes).
    An answer with no records (None) is asked again after C{floor}.
    """
    if ttl is None:
        return floor
    return min(max(ttl, floor), ceiling)


def retry_delay(failures: int, floor: float, ceiling: float) -> float:
    """
    Seconds until the next query after C{failures} failed in a row (1 or
    more): C{floor}, doubled for each further failure, at most C{ceiling}.
    """
    return min(math.ldexp(floor, min(max(failures - 1, 0), 32)), ceiling)


def hold_expired(good_at: float | None, now: float, hold: float) -> bool:
    """
    Whether the last good answer, received at C{good_at} (None: none yet),
    is no longer kept at C{now} through failures: C{hold} seconds have
    passed since.
    """
    return good_at is not None and now - good_at >= hold
