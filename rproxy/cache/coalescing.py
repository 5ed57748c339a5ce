"""Request coalescing: concurrent misses for one key wait for one backend
fetch (L{Coalescer.begin}, L{Coalescer.wait}), each for at most the lock
timeout, and keys whose responses could not be stored are marked for a
while (hit-for-pass) so requests for them go straight to the backend
instead of queueing behind each other.

A fetch's leader is held weakly: when it is dropped (its client went away,
the exchange ended without a response the cache saw) the fetch ends as
L{ABANDONED} and its waiters are released at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "ABANDONED",
    "ERROR",
    "STORED",
    "TIMEOUT",
    "UNCACHEABLE",
    "Coalescer",
    "Fetch",
]

#: how a wait ends: the response was stored, could not be, the backend
#: failed, the leader was given up, or the waiter's lock timeout passed.
STORED, UNCACHEABLE, ERROR, ABANDONED, TIMEOUT = (
    "stored",
    "uncacheable",
    "error",
    "abandoned",
    "timeout",
)

#: hit-for-pass marks held at most (the oldest go first).
MAX_PASS_MARKS = 10000


class Fetch:
    """
    One backend fetch for a key, which other requests may wait for.

    @ivar done: it has ended (its waiters released).
    """

    __slots__ = ("_leader", "done", "key", "waiters")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.done = False
        self.waiters: list[tuple[Deferred[str], IDelayedCall]] = []
        self._leader: weakref.ref[Any] | None = None


class Coalescer:
    """
    The fetches under way and the hit-for-pass marks of one cache.

    @param clock: for lock timeouts and mark expiry.
    @param lock_timeout: seconds a waiter waits at most.
    @param hit_for_pass: seconds a mark lasts.
    @param counted: called with a counter name (C{"collapsed"},
        C{"lock_timeout"}) when one should go up.
    """

    def __init__(
        self,
        clock: IReactorTime,
        lock_timeout: float,
        hit_for_pass: float,
        counted: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.clock = clock
        self.lock_timeout = lock_timeout
        self.hit_for_pass = hit_for_pass
        self._counted = counted
        self.fetches: dict[bytes, Fetch] = {}
        self.passes: dict[bytes, float] = {}

    def under_way(self, key: bytes) -> bool:
        """Whether a fetch for C{key} is under way."""
        return key in self.fetches

    def begin(self, key: bytes, leader: Any = None) -> Fetch | None:
        """
        Start a fetch for C{key}, led by C{leader} (held weakly, see
        L{lead}); C{None} when one is already under way.
        """
        if key in self.fetches:
            return None
        fetch = self.fetches[key] = Fetch(key)
        if leader is not None:
            self.lead(fetch, leader)
        return fetch

    def lead(self, fetch: Fetch, leader: Any) -> None:
        """
        C{leader} (an object that lives as long as the request doing the
        fetch) leads C{fetch}: when it is freed first, the fetch ends as
        L{ABANDONED}.
        """
        if fetch.done:
            return

        def gone(_: object, fetch: Fetch = fetch) -> None:
            self.finish(fetch, ABANDONED)

        fetch._leader = weakref.ref(leader, gone)

    def wait(self, key: bytes) -> Deferred[str]:
        """
        Wait for the fetch under way for C{key}: the Deferred fires with how
        it ended (L{STORED}, L{UNCACHEABLE}, L{ERROR}, L{ABANDONED}) or
        L{TIMEOUT} after the lock timeout.
        """
        fetch = self.fetches[key]
        waiting: Deferred[str] = Deferred()

        def timed_out() -> None:
            for i, (one, _) in enumerate(fetch.waiters):
                if one is waiting:
                    del fetch.waiters[i]
                    break
            self._counted("lock_timeout")
            waiting.callback(TIMEOUT)

        timer = self.clock.callLater(self.lock_timeout, timed_out)
        fetch.waiters.append((waiting, timer))
        self._counted("collapsed")
        return waiting

    def finish(self, fetch: Fetch, outcome: str) -> None:
        """
        C{fetch} ended with C{outcome}: release its waiters (in the order
        they came) and forget it.
        """
        if fetch.done:
            return
        fetch.done = True
        fetch._leader = None
        if self.fetches.get(fetch.key) is fetch:
            del self.fetches[fetch.key]
        waiters, fetch.waiters = fetch.waiters, []
        for waiting, timer in waiters:
            if timer.active():
                timer.cancel()
            waiting.callback(outcome)

    # Hit-for-pass -----------------------------------------------------

    def passing(self, key: bytes) -> bool:
        """
        Whether C{key} is marked: fetch it without waiting for others.
        """
        until = self.passes.get(key)
        if until is None:
            return False
        if until <= self.clock.seconds():
            del self.passes[key]
            return False
        return True

    def mark_pass(self, key: bytes) -> None:
        """
        Mark C{key} for the hit-for-pass time (its response could not be
        stored).
        """
        if self.hit_for_pass <= 0:
            return
        passes = self.passes
        passes.pop(key, None)
        while len(passes) >= MAX_PASS_MARKS:
            del passes[next(iter(passes))]
        passes[key] = self.clock.seconds() + self.hit_for_pass

    def clear_pass(self, key: bytes) -> None:
        """Forget C{key}'s mark (its response was stored after all)."""
        self.passes.pop(key, None)

    def close(self) -> None:
        """
        Release every waiter (as L{ABANDONED}) and forget every mark.
        """
        for fetch in list(self.fetches.values()):
            self.finish(fetch, ABANDONED)
        self.passes.clear()
