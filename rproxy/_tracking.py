"""Open client connections of one listener, for graceful shutdown and for
per-client connection limits, and the reload and shutdown part of a listener
factory built on them."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from rproxy.admission.networks import client_key

if TYPE_CHECKING:
    from rproxy.backends import Backend
    from rproxy.interfaces import IListenerFactory
    from rproxy.stats import ListenerStats


class Closeable(TypingProtocol):
    """
    A front protocol that can be told to stop.
    """

    def shut_down(self, abort: bool) -> None:
        """
        Finish gracefully (C{abort=False}: close once idle) or drop now.
        """


def _client_of(connection: object) -> str:
    transport = getattr(connection, "transport", None)
    peer = transport.getPeer() if transport is not None else None
    host = getattr(peer, "host", None)
    return client_key(host) if isinstance(host, str) else ""


class ConnectionTracker:
    """
    The set of a listener's open connections, and a way to wait until it
    empties within a grace period.

    Each connection is also counted under its client's address as its
    transport gives it when it is added (after a PROXY header, the
    announced one), by L{client_key}: L{open_from} says how many are open
    from one client.
    """

    def __init__(self) -> None:
        self._open: dict[Closeable, str] = {}
        self._per_client: dict[str, int] = {}
        self._waiting: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, connection: object) -> bool:
        return connection in self._open

    def open_from(self, key: str) -> int:
        """
        How many connections are open from the client L{client_key} calls
        C{key}.
        """
        return self._per_client.get(key, 0)

    def add(self, connection: Closeable) -> None:
        """
        Count C{connection} as open.
        """
        if connection in self._open:
            return
        key = self._open[connection] = _client_of(connection)
        if key:
            per_client = self._per_client
            per_client[key] = per_client.get(key, 0) + 1

    def discard(self, connection: Closeable) -> None:
        """
        C{connection} has closed.
        """
        key = self._open.pop(connection, None)
        if key:
            per_client = self._per_client
            left = per_client[key] - 1
            if left:
                per_client[key] = left
            else:
                del per_client[key]
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
        deadline: IDelayedCall = clock.callLater(grace, self.abort)

        def cancel_deadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()

        done.addCallback(cancel_deadline)
        return done

    def abort(self) -> None:
        """
        Drop every open connection now.
        """
        for connection in list(self._open):
            connection.shut_down(abort=True)


class TrackedListener:
    """
    The shutdown and reload part of L{rproxy.interfaces.IListenerFactory}
    for a front that keeps no backend connection for reuse (TCP, SNI): a
    reload's replacement takes over the connections and counters, draining
    is the tracker's.
    """

    connections: ConnectionTracker
    stats: ListenerStats
    clock: IReactorTime

    def reconfigure(self, replacement: IListenerFactory) -> IListenerFactory:
        """
        C{replacement} serves new connections; open ones keep the settings
        (and the backend) they began with, and count in the same tracker.
        """
        replacement.connections = self.connections
        replacement.stats = self.stats
        return replacement

    def forget(self, backends: Collection[Backend]) -> None:
        """
        Nothing to do: no backend connection is kept for reuse.
        """

    def drain(self, grace: float) -> Deferred[None]:
        """
        See L{ConnectionTracker.drain}.
        """
        return self.connections.drain(grace, self.clock)

    def abort(self) -> None:
        """
        Drop every open connection now.
        """
        self.connections.abort()
