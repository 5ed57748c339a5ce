"""Idle HTTP backend connections kept for reuse: one pool per listener
shared by its clients (L{KeepAlivePool}), and one per client connection for
pools that send PROXY headers (L{ClientKeepAlive})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from rproxy.backends import AdminState, Backend

if TYPE_CHECKING:
    from rproxy.http.upstream import UpstreamProtocol

__all__ = ["ClientKeepAlive", "KeepAlivePool"]


class KeepAlivePool:
    """
    Idle keep-alive connections per backend: the most recently used first,
    at most C{max_idle} per backend (enough for the concurrency a busy
    listener keeps in flight, so connections are not churned), each closed
    after C{idle_timeout}.

    Connections are kept in the order they were put back, so the oldest are
    at the bottom of each stack; one timer for the whole pool closes them as
    they expire (not a timer per connection, which a busy proxy would set
    and cancel on every request).
    """

    def __init__(
        self, clock: IReactorTime, *, max_idle: int = 256, idle_timeout: float = 30.0
    ):
        self._clock = clock
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        #: per backend, (connection, when it was put back, when it expires),
        #: oldest first.
        self._idle: dict[Backend, list[tuple[UpstreamProtocol, float, float]]] = {}
        self._sweep: IDelayedCall | None = None

    def idle_count(self, backend: Backend) -> int:
        """
        Idle connections kept for C{backend}.
        """
        return len(self._idle.get(backend, ()))

    def take(
        self, backend: Backend, fresh_within: float | None = None
    ) -> UpstreamProtocol | None:
        """
        An idle connection to C{backend}, the most recently used, or None.

        @param fresh_within: only a connection idle for less than this many
            seconds will do.  A request that could not be retried should not
            go out on a connection the backend may be closing just now (its
            own idle timeout may be as short as a few seconds).
        """
        idle = self._idle.get(backend)
        if (
            fresh_within is not None
            and idle
            and self._clock.seconds() - idle[-1][1] >= fresh_within
        ):
            return None
        while idle:
            connection = idle.pop()[0]
            connection.on_idle_lost = None
            if connection.connected_:
                return connection
        return None

    def put(
        self,
        connection: UpstreamProtocol,
        max_idle: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        """
        Keep C{connection} for reuse if it may be reused, there is room and
        its backend is enabled; close it otherwise.

        @param max_idle: overrides the pool's C{max_idle} for this backend.
        @param idle_timeout: overrides the pool's C{idle_timeout} for this
            connection.
        """
        if max_idle is None:
            max_idle = self.max_idle
        if idle_timeout is None:
            idle_timeout = self.idle_timeout
        idle = self._idle.get(connection.backend)
        if idle is None:
            idle = self._idle[connection.backend] = []
        if (
            not connection.reusable
            or not connection.connected_
            or len(idle) >= max_idle
            # A draining or disabled backend is to see its connections end.
            or connection.backend.admin is not AdminState.ENABLED
        ):
            if connection.transport is not None:
                connection.transport.loseConnection()
            return
        connection.on_idle_lost = self._lost
        now = self._clock.seconds()
        expires = now + idle_timeout
        idle.append((connection, now, expires))
        sweep = self._sweep
        if sweep is None:
            self._sweep = self._clock.callLater(idle_timeout, self._expire)
        elif expires < sweep.getTime():
            sweep.reset(idle_timeout)

    def _expire(self) -> None:
        self._sweep = None
        next_expiry = None
        now = self._clock.seconds()
        for idle in self._idle.values():
            # Expiry times are in order unless idle timeouts differ (a
            # reload changed them), so look at every entry.
            closing = [entry for entry in idle if entry[2] <= now]
            if closing:
                idle[:] = [entry for entry in idle if entry[2] > now]
            for connection, _, _ in closing:
                connection.on_idle_lost = None
                if connection.transport is not None:
                    connection.transport.loseConnection()
            for entry in idle:
                if next_expiry is None or entry[2] < next_expiry:
                    next_expiry = entry[2]
        if next_expiry is not None:
            self._sweep = self._clock.callLater(
                max(next_expiry - now, 0.0), self._expire
            )

    def _lost(self, connection: UpstreamProtocol) -> None:
        idle = self._idle.get(connection.backend, [])
        for index, (kept, _, _) in enumerate(idle):
            if kept is connection:
                del idle[index]
                return

    def discard(self, backend: Backend) -> None:
        """
        Close the idle connections to C{backend} (it left its pool, or how
        to reach it changed).
        """
        for connection, _, _ in self._idle.pop(backend, ()):
            connection.on_idle_lost = None
            if connection.transport is not None:
                connection.transport.loseConnection()

    def close_all(self) -> None:
        """
        Close every idle connection (on shutdown).
        """
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for idle in self._idle.values():
            for connection, _, _ in idle:
                connection.on_idle_lost = None
                if connection.transport is not None:
                    connection.transport.loseConnection()
        self._idle.clear()


class ClientKeepAlive:
    """
    The idle backend connections of one client connection, for pools that
    send a PROXY header: such a backend connection announced this client,
    so it carries this client's later requests only, never another's.  At
    most one per backend (a client has one request in flight at a time),
    closed after C{idle_timeout} (looked at when one is asked for; the
    client's own keep-alive timeout ends the rest) and all of them when the
    client connection closes (L{close_all}).

    Same C{take} and C{put} as L{KeepAlivePool}, so the front protocol uses
    either alike.
    """

    def __init__(self, clock: IReactorTime, *, idle_timeout: float = 30.0):
        self._clock = clock
        self.idle_timeout = idle_timeout
        #: per backend, (connection, when it was put back, its idle timeout).
        self._idle: dict[Backend, tuple[UpstreamProtocol, float, float]] = {}

    def idle_count(self, backend: Backend) -> int:
        """
        Idle connections kept for C{backend}: 0 or 1.
        """
        return int(backend in self._idle)

    def take(
        self, backend: Backend, fresh_within: float | None = None
    ) -> UpstreamProtocol | None:
        """
        The idle connection to C{backend}, if it is still good (connected,
        idle for less than its idle timeout and than C{fresh_within}).
        """
        kept = self._idle.pop(backend, None)
        if kept is None:
            return None
        connection, since, idle_timeout = kept
        idle_for = self._clock.seconds() - since
        if not connection.connected_ or idle_for >= idle_timeout:
            _close(connection)
            return None
        if fresh_within is not None and idle_for >= fresh_within:
            # Too old for this request only: kept for a later one.
            self._idle[backend] = kept
            return None
        return connection

    def put(
        self,
        connection: UpstreamProtocol,
        max_idle: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        """
        Keep C{connection} for this client if it may be reused (and
        C{max_idle} is not 0); close it otherwise.
        """
        if not connection.reusable or not connection.connected_ or max_idle == 0:
            _close(connection)
            return
        previous = self._idle.pop(connection.backend, None)
        if previous is not None:
            _close(previous[0])
        self._idle[connection.backend] = (
            connection,
            self._clock.seconds(),
            self.idle_timeout if idle_timeout is None else idle_timeout,
        )

    def close_all(self) -> None:
        """
        Close every idle connection: the client has gone.
        """
        idle, self._idle = self._idle, {}
        for connection, _, _ in idle.values():
            _close(connection)


def _close(connection: UpstreamProtocol) -> None:
    if connection.transport is not None:
        connection.transport.loseConnection()
