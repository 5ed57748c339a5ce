"""The generic cell rate algorithm (GCRA) that rate limits decide with: a
L{Rate} and a burst, the pure arithmetic of one check (L{gcra},
L{decision}), and L{LocalLimiter} (in L{rproxy.limits._local}, compiled),
one process's state for many keys in a bounded least-recently-used table.

GCRA keeps one number per key, its theoretical arrival time (TAT): when the
key's next request would be exactly on the rate.  With an emission interval
C{T} (the period over the count: 50 ms for C{"20/s"}) and a burst C{B}, the
tolerance is C{tau = B * T}.  A request at C{now} waits C{max(TAT, now) -
now} to keep to the rate; it is allowed if that wait is at most C{tau}, and
then moves the TAT on by C{T}.  So C{B + 1} requests may come at once, and
then one every C{T}: nginx's C{limit_req} with C{burst=B}.  A refused request
changes nothing.  A key whose TAT is past holds nothing a fresh key would
not: L{LocalLimiter} drops it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from attrs import field, frozen, validators

from rproxy.limits._local import BYTES_PER_KEY, SLACK, LocalLimiter

__all__ = [
    "BYTES_PER_KEY",
    "PERIODS",
    "SLACK",
    "Decision",
    "LocalLimiter",
    "Rate",
    "ceil_seconds",
    "decision",
    "gcra",
]

#: the rate units a config may use, in seconds.
PERIODS = {"s": 1, "m": 60, "h": 3600}


def _count(rate: Rate, attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"a rate's count must be a positive integer, got {value!r}")


@frozen
class Rate:
    """
    C{count} requests per C{period} seconds, written C{"N/s"}, C{"N/m"} or
    C{"N/h"}.
    """

    count: int = field(validator=_count)
    period: int = field(validator=validators.in_(tuple(PERIODS.values())))

    @classmethod
    def parse(cls, text: str) -> Rate:
        """
        The rate C{text} says (C{"20/s"}).

        @raise ValueError: saying what a rate looks like.
        """
        count, slash, unit = text.strip().partition("/")
        if not slash or unit.strip() not in PERIODS or not count.strip().isdigit():
            raise ValueError(
                f"must be a rate such as '20/s', '100/m' or '1000/h', got {text!r}"
            )
        number = int(count)
        if number < 1:
            raise ValueError(f"must be a rate of at least 1 request, got {text!r}")
        return cls(number, PERIODS[unit.strip()])

    @property
    def interval(self) -> float:
        """
        Seconds between two requests on the rate (GCRA's emission interval).
        """
        return self.period / self.count

    def __str__(self) -> str:
        unit = next(name for name, seconds in PERIODS.items() if seconds == self.period)
        return f"{self.count}/{unit}"


class Decision(NamedTuple):
    """
    What one check decided for one request.

    @ivar allowed: whether the request may go on.
    @ivar delay: seconds an allowed request is early for the rate (0 if it
        is on it): how long C{mode = "delay"} holds it.
    @ivar remaining: how many more requests could come right now and be
        allowed.
    @ivar reset: seconds until the key's whole burst is available again.
    @ivar retry_after: for a refused request, seconds until one would be
        allowed; 0 for an allowed one.
    """

    allowed: bool
    delay: float
    remaining: int
    reset: float
    retry_after: float


def gcra(
    tat: float | None, now: float, interval: float, tolerance: float
) -> tuple[bool, float]:
    """
    One GCRA check of a key whose TAT is C{tat} (C{None} for a key never
    seen), at C{now}.

    @return: whether the request is allowed, and the key's TAT after it (the
        same as before for a refused request, C{now} or later).
    """
    start = now if tat is None or tat < now else tat
    if start - now > tolerance + SLACK:
        return False, start
    return True, start + interval


def decision(
    allowed: bool, backlog: float, interval: float, tolerance: float
) -> Decision:
    """
    The L{Decision} for a check that C{allowed} (or refused) a request and
    left the key C{backlog} seconds ahead of now (its TAT less now): the
    same arithmetic for a local check and for the shared store's answer.
    """
    if not allowed:
        return Decision(False, 0.0, 0, backlog, max(backlog - tolerance, 0.0))
    if backlog > tolerance + SLACK:
        remaining = 0
    else:
        remaining = int((tolerance - backlog) / interval + SLACK) + 1
    return Decision(True, max(backlog - interval, 0.0), remaining, backlog, 0.0)


def ceil_seconds(seconds: float) -> int:
    """
    C{seconds} rounded up to whole seconds, as C{Retry-After} and the
    RateLimit fields carry them (a part of a second left is one more).
    """
    return max(math.ceil(seconds - SLACK), 0)
