"""The backend attempt machine: getting one TCP connection or HTTP request to
a backend of a pool, for every front alike.

A L{BackendAttempt} picks a backend (with the caller's hash key), takes it
(L{Pool.acquire}), asks the caller for a kept-alive connection to it or
connects (timed out by the pool's policy on the injected clock), and on a
failure reports it (L{Pool.report_failure}, one log event), gives the
backend back and tries the next, up to C{policy.connect_tries}.  When none
is left it gives up with the status an HTTP front answers: 503 when nothing
could be tried, 504 when the last connect timed out, 502 otherwise.  The
caller hears of a connection or of giving up through two callables, and
says later how the connection went (L{BackendAttempt.succeeded},
L{BackendAttempt.retry}, L{BackendAttempt.failed},
L{BackendAttempt.release}) or that its client left
(L{BackendAttempt.cancel}).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
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

#: how a connect that took too long fails: our own timeout on the connect
#: Deferred, or the endpoint's.
_CONNECT_TIMEOUTS = (defer.TimeoutError, error.TimeoutError)


class AttemptState(Enum):
    """
    Where a L{BackendAttempt} is.
    """

    #: not started, or between a failure and the next try.
    READY = "ready"
    #: a connect to C{backend} is under way.
    CONNECTING = "connecting"
    #: C{backend} holds a connection for the caller (new or reused).
    CONNECTED = "connected"
    #: given up, released, failed or cancelled: nothing is held.
    DONE = "done"


# Module names for the members: an Enum member lookup costs ten times a
# global one, and these run on every request.
_READY = AttemptState.READY
_CONNECTING = AttemptState.CONNECTING
_CONNECTED = AttemptState.CONNECTED
_DONE = AttemptState.DONE


class BackendAttempt:
    """
    One client connection's or request's way to a backend of C{pool}.

    @param pool: where backends come from and outcomes go.
    @param clock: times connects out.
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
    """

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
        self.preface = (
            b""
            if self.policy.send_proxy is None
            else proxy_header_for(self.policy.send_proxy, client)
        )
        self.tried: list[Backend] = []
        self.backend: Backend | None = None
        self.reused = False
        self.status: int | None = None
        self.state = _READY
        self._clock = clock
        self._endpoint_for = endpoint_for
        self._factory_for = factory_for
        self._connected = connected
        self._gave_up = gave_up
        self._key = key
        self._client = client
        self._reuse = reuse
        self._connecting: defer.Deferred[Any] | None = None
        self._holding = False
        #: C{backend} was connected (and may have been released since).
        self._had_connection = False
        self._failed_status = BAD_GATEWAY

    @property
    def connecting(self) -> bool:
        """
        Whether a connect is under way.
        """
        return self.state is _CONNECTING

    # What the caller asks -------------------------------------------------

    def start(self) -> None:
        """
        Try the first backend.  C{connected} or C{gave_up} may be called
        before this returns.
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
        self.state = _DONE

    def succeeded(self) -> None:
        """
        The backend did what was asked of it (a TCP connect, an HTTP
        response): its run of failures is over.
        """
        if self.backend is not None:
            self.pool.report_success(self.backend)

    def release(self) -> None:
        """
        The caller is done with the connection: give the backend back.
        Safe to call more than once.
        """
        self._give_back()
        self.state = _DONE

    def cancel(self) -> None:
        """
        The client went away: stop a connect under way (not a failure of
        the backend) and give the backend back.  Nothing is called back
        after this; a connection that still arrives is aborted.
        """
        connecting, self._connecting = self._connecting, None
        self.state = _DONE
        self._give_back()
        if connecting is not None:
            connecting.cancel()

    # The machine --------------------------------------------------------

    def _next(self) -> None:
        backend = None
        if len(self.tried) < self.policy.connect_tries:
            backend = self.pool.pick(self._key, self.tried)
        if backend is None:
            self.state = _DONE
            self.status = self._failed_status if self.tried else NO_BACKEND
            self._gave_up(self.status)
            return
        self.tried.append(backend)
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
