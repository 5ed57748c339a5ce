"""An accept rate per client address: the generic cell rate algorithm
(GCRA, the leaky bucket as a meter) over a bounded table of addresses.

One float per address is kept: its theoretical arrival time (TAT), the time
at which its bucket would be empty again.  A connection at time C{now} is let
in when C{TAT - now} is at most the burst tolerance, and then moves TAT on
by one emission interval (C{period / count}); one that is refused changes
nothing.  An address whose TAT has passed is the same as one never seen, so
dropping it from the table loses nothing.

The table is a least-recently-used map capped at C{capacity} addresses
(65536 by default, about 150 bytes each): past the cap the address seen
longest ago is dropped (and would start again with a full burst).  Time is
passed in by the caller, the table holds no timer.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_CAPACITY", "AcceptRate"]

#: addresses an L{AcceptRate} remembers by default.
DEFAULT_CAPACITY = 65536
# A wait shorter than this is rounding in the sums of intervals, not a wait.
_ROUNDING = 1e-9


class AcceptRate:
    """
    At most C{count} connections per C{period} seconds from each address,
    with bursts of up to C{burst} at once.

    @ivar interval: seconds of bucket each connection fills.
    @ivar tolerance: how far ahead of now an address's TAT may be and a
        connection still be let in: C{(burst - 1) * interval}.
    """

    def __init__(
        self,
        count: float,
        period: float,
        burst: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if count <= 0 or period <= 0 or burst < 1 or capacity < 1:
            raise ValueError("count, period, burst and capacity must be positive")
        self.count = count
        self.period = period
        self.burst = burst
        self.capacity = capacity
        self.interval = period / count
        self.tolerance = (burst - 1) * self.interval
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    def take(self, key: str, now: float) -> float:
        """
        Count a connection from C{key} at C{now} if the rate allows it.

        @return: 0.0 if it is let in; otherwise the seconds until one
            would be (what a C{Retry-After} says).
        """
        tats = self._tats
        tat = tats.get(key)
        if tat is None or tat < now:
            tat = now
        wait = tat - now - self.tolerance
        if wait > _ROUNDING:
            tats.move_to_end(key)
            return wait
        tats[key] = tat + self.interval
        tats.move_to_end(key)
        if len(tats) > self.capacity:
            tats.popitem(last=False)
        return 0.0

    def adopt(self, previous: AcceptRate) -> None:
        """
        Carry on from C{previous}'s table (a reload that keeps the limit,
        perhaps at another rate: each address's TAT stays where it was).
        """
        self._tats = previous._tats
        while len(self._tats) > self.capacity:
            self._tats.popitem(last=False)
