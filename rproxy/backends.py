"""Backends, pools and the registry: membership, state, weights, live counters.

This is the one shared model both front protocols read.  Protocols never keep
their own list of backends: they ask a L{Pool} for one (L{Pool.pick}) and
report what happened back to it (L{Pool.acquire}, L{Pool.release},
L{Pool.report_failure}, L{Pool.report_success}).  Health checks report through
L{Pool.record_check}.  A pool also holds what protects its backends: the queue
of requests waiting for room (L{rproxy.queueing}), the slow starts of
backends that came back, the count of retries under way (for the retry
budget) and, when the service gives it one, its ejection detector
(L{rproxy.outlier}).  Nothing here does I/O or schedules anything, except
that room made in the pool kicks its queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from rproxy._backend import (
    AdminState,
    Backend,
    BackendState,
    format_address,
    parse_address,
)
from rproxy.interfaces import IBalancer, IRegistry
from rproxy.policy import PoolPolicy
from rproxy.protection import ramp_share, retries_allowed
from rproxy.queueing import BackendQueue

__all__ = [
    "AdminState",
    "Backend",
    "BackendState",
    "Pool",
    "Registry",
    "StateObserver",
    "format_address",
    "parse_address",
]

log = Logger(namespace="rproxy.backends")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


StateObserver = Callable[["Pool", Backend, BackendState, BackendState, str], None]


@implementer(IRegistry)
class Registry:
    """
    The named pools shared by every listener of one process.
    """

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self._pools: dict[str, Pool] = {}
        for pool in pools:
            self.add(pool)

    def add(self, pool: Pool) -> None:
        """
        Add C{pool}; its name must be new.
        """
        if pool.name in self._pools:
            raise ValueError(f"a pool named {pool.name!r} exists already")
        self._pools[pool.name] = pool

    def remove(self, name: str) -> Pool:
        """
        Remove and return the pool called C{name}.
        """
        return self._pools.pop(name)

    def get(self, name: str) -> Pool:
        return self._pools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def __len__(self) -> int:
        return len(self._pools)


class Pool:
    """
    A named set of backends with a balancing strategy, health thresholds
    and the L{PoolPolicy} of the traffic sent to it.

    @ivar policy: the timeouts, tries, keep-alive limits, PROXY header, hash
        key and panic threshold of this pool; fronts read it here (once per
        connection or request) and never copy it.  A reload replaces it
        whole.
    @ivar version: grows whenever membership or a weight changes, so that
        balancers can rebuild what they derive from the membership.
    @ivar queue: what waits for a backend to have room.
    @ivar ramps: when each backend in a slow start began it (empty when
        none is: balancers look at it before asking L{weight_of}).
    @ivar retries_active: attempts retrying now (to another backend after
        a failure), counted against the retry budget.
    @ivar retries_total: retries made.
    @ivar retries_refused: retries the budget refused.
    @ivar outlier: the ejection detector reading this pool's responses
        (L{rproxy.outlier.OutlierDetector}), or None.
    """

    def __init__(
        self,
        name: str,
        backends: Iterable[Backend] = (),
        balancer: IBalancer | None = None,
        *,
        rise: int = 2,
        fall: int = 3,
        policy: PoolPolicy | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if policy is None:
            policy = PoolPolicy()
        if balancer is None:
            from rproxy.balancing import RoundRobin

            balancer = RoundRobin()
        self.name = name
        self.balancer: IBalancer = balancer
        self.rise = rise
        self.fall = fall
        self.policy = policy
        self.version = 0
        self.queue = BackendQueue()
        self.ramps: dict[Backend, float] = {}
        self.retries_active = 0
        self.retries_total = 0
        self.retries_refused = 0
        self.outlier: Any = None
        self._now = now
        self._backends: dict[str, Backend] = {}
        self._observers: list[StateObserver] = []
        for backend in backends:
            self.add(backend)

    def __repr__(self) -> str:
        return f"<Pool {self.name} backends={list(self._backends)}>"

    # Membership -------------------------------------------------------

    @property
    def backends(self) -> list[Backend]:
        """
        Every member, in the order added (a copy).
        """
        return list(self._backends.values())

    def get(self, name: str) -> Backend:
        """
        The member called C{name}.

        @raise KeyError: if there is none.
        """
        return self._backends[name]

    def add(self, backend: Backend) -> None:
        """
        Add C{backend}; its name must be new to this pool.
        """
        if backend.name in self._backends:
            raise ValueError(f"pool {self.name!r} has a backend {backend.name!r}")
        if not backend.changed_at:
            backend.changed_at = self._now()
        self._backends[backend.name] = backend
        self.version += 1

    def remove(self, name: str) -> Backend:
        """
        Remove the member called C{name}; its open connections are not
        touched.
        """
        backend = self._backends.pop(name)
        self.ramps.pop(backend, None)
        if self.outlier is not None:
            self.outlier.forget(backend)
        self.version += 1
        return backend

    def set_weight(self, backend: Backend, weight: int) -> None:
        """
        Change C{backend}'s weight.
        """
        if weight < 1:
            raise ValueError(f"weight must be a positive integer, got {weight}")
        backend.weight = weight
        self.version += 1

    # Choosing ---------------------------------------------------------

    def candidates(self, exclude: Collection[Backend] = ()) -> list[Backend]:
        """
        The backends that may take a new connection now, in member order.

        Primaries that are up, not full and not in C{exclude}; backups (on
        the same terms) only while no primary is up.
        """
        members = self._backends.values()
        primaries_up = False
        chosen = []
        for backend in members:
            if backend.backup or not backend.is_up:
                continue
            primaries_up = True
            if not backend.is_full and backend not in exclude:
                chosen.append(backend)
        if primaries_up:
            return chosen
        return [
            b
            for b in members
            if b.backup and b.is_up and not b.is_full and b not in exclude
        ]

    def only_full(self, exclude: Collection[Backend] = ()) -> bool:
        """
        Whether backends that may take traffic are left (apart from
        C{exclude}) and have no room: all of them are at their
        C{max_connections}, so that a wait in the queue may end well.
        """
        members = self._backends.values()
        primaries_up = any(not b.backup and b.is_up for b in members)
        # While a primary is up the primaries take traffic, else the backups.
        usable = [b for b in members if b.is_up and b.backup is not primaries_up]
        return any(b not in exclude for b in usable) and not self.candidates(exclude)

    def pick(
        self, key: str | None = None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        """
        Ask the balancer for a backend, or None when no backend may take
        traffic.
        """
        return self.balancer.pick(self, key, exclude)

    # Traffic reports --------------------------------------------------

    def acquire(self, backend: Backend) -> None:
        """
        A connection to C{backend} is being opened.
        """
        backend.active += 1
        backend.connections_total += 1

    def release(self, backend: Backend) -> None:
        """
        A connection to C{backend} has ended (or never got going).

        A draining backend whose last connection ends becomes disabled.
        """
        backend.active = max(backend.active - 1, 0)
        if backend.active == 0 and backend.admin is AdminState.DRAINING:
            self.set_admin(backend, AdminState.DISABLED, "drained")
        queue = self.queue
        if queue.waiting:
            queue.kick()

    # Protection -------------------------------------------------------

    def weight_of(self, backend: Backend) -> float:
        """
        C{backend}'s weight now: less than its weight while its slow start
        ramps it up (see L{rproxy.protection.ramp_share}).
        """
        began = self.ramps.get(backend)
        if began is None:
            return backend.weight
        share = ramp_share(self._now() - began, self.policy.slow_start)
        if share >= 1.0:
            del self.ramps[backend]
        return backend.weight * share

    def start_ramp(self, backend: Backend) -> None:
        """
        C{backend} has come back: ramp its weight up over the policy's
        C{slow_start} (if any), and let the queue try it.
        """
        if self.policy.slow_start > 0.0:
            self.ramps[backend] = self._now()
        self.queue.kick()

    def take_retry(self) -> bool:
        """
        An attempt wants to retry (its first retry: later ones of the same
        attempt go on under this one): whether the retry budget allows it
        (counted in C{retries_active} until L{end_retry}) or refuses it.

        The requests in flight are those holding a backend, the one asking
        and those queued.
        """
        policy = self.policy
        if policy.retry_budget is not None:
            in_flight = sum(b.active for b in self._backends.values())
            in_flight += len(self.queue) + 1
            allowed = retries_allowed(
                in_flight, policy.retry_budget, policy.min_retries
            )
            if allowed is not None and self.retries_active >= allowed:
                self.retries_refused += 1
                return False
        self.retries_active += 1
        self.retries_total += 1
        return True

    def end_retry(self) -> None:
        """
        A retrying attempt is done.
        """
        self.retries_active = max(self.retries_active - 1, 0)

    def report_failure(self, backend: Backend, reason: str) -> None:
        """
        Real traffic could not reach C{backend} (connect refused, timed
        out, a broken response).

        After C{fall} failures in a row the backend is marked down, unless
        that would leave fewer than C{policy.panic_threshold} of the pool's
        enabled primaries up: then it stays in service (the failures still
        count), as the pool would refuse traffic its backends might still
        serve.  Active checks (or the back-off of a pool without them) bring
        a backend back; active checks mark backends down whatever the
        threshold.
        """
        backend.failures_total += 1
        self._count_failure(backend, reason, checked=False)

    def report_success(self, backend: Backend) -> None:
        """
        Real traffic reached C{backend}: its run of failures is over.
        """
        if backend.healthy:
            backend.fails = 0

    def record_check(self, backend: Backend, ok: bool, reason: str) -> None:
        """
        Apply the result of one active check with the rise/fall thresholds.
        """
        now = self._now()
        backend.last_check_ok = ok
        backend.last_check_at = now
        if ok:
            backend.fails = 0
            if backend.healthy:
                return
            backend.passes += 1
            if backend.passes >= self.rise:
                self._set_health(
                    backend, True, f"{_count(backend.passes, 'check')} passed"
                )
        else:
            self._count_failure(backend, reason, checked=True)

    def _count_failure(self, backend: Backend, reason: str, checked: bool) -> None:
        backend.passes = 0
        if not backend.healthy:
            return
        backend.fails += 1
        if backend.fails < self.fall:
            return
        if checked:
            run = f"{_count(backend.fails, 'check')} failed"
        elif self._kept_by_panic_threshold(backend, reason):
            return
        else:
            run = f"{_count(backend.fails, 'failure')} in a row"
        self._set_health(backend, False, f"{run}, last: {reason}")

    def _kept_by_panic_threshold(self, backend: Backend, reason: str) -> bool:
        """
        Whether passive health must leave C{backend} in service: taking it
        out would leave fewer than C{policy.panic_threshold} of the pool's
        enabled primaries up.  Logs the first time in a run of failures.
        """
        threshold = self.policy.panic_threshold
        if not threshold or backend.backup or backend.admin is not AdminState.ENABLED:
            return False
        counted = [
            b
            for b in self._backends.values()
            if not b.backup and b.admin is AdminState.ENABLED
        ]
        left = sum(b.healthy for b in counted) - 1
        if left / len(counted) >= threshold:
            return False
        if backend.fails == self.fall:
            log.warn(
                "backend {backend} in pool {pool} stays in service after "
                "{fails} failures in a row (last: {reason}): without it "
                "{left} of {counted} backends would be up, below the panic "
                "threshold {threshold}",
                backend=backend.name,
                pool=self.name,
                fails=backend.fails,
                reason=reason,
                left=left,
                counted=len(counted),
                threshold=threshold,
            )
        return True

    def mark_up(self, backend: Backend, reason: str, *, fails: int = 0) -> None:
        """
        Mark C{backend} healthy now, skipping the rise threshold.

        @param fails: failures to count as already seen, so that a trial after
            a back-off needs fewer failures to go down again.
        """
        self._set_health(backend, True, reason)
        backend.fails = fails

    def mark_down(self, backend: Backend, reason: str) -> None:
        """
        Mark C{backend} unhealthy now, skipping the fall threshold.
        """
        self._set_health(backend, False, reason)

    def set_admin(self, backend: Backend, admin: AdminState, reason: str) -> None:
        """
        Enable, drain or disable C{backend}.  Draining a backend with no open
        connection disables it at once.
        """
        if admin is AdminState.DRAINING and backend.active == 0:
            admin = AdminState.DISABLED
        old = backend.state
        backend.admin = admin
        self._changed(backend, old, reason)

    # State changes ----------------------------------------------------

    def observe(self, observer: StateObserver) -> None:
        """
        Call C{observer(pool, backend, old_state, new_state, reason)} after
        every change of a backend's state.
        """
        self._observers.append(observer)

    def unobserve(self, observer: StateObserver) -> None:
        """
        Stop calling C{observer}.
        """
        self._observers.remove(observer)

    def _set_health(self, backend: Backend, healthy: bool, reason: str) -> None:
        old = backend.state
        backend.healthy = healthy
        backend.passes = backend.fails = 0
        self._changed(backend, old, reason)

    def _changed(self, backend: Backend, old: BackendState, reason: str) -> None:
        new = backend.state
        if new is old:
            return
        backend.changed_at = self._now()
        backend.reason = reason
        if new is BackendState.UP:
            if old is BackendState.DOWN or old is BackendState.DISABLED:
                self.start_ramp(backend)
            else:
                self.queue.kick()
        else:
            self.ramps.pop(backend, None)
        emit = log.warn if new is BackendState.DOWN else log.info
        emit(
            "backend {backend} in pool {pool} is now {state}: {reason}",
            backend=backend.name,
            pool=self.name,
            state=new.value,
            old_state=old.value,
            reason=reason,
        )
        for observer in list(self._observers):
            observer(self, backend, old, new, reason)
