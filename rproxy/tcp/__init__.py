"""TCP passthrough: a client connection spliced to a backend connection.

The front protocol pauses the client until a backend connects (the attempt
machine, L{rproxy.attempts.BackendAttempt}, tries the next backend the pool
gives when a connect fails, and waits in the pool's queue while every backend
is full), then each transport becomes the
other's producer, as in Twisted's C{portforward}: a slow reader on one side
pauses reading on the other, so memory per connection stays flat.  Half-close
is carried both ways.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy._endpoints import EndpointFor, reactor_endpoints
from rproxy._fastwrite import nothing_waiting, send_now
from rproxy._fds import FdBudget
from rproxy._tracking import ConnectionTracker, TrackedListener
from rproxy.accesslog import access_events
from rproxy.attempts import (
    NO_BACKEND,
    QUEUE_FULL,
    QUEUE_TIMEOUT,
    RETRY_BUDGET,
    AttemptState,
    BackendAttempt,
)
from rproxy.backends import Backend, Pool
from rproxy.interfaces import IListenerFactory, ListenerDescription
from rproxy.policy import PoolPolicy
from rproxy.stats import ListenerStats
from rproxy.tcp._splice import Splicer, can_splice, pipes_failed, take_pipes

log = Logger(namespace="rproxy.tcp")

#: how a connection a protection of its pool refused ended.
_REFUSED = {
    QUEUE_FULL: "queue full",
    QUEUE_TIMEOUT: "queue timeout",
    RETRY_BUDGET: "retry budget spent",
}


@implementer(IListenerFactory)
class TCPProxyFactory(TrackedListener, Factory):
    """
    Accepts client connections and splices each one to a backend of C{pool},
    with the pool's policy (connect timeout, tries, idle timeout, PROXY
    header) of the moment each connection is accepted.

    @param reactor: provides L{IReactorTime} and, unless C{endpoint_for} is
        given, L{IReactorTCP} for connecting to backends.
    @param endpoint_for: makes the endpoint that connects to a backend;
        by default a TCP endpoint to its address.
    @param listener: the name used in access events.
    @param splice: relay plain TCP pairs with Linux splice(2) where the
        reactor and the system allow it (bytes never enter Python).
    @param fds: the process's descriptor budget, if any: a pair gets splice
        pipes only while it has room for them, else is relayed in Python.
    @ivar stats: the listener's connection counters.
    """

    def __init__(
        self,
        pool: Pool,
        reactor: Any,
        *,
        listener: str = "tcp",
        endpoint_for: EndpointFor | None = None,
        splice: bool = True,
        fds: FdBudget | None = None,
    ):
        self.noisy = False
        self.splice = splice
        self.fds = fds
        self.pool = pool
        self.clock: IReactorTime = reactor
        self.listener = listener
        self.connections = ConnectionTracker()
        self.stats = ListenerStats()
        if endpoint_for is None:
            endpoint_for = reactor_endpoints(
                reactor, lambda: self.pool.policy.connect_timeout
            )
        self.endpoint_for = endpoint_for

    def buildProtocol(self, addr: IAddress | None) -> TCPFrontProtocol:
        return TCPFrontProtocol(self)

    def describe(self) -> ListenerDescription:
        return ListenerDescription("tcp", self.pool.name, (self.pool.name,))


def emit_access(
    *,
    client: str,
    listener: str,
    pool: str,
    backend: str,
    bytes_in: int,
    bytes_out: int,
    duration: float,
    ended: str,
) -> None:
    """
    The access event of one TCP connection, if anyone records them.
    """
    if access_events.active:
        access_events.emit(
            "{client} {listener} {pool}/{backend} {ended} "
            "in={bytes_in} out={bytes_out} {duration:.3f}s",
            client=client,
            listener=listener,
            pool=pool,
            backend=backend,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            duration=duration,
            ended=ended,
            status=ended,
            protocol="tcp",
        )


def _host_of(address: IAddress | None) -> str:
    return str(getattr(address, "host", "") or "")


@implementer(IHalfCloseableProtocol)
class _BackendProtocol(Protocol):
    """
    The backend side of a splice: hands everything to its front protocol.
    """

    def __init__(self, front: TCPFrontProtocol, backend: Backend):
        self.front = front
        self.backend = backend

    def dataReceived(self, data: bytes) -> None:
        self.front.moved_out(len(data))
        self.front.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.front.backend_finished_sending()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.front.backend_lost(reason)


class _BackendFactory(Factory):
    noisy = False

    def __init__(self, front: TCPFrontProtocol, backend: Backend):
        self._front = front
        self._backend = backend

    def buildProtocol(self, addr: IAddress | None) -> _BackendProtocol:
        return _BackendProtocol(self._front, self._backend)


@implementer(IHalfCloseableProtocol)
class TCPFrontProtocol(Protocol):
    """
    The client side of a splice.  One per client connection.

    @ivar bytes_in: bytes from the client to the backend.
    @ivar bytes_out: bytes from the backend to the client.
    @ivar preface: bytes read from the client before this protocol took the
        connection over (an SNI router's ClientHello), sent to the backend
        ahead of the rest.
    """

    preface = b""
    #: getting to a backend, from accept until the pair ends.
    attempt: BackendAttempt | None = None
    backend: Backend | None = None
    peer: _BackendProtocol | None = None
    _splicer: Splicer | None = None
    bytes_in = 0
    bytes_out = 0

    def __init__(self, factory: TCPProxyFactory):
        self.factory = factory
        self.pool = factory.pool
        self.clock = factory.clock
        #: the pool's policy when the client connected.
        self.policy: PoolPolicy = factory.pool.policy
        self.client = ""
        self.started = 0.0
        self.last_activity = 0.0
        self.ended = ""
        self._idle: IDelayedCall | None = None
        self._client_done_sending = False
        self._backend_done_sending = False
        self._client_gone = False
        self._backend_gone = False
        self._finished = False

    # Connecting ---------------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.factory.connections.add(self)
        self.client = _host_of(self.transport.getPeer())
        self.started = self.last_activity = self.clock.seconds()
        self.attempt = BackendAttempt(
            self.pool,
            self.clock,
            self.factory.endpoint_for,
            lambda backend: _BackendFactory(self, backend),
            connected=self._connected,
            gave_up=self._gave_up,
            key=self.client,
            client=self.transport,
        )
        self.policy = self.attempt.policy
        self.attempt.start()

    def _gave_up(self, status: int) -> None:
        assert self.attempt is not None
        refused = self.attempt.refused
        if refused is not None:
            self._end(_REFUSED[refused])  # the pool's queue or retry budget
        else:
            self._end("no backend" if status == NO_BACKEND else "connect failed")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _connected(self, backend: Backend, peer: _BackendProtocol) -> None:
        assert self.attempt is not None
        self.backend = backend
        self.attempt.succeeded()
        self.peer = peer
        client, server = self.transport, peer.transport
        assert client is not None and server is not None
        self.last_activity = self.clock.seconds()
        self._watch_idle(self.policy.idle_timeout)
        preface, self.preface = self.preface, b""
        if preface:
            self.moved_in(len(preface))
        # Splicing would overtake a preface still in the transport's buffer.
        sent = (not preface or send_now(server, preface)) and nothing_waiting(server)
        fds, listener = self.factory.fds, self.factory.listener
        spliceable = self.factory.splice and can_splice(self.clock, client, server)
        if sent and spliceable and take_pipes(fds, listener):
            try:
                self._splicer = Splicer(
                    self.clock,
                    client,
                    server,
                    self.moved_in,
                    self.moved_out,
                    self._splice_finished,
                    fds,
                    listener,
                )
            except OSError as error:
                pipes_failed(fds, listener, error)
                log.warn(
                    "cannot splice ({error}); relaying {client} through Python",
                    error=error,
                    client=self.client,
                )
            else:
                self._splicer.start()
                return
        client.registerProducer(server, True)  # type: ignore[attr-defined]
        server.registerProducer(client, True)  # type: ignore[attr-defined]
        client.resumeProducing()  # type: ignore[attr-defined]

    def moved_in(self, count: int) -> None:
        """
        Count C{count} bytes relayed from the client to the backend.
        """
        self.bytes_in += count
        self.backend.bytes_in += count  # type: ignore[union-attr]
        self.last_activity = self.clock.seconds()

    def moved_out(self, count: int) -> None:
        """
        Count C{count} bytes relayed from the backend to the client.
        """
        self.bytes_out += count
        self.backend.bytes_out += count  # type: ignore[union-attr]
        self.last_activity = self.clock.seconds()

    def _splice_finished(self, side: str | None, failure: Failure | None) -> None:
        """
        The splicer has ended: both sides half-closed (C{side} None), or one
        side failed.  Either way the transports close through Twisted.
        """
        self._splicer = None
        if side is None:
            self._end("closed")
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.peer.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._end(f"{side} reset")
            self._abort()

    # Relaying -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            # Read before the backend connected: bytes a PROXY header
            # reader passed on with the connection.  Sent first, as the
            # preface is.
            self.preface += data
            return
        self.moved_in(len(data))
        peer.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        """
        The client shut its write side: pass the half-close to the backend.
        """
        self._client_done_sending = True
        if self.peer is None:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.peer.transport.loseWriteConnection()  # type: ignore[union-attr]
        self._close_if_both_done()

    def writeConnectionLost(self) -> None:
        pass

    def backend_finished_sending(self) -> None:
        """
        The backend shut its write side: pass the half-close to the client.
        """
        self._backend_done_sending = True
        self.transport.loseWriteConnection()  # type: ignore[union-attr]
        self._close_if_both_done()

    def _close_if_both_done(self) -> None:
        if self._client_done_sending and self._backend_done_sending:
            self._end("closed")
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.peer.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._client_gone = True
        self._stop_splicer()
        attempt = self.attempt
        if attempt is not None and attempt.waiting:
            queued = attempt.state is AttemptState.QUEUED
            self._end(f"client left while {'queued' if queued else 'connecting'}")
            attempt.cancel()
        elif self.peer is not None and not self._backend_gone:
            self._pass_on_close("client", reason, self.peer.transport)
        self._finish()

    def backend_lost(self, reason: Failure) -> None:
        """
        The backend connection is gone.
        """
        self._backend_gone = True
        self._stop_splicer()
        if not self._client_gone:
            self._pass_on_close("backend", reason, self.transport)
        self._finish()

    def _pass_on_close(self, side: str, reason: Failure, other: Any) -> None:
        """
        C{side} has gone: close the other side the same way, a clean close
        with a close (after what is buffered), a reset with a reset, so a
        truncated stream never looks complete.
        """
        if reason.check(ConnectionDone):
            self._end(f"{side} closed")
            other.loseConnection()
        else:
            self._end(f"{side} reset")
            other.abortConnection()

    def _stop_splicer(self) -> None:
        if self._splicer is not None:
            self._splicer.stop()
            self._splicer = None

    # Ending -------------------------------------------------------------

    def _watch_idle(self, delay: float) -> None:
        self._idle = self.clock.callLater(delay, self._check_idle)

    def _check_idle(self) -> None:
        idle_for = self.clock.seconds() - self.last_activity
        remaining = self.policy.idle_timeout - idle_for
        if remaining > 0:
            self._watch_idle(remaining)
            return
        self._idle = None
        self._end("idle timeout")
        self._abort()

    def shut_down(self, abort: bool) -> None:
        """
        A TCP stream has no natural end the proxy can see: it is left to
        finish until the grace period is over, then dropped.
        """
        if abort:
            self._end("shutdown")
            self._abort()

    def _abort(self) -> None:
        self._stop_splicer()
        if self.attempt is not None and self.attempt.waiting:
            self.attempt.cancel()
        self.transport.abortConnection()  # type: ignore[union-attr]
        if self.peer is not None:
            self.peer.transport.abortConnection()  # type: ignore[union-attr]

    def _end(self, how: str) -> None:
        if not self.ended:
            self.ended = how

    def _finish(self) -> None:
        """
        Once both sides are gone (or the backend never came), release the
        backend, stop the idle timer and emit the access event.
        """
        if not self._client_gone or (self.peer is not None and not self._backend_gone):
            return
        if self._finished:
            return
        self._finished = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.attempt is not None:
            self.attempt.release()
        backend = self.backend
        emit_access(
            client=self.client,
            listener=self.factory.listener,
            pool=self.pool.name,
            backend=backend.name if backend is not None and self.peer else "-",
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            duration=self.clock.seconds() - self.started,
            ended=self.ended or "closed",
        )
        self.factory.stats.connection_ended(self.bytes_in, self.bytes_out)
        # Last: draining the listener waits for this, and the access log
        # closes after the drain.
        self.factory.connections.discard(self)
