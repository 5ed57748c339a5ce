"""Outlier ejection: a backend answering too many 5xx responses is taken out
of balancing for a while, whatever its health checks say.

An L{OutlierDetector} watches one pool, as its pool's C{outlier} policy
(L{rproxy.policy.OutlierPolicy}) says, read afresh on every 5xx so a reload
applies at once (ejections under way end at their time).  It hears of each
5xx response a backend sent (from the HTTP exchange's counters,
L{rproxy.http._record.count}) and of nothing else: other responses only move
the backend's response counters, which it reads then, so the common path
pays nothing for it.

  - A run of C{consecutive_5xx} 5xx responses with no other response
    between them ejects the backend.
  - With C{rate_5xx}, the responses are judged in windows of at least
    C{interval} seconds: at the first 5xx after a window has lasted that
    long, a window of C{min_requests} responses or more of which more than
    C{rate_5xx} were 5xx ejects the backend; then a new window begins.

An ejection lasts C{base_ejection} seconds, times the number of ejections
in a row (one fewer for each C{interval} the backend went unejected since
the last), at most C{max_ejection_time}.  At most C{max_ejection} of the
pool's backends are ejected at once, and never the last of its primaries
(or backups) left to take traffic.  An ejected backend keeps its health
state and checks; when the ejection ends it comes back with a slow start,
if the pool has one.  TCP pools see no responses and eject nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rproxy.backends import Backend, BackendState, Pool
from rproxy.protection import ejection_steps, ejection_time, may_eject
from rproxy.stats import STATUS_CLASSES

__all__ = ["OutlierDetector"]

log = Logger(namespace="rproxy.outlier")

_5XX = STATUS_CLASSES.index("5xx")


@dataclass(slots=True)
class _Track:
    """What the detector knows of one backend."""

    #: its responses that were not 5xx, when its last 5xx came.
    others_seen: int = -1
    #: 5xx responses in a row.
    run: int = 0
    #: when the current window began (None: none yet), and the backend's
    #: responses and 5xx responses then.
    window_start: float | None = None
    window_answered: int = 0
    window_5xx: int = 0
    #: ejections in a row, and when the last one ended.
    steps: int = 0
    restored_at: float = 0.0


def _answered(backend: Backend) -> int:
    """Responses C{backend} sent (every status class but C{none})."""
    return sum(backend.responses[: _5XX + 1])


class OutlierDetector:
    """
    Ejects the backends of C{pool} that answer too many 5xx, on C{clock};
    it becomes C{pool.outlier}.

    @ivar ejections_total: backends ejected.
    @ivar ejections_held: ejections the C{max_ejection} cap (or the last
        backend standing) held back.
    """

    def __init__(self, pool: Pool, clock: IReactorTime) -> None:
        self.pool = pool
        self._clock = clock
        self._tracks: dict[Backend, _Track] = {}
        self._restores: dict[Backend, IDelayedCall] = {}
        self.ejections_total = 0
        self.ejections_held = 0
        pool.outlier = self

    def five_xx(self, backend: Backend) -> None:
        """
        C{backend} sent a 5xx response (already in its counters).
        """
        policy = self.pool.policy.outlier
        if policy is None or backend.ejected:
            return
        track = self._tracks.get(backend)
        if track is None:
            track = self._tracks[backend] = _Track()
        answered = _answered(backend)
        five = backend.responses[_5XX]
        others = answered - five
        if others != track.others_seen:
            track.others_seen, track.run = others, 0
        track.run += 1
        if policy.consecutive_5xx and track.run >= policy.consecutive_5xx:
            self._eject(backend, track, f"{track.run} 5xx responses in a row")
            return
        if policy.rate_5xx is None:
            return
        now = self._clock.seconds()
        start = track.window_start
        if start is None:
            # The first window begins with this response.
            track.window_start = now
            track.window_answered, track.window_5xx = answered - 1, five - 1
            return
        if now - start < policy.interval:
            return
        total = answered - track.window_answered
        failed = five - track.window_5xx
        track.window_start = now
        track.window_answered, track.window_5xx = answered, five
        if total >= policy.min_requests and failed > policy.rate_5xx * total:
            self._eject(
                backend,
                track,
                f"{failed} of {total} responses in {now - start:.3g}s were 5xx",
            )

    def _eject(self, backend: Backend, track: _Track, reason: str) -> None:
        pool = self.pool
        policy = pool.policy.outlier
        assert policy is not None
        members = pool.backends
        ejected = sum(b.ejected for b in members)
        others_left = any(
            b is not backend and b.backup is backend.backup and b.is_up for b in members
        )
        if not others_left or not may_eject(ejected, len(members), policy.max_ejection):
            self.ejections_held += 1
            log.debug(
                "backend {backend} in pool {pool} not ejected ({reason}): "
                "{ejected} of {members} are already",
                backend=backend.name,
                pool=pool.name,
                reason=reason,
                ejected=ejected,
                members=len(members),
            )
            return
        now = self._clock.seconds()
        track.steps = ejection_steps(
            track.steps, now - track.restored_at, policy.interval
        )
        duration = ejection_time(
            track.steps, policy.base_ejection, policy.max_ejection_time
        )
        track.run = 0
        track.window_start = None
        backend.ejected = True
        backend.ejected_until = now + duration
        backend.ejections_total += 1
        self.ejections_total += 1
        self._restores[backend] = self._clock.callLater(
            duration, self._restore, backend
        )
        log.warn(
            "backend {backend} in pool {pool} ejected for {duration:g}s "
            "(ejection {steps} in a row): {reason}",
            backend=backend.name,
            pool=pool.name,
            duration=duration,
            steps=track.steps,
            reason=reason,
        )

    def _restore(self, backend: Backend) -> None:
        del self._restores[backend]
        backend.ejected = False
        backend.ejected_until = None
        track = self._tracks.get(backend)
        if track is not None:
            track.restored_at = self._clock.seconds()
        log.info(
            "backend {backend} in pool {pool} is back from its ejection",
            backend=backend.name,
            pool=self.pool.name,
        )
        if backend.state is BackendState.UP and backend in self.pool.backends:
            self.pool.start_ramp(backend)

    def forget(self, backend: Backend) -> None:
        """
        Drop what is known of C{backend} (it left the pool): an ejection
        under way ends now.
        """
        self._tracks.pop(backend, None)
        restore = self._restores.pop(backend, None)
        if restore is not None and restore.active():
            restore.cancel()
            backend.ejected = False
            backend.ejected_until = None

    def stop(self) -> None:
        """
        End every ejection under way now and forget everything.
        """
        for backend in list(self._restores):
            self.forget(backend)
        self._tracks.clear()
