"""A pool's queue: the requests and TCP connections waiting, in the order
they came, for a backend of the pool to have room under its
C{max_connections} (HAProxy's C{maxconn} with its queue).

A L{BackendQueue} is held by its L{rproxy.backends.Pool} and shared by every
listener sending traffic to the pool.  What waits is a L{Waiter} (a
L{rproxy.attempts.BackendAttempt}); it joins when no backend has room, and
leaves when served, when its wait times out or when its client goes away.
Whenever room may have been made (a connection or request to a backend
ended, a backend came up or back), the pool calls L{BackendQueue.kick}, and
once the reactor has finished what it is doing (so that a kept-alive
connection the ending request gives back is there to be reused) the waiters
take their turn from the head: each that a backend has room for is served,
until one finds none.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["BackendQueue", "Waiter"]


class Waiter(Protocol):
    """
    What waits in a L{BackendQueue}.
    """

    def take_turn(self) -> bool:
        """
        The head of the queue may have room now: take a backend if one has
        room (leaving the queue), and say whether one had.
        """

    @property
    def choosy(self) -> bool:
        """
        Whether it turns some backends down (those it tried already), so
        that a backend with room for others may have none for it.
        """


class BackendQueue:
    """
    The waiters of one pool, first come first served.

    @ivar queued_total: waiters that joined.
    @ivar served_total: of those, the ones a backend took.
    @ivar timeouts_total: of those, the ones whose wait timed out.
    @ivar full_total: waiters refused at once, the queue being full.
    """

    def __init__(self) -> None:
        #: in the order they joined (a dict: leaving from the middle, as a
        #: client that goes away does, costs no scan).
        self.waiting: dict[Waiter, IReactorTime] = {}
        self._turns: IDelayedCall | None = None
        self.queued_total = 0
        self.served_total = 0
        self.timeouts_total = 0
        self.full_total = 0

    def __len__(self) -> int:
        return len(self.waiting)

    def join(self, waiter: Waiter, clock: IReactorTime) -> None:
        """
        Put C{waiter} at the tail; its turns are taken on C{clock}.
        """
        self.waiting[waiter] = clock
        self.queued_total += 1

    def leave(self, waiter: Waiter) -> bool:
        """
        Take C{waiter} out of the queue; whether it was in.
        """
        return self.waiting.pop(waiter, None) is not None

    def kick(self) -> None:
        """
        Room may have been made: let the waiters take their turn soon, once
        (however often this is called before they do).
        """
        if self._turns is not None or not self.waiting:
            return
        clock = next(iter(self.waiting.values()))
        self._turns = clock.callLater(0, self._take_turns)

    def stop(self) -> None:
        """
        Cancel the turns kicked and not yet taken (the waiters' own timeouts
        still end their wait).
        """
        turns, self._turns = self._turns, None
        if turns is not None and turns.active():
            turns.cancel()

    def _take_turns(self) -> None:
        self._turns = None
        for waiter in list(self.waiting):
            if waiter not in self.waiting:
                continue  # left meanwhile (served, timed out, gone)
            if waiter.take_turn():
                self.served_total += 1
            elif not waiter.choosy:
                break  # no backend has room for anyone
