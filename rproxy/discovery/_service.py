"""L{DNSDiscovery}: the service that asks DNS for one pool's backends again
and again, at the answer's TTL clamped to a floor and a ceiling, keeps the
last good answer through failures for the hold period, and hands every
changed answer to whoever owns the pool (as a reload would change it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.config import BackendConfig
from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery._diff import AnswerChange, diff_backends
from rproxy.discovery._lookup import Answer, describe_error, lookup
from rproxy.discovery._timing import clamp_ttl, hold_expired, retry_delay

__all__ = ["ApplyAnswer", "DNSDiscovery", "DiscoveryState"]

log = Logger(namespace="rproxy.discovery")

#: changes the pool to the backends given, as a reload would.
ApplyAnswer = Callable[[tuple[BackendConfig, ...], AnswerChange], None]


@define
class DiscoveryState:
    """
    What one pool's discovery has seen, for the status page and metrics
    (times by the service's clock; None: not yet).

    @ivar source: the C{discover} string.
    @ivar backends: the backends in use, as last applied.
    @ivar last_answer_at: when the last good answer came.
    @ivar next_query_at: when the next query goes out.
    @ivar last_error: why the last failed round failed, if the last round
        failed (None once one succeeds).
    @ivar queries: rounds of queries done; C{failures} of them failed.
    @ivar changes: answers that changed the pool's backends.
    """

    source: str
    backends: tuple[BackendConfig, ...] = ()
    last_answer_at: float | None = None
    next_query_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    queries: int = 0
    failures: int = 0
    changes: int = 0
    #: failed rounds in a row.
    failing: int = field(default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "backends": [b.name for b in self.backends],
            "last_answer_at": self.last_answer_at,
            "next_query_at": self.next_query_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "queries_total": self.queries,
            "failures_total": self.failures,
            "changes_total": self.changes,
        }


class DNSDiscovery(Service):
    """
    Finds the backends of the pool C{pool} in DNS, as C{config} says.

    Started, it queries at once, then again after the answer's least TTL
    clamped to C{config.min_ttl} and C{config.max_ttl}.  A round that fails
    (NXDOMAIN, SERVFAIL, a timeout, no records) keeps the backends in use
    until C{config.hold} seconds have passed since the last good answer;
    then the pool is emptied.  Failed rounds are retried after
    C{min_ttl}, doubling up to C{max_ttl}.  Each answer that differs from
    the backends in use is logged and given to C{apply}.

    It holds no pool: C{apply} is how the process that owns the pools (and
    runs their health checks) changes one.

    @param resolver: makes the L{IResolver} to ask, at start (a
        L{twisted.names.client.Resolver} reads resolv.conf and polls it).
    @param current: the backends the pool has now (those a reload keeps
        while the new source has not answered yet).
    @param close: what to do with the resolver at stop.
    """

    def __init__(
        self,
        pool: str,
        config: DiscoveryConfig,
        resolver: Callable[[], IResolver],
        clock: IReactorTime,
        apply: ApplyAnswer,
        *,
        current: tuple[BackendConfig, ...] = (),
        close: Callable[[IResolver], None] = lambda _: None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.state = DiscoveryState(config.source, current)
        self._make_resolver = resolver
        self._close = close
        self._clock = clock
        self._apply = apply
        self._resolver: IResolver | None = None
        self._next: IDelayedCall | None = None
        self._asking: Deferred[Any] | None = None
        # Backends carried over from before count as good from now on.
        self._good_at: float | None = clock.seconds() if current else None

    def startService(self) -> None:
        super().startService()
        self._resolver = self._make_resolver()
        self.query()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self.state.next_query_at = None
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()
        if self._resolver is not None:
            self._close(self._resolver)
            self._resolver = None

    def query(self) -> Deferred[None]:
        """
        Ask now (the next query is scheduled when this round ends).

        @return: fires when the round is over and its answer applied.
        """
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        assert self._resolver is not None, "start the service first"
        asking = lookup(self._resolver, self.config)
        self._asking = asking
        done = asking.addCallbacks(self._answered, self._failed)
        done.addErrback(
            lambda f: log.failure(
                "discovery of pool {pool} failed to apply an answer", f, pool=self.pool
            )
        )
        return done

    def _answered(self, answer: Answer) -> None:
        self._asking = None
        state = self.state
        state.queries += 1
        now = self._clock.seconds()
        state.last_answer_at = self._good_at = now
        state.last_error = None
        state.failing = 0
        self._use(answer.backends, "answer")
        config = self.config
        self._schedule(clamp_ttl(answer.ttl, config.min_ttl, config.max_ttl), now)

    def _failed(self, failure: Failure) -> None:
        self._asking = None
        if not self.running:
            return  # cancelled by stopService
        state = self.state
        now = self._clock.seconds()
        reason = describe_error(failure)
        state.queries += 1
        state.failures += 1
        state.failing += 1
        state.last_error, state.last_error_at = reason, now
        config = self.config
        if state.backends and hold_expired(self._good_at, now, config.hold):
            log.warn(
                "pool {pool}: {source} failed ({reason}) for longer than "
                "discover_hold ({hold}s) after the last answer: its backends "
                "are removed",
                pool=self.pool,
                source=config.source,
                reason=reason,
                hold=config.hold,
            )
            self._use((), "hold expired")
        else:
            log.warn(
                "pool {pool}: {source} failed ({reason}); "
                + (
                    "keeping the {count} backends of the last answer"
                    if state.backends
                    else "the pool has no backends until it answers"
                ),
                pool=self.pool,
                source=config.source,
                reason=reason,
                count=len(state.backends),
            )
        self._schedule(retry_delay(state.failing, config.min_ttl, config.max_ttl), now)

    def _use(self, backends: tuple[BackendConfig, ...], why: str) -> None:
        state = self.state
        change = diff_backends(state.backends, backends)
        if not change:
            return
        log.info(
            "pool {pool}: {source} {why}: {change}",
            pool=self.pool,
            source=self.config.source,
            why=why,
            change=change.describe(),
            added=list(change.added),
            removed=list(change.removed),
            changed=list(change.changed),
        )
        state.backends = backends
        state.changes += 1
        self._apply(backends, change)

    def _schedule(self, delay: float, now: float) -> None:
        if not self.running:
            return
        self.state.next_query_at = now + delay
        self._next = self._clock.callLater(delay, self.query)
