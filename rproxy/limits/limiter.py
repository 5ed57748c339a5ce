"""One named rate limit as it runs: L{Limiter}, its settings, its state
(local, or shared in Redis with a local fallback) and its counters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from rproxy.limits.gcra import SLACK, Decision, LocalLimiter, Rate, decision
from rproxy.limits.keys import Keyed, RequestKey, request_key
from rproxy.limits.store import RedisStore

__all__ = ["FAILS", "MODES", "Limiter", "policy_window"]

#: what a limiter does with a request over its rate.
MODES = ("reject", "delay")
#: what a limiter with a shared store does while the store is unreachable.
FAILS = ("open", "closed")

#: the default cap on the keys one limiter holds in memory.
MAX_KEYS = 100_000


def policy_window(rate: Rate, burst: int) -> tuple[int, int]:
    """
    The C{(quota, window)} a limiter advertises (RateLimit-Policy C{q} and
    C{w}): C{quota} requests sent at once every C{window} whole seconds keep
    to the limit, and it is the largest such quota of at most C{burst + 1}
    for the shortest such window.
    """
    interval = rate.interval
    window = max(
        math.ceil(interval - 1e-9), math.floor((burst + 1) * interval + 1e-9), 1
    )
    quota = min(burst + 1, math.floor(window / interval + 1e-9))
    return quota, window


class Limiter:
    """
    A named rate limit: GCRA over C{rate} with C{burst} per key, keys named
    by C{key} (see L{rproxy.limits.keys}).

    Without a C{store} the state is this process's (L{LocalLimiter}).  With
    one, each check is one atomic script in Redis, and while Redis is
    unreachable (or does not answer) the local state decides instead
    (C{fail = "open"}, each process then allowing the whole quota) or the
    request is refused as unavailable (C{fail = "closed"}).

    @ivar mode: C{"reject"}: a request over the rate is refused; C{"delay"}:
        it is held until it is on the rate, up to the burst, and refused
        beyond it.
    @ivar allowed: requests let on (at once or after being held).
    @ivar delayed: of those, the requests held first.
    @ivar rejected: requests refused (over the limit, or the store
        unavailable with C{fail = "closed"}).
    @ivar fallback: checks made without the store because it was
        unreachable.
    @ivar held: requests being held now.
    @ivar headers: whether allowed responses carry the RateLimit fields.
    """

    def __init__(
        self,
        name: str,
        rate: Rate,
        burst: int = 0,
        *,
        clock: IReactorTime,
        key: Sequence[str] = ("client_ip",),
        mode: str = "reject",
        store: RedisStore | None = None,
        fail: str = "open",
        max_keys: int = MAX_KEYS,
        headers: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if fail not in FAILS:
            raise ValueError(f"fail must be one of {FAILS}, got {fail!r}")
        self.name = name
        self.rate = rate
        self.burst = burst
        self.mode = mode
        self.delays = mode == "delay"
        self.fail = fail
        self.headers = headers
        self.key_parts = tuple(key)
        self.key: RequestKey = request_key(self.key_parts)
        self.store = store
        self.clock = clock
        self.local = LocalLimiter(rate, burst, clock, max_keys)
        self.interval = self.local.interval
        self.tolerance = self.local.tolerance
        self.quota, self.window = policy_window(rate, burst)
        self._store_key = f"rproxy:limit:{name}:"
        self.allowed = 0
        self.delayed = 0
        self.rejected = 0
        self.fallback = 0
        self.held = 0

    def counters(self) -> dict[str, int]:
        """
        The counters, by name, for metrics.
        """
        return {
            "allowed": self.allowed,
            "delayed": self.delayed,
            "rejected": self.rejected,
            "fallback": self.fallback,
        }

    def check(self, key: str) -> Decision | Deferred[Decision | None] | None:
        """
        Check one request for C{key}, and count it.

        @return: the decision, or a Deferred of it when it is asked of the
            store; None when the store is unavailable and C{fail} is
            C{"closed"}.
        """
        store = self.store
        if store is None:
            backlog = self.take(key)
            return decision(backlog > 0, abs(backlog), self.interval, self.tolerance)
        asked = store.check(self._store_key + key, self.interval, self.tolerance)
        if asked is None:
            return self._fallback(key)
        return asked.addCallbacks(self._answered, self._failed, errbackArgs=(key,))

    def take(self, key: str) -> float:
        """
        Check and count one request for C{key} in the local state (what
        L{check} does without a store, in the cheapest form: see
        L{LocalLimiter.take} for what the number says).
        """
        backlog = self.local.take(key)
        if backlog > 0:
            self.allowed += 1
            if self.delays and backlog - self.interval > SLACK:
                self.delayed += 1
        else:
            self.rejected += 1
        return backlog

    def take_request(self, exchange: Keyed) -> float | None:
        """
        L{take} for C{exchange}'s key, or None for a request without one
        (not counted: see L{rproxy.limits.keys}).
        """
        key = self.key(exchange)
        return None if key is None else self.take(key)

    def refund(self, key: str) -> None:
        """
        A request C{check} allowed was held and never went on (its client
        went away): give its place back.  Only the local state can: a
        shared store keeps it counted.
        """
        if self.store is None:
            self.local.refund(key)

    def _counted(self, decided: Decision) -> Decision:
        if decided.allowed:
            self.allowed += 1
            if self.delays and decided.delay > SLACK:
                self.delayed += 1
        else:
            self.rejected += 1
        return decided

    def _answered(self, answer: tuple[bool, float]) -> Decision:
        allowed, backlog = answer
        return self._counted(decision(allowed, backlog, self.interval, self.tolerance))

    def _failed(self, failure: Failure, key: str) -> Decision | None:
        return self._fallback(key)

    def _fallback(self, key: str) -> Decision | None:
        self.fallback += 1
        if self.fail == "closed":
            self.rejected += 1
            return None
        return self._counted(self.local.check(key))

    def remaining(self, backlog: float) -> int:
        """
        How many more requests could come now for a key C{backlog} seconds
        ahead (after an allowed request).
        """
        tolerance = self.tolerance
        if backlog > tolerance + SLACK:
            return 0
        return int((tolerance - backlog) / self.interval + SLACK) + 1

    def __repr__(self) -> str:
        return f"<Limiter {self.name} {self.rate} burst {self.burst} {self.mode}>"
