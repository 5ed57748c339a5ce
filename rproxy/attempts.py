"""The backend attempt machine: getting one TCP connection or HTTP request to
a backend of a pool, for every front alike.

A L{BackendAttempt} picks a backend (with the caller's hash key), takes it
(L{Pool.acquire}), asks the caller for a kept-alive connection to it or
connects (timed out by the pool's policy on the injected clock), and on a
failure reports it (L{Pool.report_failure}, one log event), gives the
backend back and tries the next, up to C{policy.connect_tries}.  When every
backend left is at its C{max_connections}, it waits in the pool's queue
(L{rproxy.queueing}) for one to have room, up to C{policy.queue_timeout}.
A retry (to another backend after a failure) must fit in the pool's retry
budget (L{rproxy.backends.Pool.take_retry}).  When nothing is left it gives
up with the status an HTTP front answers: 503 when nothing could be tried
(or the queue was full, or the wait in it timed out), 504 when the last
connect timed out, 502 otherwise; C{refused} says which protection, if any,
refused it.  The caller hears of a connection or of giving up through two
callables, and says later how the connection went
(L{BackendAttempt.succeeded}, L{BackendAttempt.retry},
L{BackendAttempt.failed}, L{BackendAttempt.release}) or that its client left
(L{BackendAttempt.cancel}).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._endpoints import EndpointFor, backend_endpoint, proxy_header_for
from rproxy.backends import Backend, Pool
from rproxy.health import describe_failure
from rproxy.policy import PoolPolicy

__all__ = [
    "BAD_GATEWAY",
    "CONNECT_TIMED_OUT",
    "NO_BACKEND",
    "QUEUE_FULL",
    "QUEUE_TIMEOUT",
    "RETRY_BUDGET",
    "AttemptState",
    "BackendAttempt",
]

log = Logger(namespace="rproxy.attempts")

#: giving up with nothing tried: no backend could take the connection.
NO_BACKEND = 503
#: giving up after the last connect timed out.
CONNECT_TIMED_OUT = 504
#: giving up after any other failure.
BAD_GATEWAY = 502

#: what refused an attempt that gave up (its C{refused}): the pool's queue
#: was full, the wait in it timed out, the retry budget had no room.
QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"
RETRY_BUDGET = "retry_budget"

#: how a connect that took too long fails: our own timeout on the connect
#: Deferred, or the endpoint's.
_CONNECT_TIMEOUTS = (defer.TimeoutError, error.TimeoutError)


class AttemptState(Enum):
    """
    Where a L{BackendAttempt} is.
    """

    #: not started, or between a failure and the next try.
    READY = "ready"
    #: waiting in the pool's queue for a backend to have room.
    QUEUED = "queued"
    #: a connect to C{backend} is under way.
    CONNECTING = "connecting"
    #: C{backend} holds a connection for the caller (new or reused).
    CONNECTED = "connected"
    #: given up, released, failed or cancelled: nothing is held.
    DONE = "done"


# Module names for the members: an Enum member lookup costs ten times a
# global one, and these run on every request.
_READY = AttemptState.READY
_QUEUED = AttemptState.QUEUED
_CONNECTING = AttemptState.CONNECTING
_CONNECTED = AttemptState.CONNECTED
_DONE = AttemptState.DONE


class BackendAttempt:
    """
    One client connection's or request's way to a backend of C{pool}.

    @param pool: where backends come from and outcomes go.
    @param clock: times connects and waits in the queue out.
    @param endpoint_for: makes the endpoint to a backend (with the PROXY
        header to send first, when the policy sends one).
    @param factory_for: the protocol factory for a connect to a backend.
    @param connected: called with the backend and the connected protocol
        (the reused one, if C{reuse} gave it): the caller now holds it.
    @param gave_up: called with the status (L{NO_BACKEND},
        L{CONNECT_TIMED_OUT}, L{BAD_GATEWAY}) when no backend is left.
    @param key: what a hashing balancer hashes (the client's IP, a header's
        value), or None.
    @param client: the client's transport, whose addresses the PROXY header
        carries when the policy has C{send_proxy}.
    @param reuse: asked, after each pick and before connecting, for a
        kept-alive connection to the backend; one it gives is used as if
        just connected.

    @ivar policy: the pool's policy when the attempt was made; it holds for
        the attempt's whole life, whatever a reload does.
    @ivar preface: the PROXY header each connect sends first, or C{b""}.
    @ivar tried: the backends tried, in order.
    @ivar backend: the backend being tried or connected (the last one
        tried, once done).
    @ivar reused: whether the connection came from C{reuse}.
    @ivar status: why it gave up, once it has.
    @ivar refused: what refused it, if a protection did (L{QUEUE_FULL},
        L{QUEUE_TIMEOUT}, L{RETRY_BUDGET}).
    """

    # Defaults most attempts keep (one is made per connection or request).
    backend: Backend | None = None
    reused: bool = False
    status: int | None = None
    state: AttemptState = AttemptState.READY
    preface: bytes = b""
    _connecting: defer.Deferred[Any] | None = None
    _holding: bool = False
    #: C{backend} was connected (and may have been released since).
    _had_connection: bool = False
    _failed_status: int = BAD_GATEWAY
    refused: str | None = None
    #: counted in the pool's retries under way.
    _retrying: bool = False
    #: the end of its wait in the queue.
    _queue_timer: IDelayedCall | None = None

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        endpoint_for: EndpointFor,
        factory_for: Callable[[Backend], IProtocolFactory],
        *,
        connected: Callable[[Backend, Any], None],
        gave_up: Callable[[int], None],
        key: str | None = None,
        client: Any = None,
        reuse: Callable[[Backend], Any | None] | None = None,
    ) -> None:
        self.pool = pool
        self.policy: PoolPolicy = pool.policy
        send_proxy = self.policy.send_proxy
        if send_proxy is not None:
            self.preface = proxy_header_for(send_proxy, client)
        self.tried: list[Backend] = []
        self._clock = clock
        self._endpoint_for = endpoint_for
        self._factory_for = factory_for
        self._connected = connected
        self._gave_up = gave_up
        self._key = key
        self._client = client
        self._reuse = reuse

    @property
    def connecting(self) -> bool:
        """
        Whether a connect is under way.
        """
        return self.state is _CONNECTING

    @property
    def waiting(self) -> bool:
        """
        Whether it waits for a backend: in the queue or connecting.
        """
        state = self.state
        return state is _QUEUED or state is _CONNECTING

    @property
    def choosy(self) -> bool:
        """
        Whether some backends are out of its reach (those tried).
        """
        return bool(self.tried)

    # What the caller asks -------------------------------------------------

    def start(self) -> None:
        """
        Try the first backend (or wait in the pool's queue for one to have
        room).  C{connected} or C{gave_up} may be called before this
        returns.
        """
        if self.state is not _READY or self.tried:
            raise RuntimeError(f"attempt already started ({self.state.value})")
        self._next()

    def retry(self, reason: str, *, forget: bool = False) -> None:
        """
        The connection given to C{connected} failed before any byte of an
        answer: give the backend back, report C{reason} against it, and try
        the next one (C{gave_up} if none is left).

        @param forget: the failure is not the backend's (a reused
            connection it had closed meanwhile): nothing is reported, and
            the backend is no longer counted as tried, so it may be picked
            again.
        """
        self._lose(reason, forget=forget)
        self.state = _READY
        self._next()

    def failed(self, reason: str) -> None:
        """
        The connection given to C{connected} failed and will not be tried
        again (the request cannot be resent, the answer had begun or never
        came): give the backend back, if not yet released, and report
        C{reason} against it.
        """
        if self.state is _DONE and self._had_connection:
            self.state = _CONNECTED  # released already: report only
        self._lose(reason, forget=False)
        self._done()

    def succeeded(self) -> None:
        """
        The backend did what was asked of it (a TCP connect, an HTTP
        response): its run of failures is over.
        """
        if self.backend is not None:
            self.pool.report_success(self.backend)

    def finished(self) -> None:
        """
        The backend did what was asked and the caller is done with it:
        L{succeeded}, then L{release}.
        """
        backend = self.backend
        if backend is not None:
            self.pool.report_success(backend)
        self._give_back()
        self.state = _DONE
        if self._retrying:
            self._end_retry()

    def release(self) -> None:
        """
        The caller is done with the connection: give the backend back.
        Safe to call more than once.
        """
        self._give_back()
        self.state = _DONE
        if self._retrying:
            self._end_retry()

    def cancel(self) -> None:
        """
        The client went away: stop a connect under way (not a failure of
        the backend) and give the backend back, or leave the queue.
        Nothing is called back after this; a connection that still arrives
        is aborted.
        """
        connecting, self._connecting = self._connecting, None
        if self.state is _QUEUED:
            self._leave_queue()
        self._done()
        self._give_back()
        if connecting is not None:
            connecting.cancel()

    # The machine --------------------------------------------------------

    def _next(self) -> None:
        backend = None
        pool, tried, policy = self.pool, self.tried, self.policy
        if len(tried) < policy.connect_tries:
            if not tried and pool.queue.waiting and policy.queue_max:
                # Others wait for room already: behind them.
                self._wait()
                return
            backend = pool.pick(self._key, tried)
            if backend is None and policy.queue_max and pool.only_full(tried):
                self._wait()
                return
        if backend is None:
            self._give_up(self._failed_status if tried else NO_BACKEND)
            return
        self._use(backend)

    def _give_up(self, status: int, refused: str | None = None) -> None:
        self._done()
        self.status = status
        self.refused = refused
        self._gave_up(status)

    def _done(self) -> None:
        self.state = _DONE
        if self._retrying:
            self._end_retry()

    def _take_retry(self) -> bool:
        if self.pool.take_retry():
            self._retrying = True
            return True
        self._give_up(self._failed_status, RETRY_BUDGET)
        return False

    def _end_retry(self) -> None:
        self._retrying = False
        self.pool.end_retry()

    # The queue ----------------------------------------------------------

    def _wait(self) -> None:
        """
        Join the pool's queue until a backend has room, or refuse at once
        if the queue is full.
        """
        pool, policy = self.pool, self.policy
        queue = pool.queue
        if len(queue) >= policy.queue_max:
            queue.full_total += 1
            self._give_up(NO_BACKEND, QUEUE_FULL)
            return
        self.state = _QUEUED
        queue.join(self, self._clock)
        self._queue_timer = self._clock.callLater(
            policy.queue_timeout, self.stop_waiting
        )
        if pool.candidates(self.tried):
            queue.kick()  # room already (the queue's turns are due)

    def take_turn(self) -> bool:
        """
        The queue's turn (see L{rproxy.queueing.Waiter}): take a backend
        with room, if there is one.
        """
        backend = self.pool.pick(self._key, self.tried)
        if backend is None:
            return False
        self._leave_queue()
        self.state = _READY
        self._use(backend)
        return True

    def _leave_queue(self) -> None:
        self.pool.queue.leave(self)
        timer, self._queue_timer = self._queue_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def stop_waiting(self) -> None:
        """
        The wait in the queue has lasted long enough (C{queue_timeout}, or
        the caller's own timeout): leave the queue and give up with 503
        (L{QUEUE_TIMEOUT}).
        """
        if self.state is not _QUEUED:
            raise RuntimeError(f"not waiting in the queue ({self.state.value})")
        self._leave_queue()
        self.pool.queue.timeouts_total += 1
        self._give_up(NO_BACKEND, QUEUE_TIMEOUT)

    # Connecting ---------------------------------------------------------

    def _use(self, backend: Backend) -> None:
        tried = self.tried
        if tried and not self._retrying and not self._take_retry():
            return
        tried.append(backend)
        self.backend = backend
        self.pool.acquire(backend)
        self._holding = True
        self._had_connection = False
        kept = None if self._reuse is None else self._reuse(backend)
        if kept is not None:
            self.reused = True
            self._had_connection = True
            self.state = _CONNECTED
            self._connected(backend, kept)
            return
        self.reused = False
        self.state = _CONNECTING
        endpoint = backend_endpoint(self._endpoint_for, backend, self.preface)
        connecting = endpoint.connect(self._factory_for(backend))
        self._connecting = connecting
        connecting.addTimeout(self.policy.connect_timeout, self._clock)
        connecting.addCallbacks(
            self._on_connect,
            self._on_connect_failed,
            callbackArgs=(connecting,),
            errbackArgs=(connecting,),
        )
        connecting.addErrback(self._bug)

    def _on_connect(self, protocol: Any, connecting: defer.Deferred[Any]) -> None:
        if self._connecting is not connecting:
            # Cancelled, but the connection came all the same.
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return
        self._connecting = None
        self._had_connection = True
        self.state = _CONNECTED
        assert self.backend is not None
        self._connected(self.backend, protocol)

    def _on_connect_failed(
        self, failure: Failure, connecting: defer.Deferred[Any]
    ) -> None:
        if self._connecting is not connecting:
            return  # cancelled: not the backend's failure
        self._connecting = None
        backend = self.backend
        assert backend is not None
        self._give_back()
        reason = describe_failure(failure)
        log.info(
            "connect to {backend} in pool {pool} failed: {reason}",
            backend=backend.name,
            pool=self.pool.name,
            reason=reason,
        )
        self.pool.report_failure(backend, reason)
        timed_out = failure.check(*_CONNECT_TIMEOUTS)
        self._failed_status = CONNECT_TIMED_OUT if timed_out else BAD_GATEWAY
        self.state = _READY
        self._next()

    def _lose(self, reason: str, *, forget: bool) -> None:
        if self.state is not _CONNECTED:
            raise RuntimeError(f"no connection to lose ({self.state.value})")
        backend = self.backend
        assert backend is not None
        self._give_back()
        self._failed_status = BAD_GATEWAY
        if forget:
            self.tried.remove(backend)
            log.debug(
                "kept connection to {backend} in pool {pool} failed: {reason}",
                backend=backend.name,
                pool=self.pool.name,
                reason=reason,
            )
        else:
            self.pool.report_failure(backend, reason)

    def _give_back(self) -> None:
        if self._holding and self.backend is not None:
            self._holding = False
            self.pool.release(self.backend)

    def _bug(self, failure: Failure) -> None:
        log.failure(
            "bug while connecting to pool {pool}; dropping the client",
            failure,
            pool=self.pool.name,
        )
        self.cancel()
        abort = getattr(self._client, "abortConnection", None)
        if abort is not None:
            abort()
