"""How long the supervisor waits before starting a worker again: at once
after a worker that ran a while, then twice as long at each quick death in a
row, up to a ceiling."""

from __future__ import annotations

from attrs import define, field

__all__ = ["RestartBackoff"]


@define
class RestartBackoff:
    """
    The restart delays of one worker slot.

    A worker that ran at least C{stable} seconds died of something new: it
    is started again after C{first} seconds.  One that died sooner is part
    of a crash loop: each such death doubles the delay, up to C{ceiling}.

    @ivar deaths: quick deaths in a row so far.
    """

    first: float = 0.1
    ceiling: float = 30.0
    stable: float = 10.0
    deaths: int = field(default=0, init=False)

    def delay(self, ran: float) -> float:
        """
        The delay before the next start, for a worker that died after
        running C{ran} seconds.
        """
        if ran >= self.stable:
            self.deaths = 0
        self.deaths += 1
        return min(self.first * 2.0 ** (self.deaths - 1), self.ceiling)
