"""One process's GCRA state for many keys (L{LocalLimiter}): the part of a
rate limit every request runs, compiled with the rest of the hot path (see
L{rproxy.limits.gcra} for the algorithm)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from rproxy.limits.gcra import Decision, Rate

__all__ = ["BYTES_PER_KEY", "SLACK", "LocalLimiter", "service_limit"]

#: slack in comparisons, in seconds: sums of float intervals drift by far
#: less, and a microsecond is below any clock a decision is made on.
SLACK = 1e-6

#: the most one key costs a L{LocalLimiter}, in bytes: for IPv4 address
#: keys (10 to 15 characters) on CPython 3.11, tracemalloc measures about
#: 175 bytes held (the key string, the float TAT, the ordered dict's entry
#: and link) and under 256 at the peak, counting the table's growth
#: (C{tests/limits/test_gcra.py} checks it).  Longer keys cost their length
#: more (up to 64 characters: see L{rproxy.limits.keys.MAX_KEY}).
BYTES_PER_KEY = 256


class LocalLimiter:
    """
    GCRA state for many keys in one process, with bounded memory.

    Keys live in a least-recently-used table of at most C{max_keys}: a key
    checked moves to its end, a new key past the cap evicts the least
    recently checked one (its client starts afresh: a flood of new keys
    cannot grow memory, though it can make rproxy forget an old key), and
    each new key first drops up to two of the oldest keys whose TAT is past
    (they hold nothing a fresh key would not).  Memory is at most
    L{BYTES_PER_KEY} per key held.

    @ivar interval: the emission interval, in seconds.
    @ivar tolerance: how far ahead of now a key's TAT may be for a request
        to be allowed (the burst times the interval).
    """

    def __init__(
        self, rate: Rate, burst: int, clock: IReactorTime, max_keys: int
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.rate = rate
        self.burst = burst
        self.interval = rate.interval
        self.tolerance = burst * self.interval
        self.max_keys = max_keys
        self._clock = clock
        self._now = clock.seconds
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    def __contains__(self, key: str) -> bool:
        return key in self._tats

    def take(self, key: str) -> float:
        """
        Check one request for C{key} now, and count it if it is allowed:
        the cheapest form of L{check}, for the per-request path.

        @return: for an allowed request, the seconds the key is ahead of now
            after it (more than 0); for a refused one, minus the seconds it
            is ahead (less than 0).  L{decision} tells the rest.
        """
        now = self._now()
        tats = self._tats
        tat = tats.get(key)
        if tat is None:
            self._make_room(now)
            tat = now
        else:
            tats.move_to_end(key)
            if tat < now:
                tat = now
        early = tat - now
        if early > self.tolerance + SLACK:
            return -early
        interval = self.interval
        tats[key] = tat + interval
        return early + interval

    def check(self, key: str) -> Decision:
        """
        Check one request for C{key} now, and count it if it is allowed.
        """
        from rproxy.limits.gcra import decision  # gcra imports this module

        backlog = self.take(key)
        return decision(backlog > 0, abs(backlog), self.interval, self.tolerance)

    def refund(self, key: str) -> None:
        """
        Give back the one request an allowed check for C{key} counted (one
        that was held and never went on).
        """
        tats = self._tats
        tat = tats.get(key)
        if tat is None:
            return
        back = tat - self.interval
        if back <= self._clock.seconds():
            del tats[key]
        else:
            tats[key] = back

    def _make_room(self, now: float) -> None:
        tats = self._tats
        for _ in range(2):
            if not tats:
                return
            oldest = next(iter(tats))
            if tats[oldest] > now:
                break
            del tats[oldest]
        while len(tats) >= self.max_keys:
            tats.popitem(last=False)


def service_limit(
    template: bytes, backlog: float, tolerance: float, interval: float
) -> bytes:
    """
    C{template} (C{b'"NAME";r=%d;t=%d'}) filled for a key C{backlog}
    seconds ahead after an allowed request: the requests that could come
    now, and the whole seconds until the whole burst is back.
    """
    if backlog > tolerance + SLACK:
        remaining = 0
    else:
        remaining = int((tolerance - backlog) / interval + SLACK) + 1
    seconds = int(backlog) + (backlog % 1 > SLACK)
    return template % (remaining, seconds)
