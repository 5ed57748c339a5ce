"""Open client connections of one listener, for graceful shutdown."""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Closeable(TypingProtocol):
    """
    A front protocol that can be told to stop.
    """

    def shut_down(self, abort: bool) -> None:
        """
        Finish gracefully (C{abort=False}: close once idle) or drop now.
        """


class ConnectionTracker:
    """
    The set of a listener's open connections, and a way to wait until it
    empties within a grace period.
    """

    def __init__(self) -> None:
        self._open: set[Closeable] = set()
        self._waiting: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, connection: object) -> bool:
        return connection in self._open

    def add(self, connection: Closeable) -> None:
        """
        Count C{connection} as open.
        """
        self._open.add(connection)

    def discard(self, connection: Closeable) -> None:
        """
        C{connection} has closed.
        """
        self._open.discard(connection)
        if not self._open:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def drain(self, grace: float, clock: IReactorTime) -> Deferred[None]:
        """
        Ask every connection to finish, and drop those still open after
        C{grace} seconds.

        @return: a Deferred that fires once no connection is open.
        """
        if not self._open:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        for connection in list(self._open):
            connection.shut_down(abort=False)
        if not self._open:
            return done
        deadline: IDelayedCall = clock.callLater(grace, self._abort_all)

        def cancel_deadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()

        done.addCallback(cancel_deadline)
        return done

    def _abort_all(self) -> None:
        for connection in list(self._open):
            connection.shut_down(abort=True)
