"""Balancing strategies: which of a pool's candidates takes the next connection.

Every strategy implements L{IBalancer}: C{pick(pool, key, exclude)} chooses
among C{pool.candidates(exclude)} and returns C{None} when there is none.
Strategies never do I/O, never read a clock and never use the global random
generator; the only state they keep is their own bookkeeping (a cursor, the
smooth weighted counters, a hash ring), rebuilt when C{pool.version} changes.

One balancer instance serves one pool.  Sharing one between pools is correct
but throws away derived state (counters, ring) whenever the pool changes.

Slow start (a pool's C{slow_start}: L{rproxy.backends.Pool.weight_of} ramps
a backend that came back from a hundredth of its weight to all of it) means,
for each strategy:

  - L{SmoothWeighted}: the ramped weight is the weight, so the backend's
    share of picks grows with it.
  - L{LeastConnections} and L{TwoRandomChoices}: a ramping backend's load
    is C{(active + 1) / ramped weight}, the load it would have with the
    connection being placed (the others' is C{active / weight}), so it
    takes a share of the concurrency that grows with its weight, instead of
    every new connection while it has the fewest.
  - L{RoundRobin} and L{ConsistentHash} do not apply it: the first ignores
    weights, and the second owes its keys to the backend's ring points,
    which a ramp would move twice.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Callable, Collection
from hashlib import blake2b

from zope.interface import implementer

from rproxy.backends import Backend, Pool
from rproxy.interfaces import IBalancer

__all__ = [
    "BALANCERS",
    "ConsistentHash",
    "LeastConnections",
    "RoundRobin",
    "SmoothWeighted",
    "TwoRandomChoices",
    "make_balancer",
]


def _less_loaded(a: Backend, b: Backend) -> bool:
    """Whether C{a.active / a.weight < b.active / b.weight}, in integers."""
    return a.active * b.weight < b.active * a.weight


def _load(pool: Pool, backend: Backend) -> float:
    """C{backend}'s load for least-connections with slow start (see above)."""
    weight = pool.weight_of(backend)
    if weight < backend.weight:
        return (backend.active + 1) / weight
    return backend.active / backend.weight


def _hash64(text: str) -> int:
    """A stable 64-bit hash of C{text}, the same in every process and run."""
    data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


@implementer(IBalancer)
class RoundRobin:
    """Each pick takes the next candidate in member order, wrapping around."""

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        candidates = pool.candidates(exclude)
        if not candidates:
            return None
        index = self._next % len(candidates)
        self._next = index + 1
        return candidates[index]


@implementer(IBalancer)
class SmoothWeighted:
    """
    nginx's smooth weighted round-robin: weights 5, 1, 1 give
    C{a a b a c a a}, not C{a a a a a b c}.

    Each pick adds every candidate's weight to its current value, takes the
    candidate with the highest current value (the first in member order on a
    tie) and subtracts the candidates' total weight from the winner's.  Over
    any stretch where the candidates stay the same, each backend gets its
    weight's share, interleaved.  Current values are kept by backend name;
    names that left the pool are forgotten when C{pool.version} changes.
    """

    def __init__(self) -> None:
        self._current: dict[str, float] = {}
        self._pool: Pool | None = None
        self._version = -1

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        if pool is not self._pool or pool.version != self._version:
            self._forget(pool)
        candidates = pool.candidates(exclude)
        if not candidates:
            return None
        current = self._current
        ramps = pool.ramps
        total: float = 0
        best = candidates[0]
        best_current = -math.inf
        for backend in candidates:
            weight = pool.weight_of(backend) if ramps else backend.weight
            value = current.get(backend.name, 0) + weight
            current[backend.name] = value
            total += weight
            if value > best_current:
                best, best_current = backend, value
        current[best.name] -= total
        return best

    def _forget(self, pool: Pool) -> None:
        if pool is self._pool:
            old = self._current
            self._current = {
                b.name: old[b.name] for b in pool.backends if b.name in old
            }
        else:
            self._current = {}
            self._pool = pool
        self._version = pool.version


@implementer(IBalancer)
class LeastConnections:
    """
    The candidate with the fewest open connections per unit of weight
    (lowest C{active / weight}).

    Ties are broken in rotation: each scan starts just after the previous
    pick and keeps the first of the least loaded, so equal backends take
    turns.
    """

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        candidates = pool.candidates(exclude)
        count = len(candidates)
        if not count:
            return None
        start = self._next % count
        best_index = start
        if pool.ramps:
            loads = [_load(pool, backend) for backend in candidates]
            for offset in range(1, count):
                index = (start + offset) % count
                if loads[index] < loads[best_index]:
                    best_index = index
            self._next = best_index + 1
            return candidates[best_index]
        best = candidates[start]
        for offset in range(1, count):
            index = (start + offset) % count
            if _less_loaded(candidates[index], best):
                best_index, best = index, candidates[index]
        self._next = best_index + 1
        return best


@implementer(IBalancer)
class TwoRandomChoices:
    """
    "Power of two choices": draw two distinct candidates at random and take
    the one with the lower C{active / weight} (the first drawn on a tie).

    @param rng: the source of randomness; a new, OS-seeded C{random.Random}
        when not given.  Pass a seeded one for reproducible tests.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = random.Random() if rng is None else rng

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        candidates = pool.candidates(exclude)
        count = len(candidates)
        if count < 2:
            return candidates[0] if candidates else None
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        if pool.ramps:
            return b if _load(pool, b) < _load(pool, a) else a
        return b if _less_loaded(b, a) else a


@implementer(IBalancer)
class ConsistentHash:
    """
    A hash ring: the same key goes to the same backend while that backend
    can take it, and a change of membership or health moves only the keys
    of the backends concerned.

    The ring holds C{replicas * weight} points for every member of the pool,
    up or not, and is rebuilt only when C{pool.version} changes.  A key
    (hashed with 64-bit BLAKE2b) goes to the first point at or after its
    hash, walking clockwise past points whose backend is not a candidate,
    so a backend that is down, full or excluded hands its keys to its ring
    neighbours and gets them back when it returns.

    A pick without a key (C{None}) has nothing to be consistent about and
    goes round-robin over the candidates, rather than sending all key-less
    traffic to the one backend that owns the hash of C{""}.

    @param replicas: ring points per unit of weight; more points spread keys
        more evenly at the cost of a bigger ring.
    """

    def __init__(self, replicas: int = 160) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas}")
        self._replicas = replicas
        self._round_robin = RoundRobin()
        self._pool: Pool | None = None
        self._version = -1
        self._points: list[int] = []
        self._owners: list[Backend] = []

    def pick(
        self, pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        if key is None:
            return self._round_robin.pick(pool, key, exclude)
        candidates = pool.candidates(exclude)
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        if pool is not self._pool or pool.version != self._version:
            self._build(pool)
        points, owners = self._points, self._owners
        size = len(points)
        index = bisect_left(points, _hash64(key))
        owner = owners[index % size]
        if owner in candidates:
            return owner
        allowed = set(candidates)
        for step in range(1, size):
            owner = owners[(index + step) % size]
            if owner in allowed:
                return owner
        return candidates[0]  # only when a candidate has no points (weight < 1)

    def _build(self, pool: Pool) -> None:
        members = {backend.name: backend for backend in pool.backends}
        ring = sorted(
            (_hash64(f"{name}#{replica}"), name)
            for name, backend in members.items()
            for replica in range(self._replicas * backend.weight)
        )
        self._points = [point for point, _ in ring]
        self._owners = [members[name] for _, name in ring]
        self._pool = pool
        self._version = pool.version


#: Balancer factories by their name in the config file; each takes the
#: random generator to use (only C{random2} uses it).
BALANCERS: dict[str, Callable[[random.Random | None], IBalancer]] = {
    "round_robin": lambda rng: RoundRobin(),
    "weighted": lambda rng: SmoothWeighted(),
    "least_conn": lambda rng: LeastConnections(),
    "random2": TwoRandomChoices,
    "hash": lambda rng: ConsistentHash(),
}


def make_balancer(name: str, rng: random.Random | None = None) -> IBalancer:
    """
    A new balancer of the kind called C{name} in the config file.

    @param rng: the random generator for strategies that draw at random.
    @raise ValueError: if no strategy is called C{name}.
    """
    try:
        factory = BALANCERS[name]
    except KeyError:
        message = f"unknown balancer {name!r}; expected one of {', '.join(BALANCERS)}"
        raise ValueError(message) from None
    return factory(rng)
