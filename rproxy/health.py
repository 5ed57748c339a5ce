"""Active health checks on LoopingCalls, and the back-off that stands in for them.

A L{HealthMonitor} runs one L{IHealthCheck} per backend of a pool on a
L{LoopingCall}, each started at a random offset within the interval so that the
checks of many backends do not fire in lockstep.  Results go to
L{Pool.record_check}, which applies rise/fall.  A pool without active checks
(C{check = "none"}) gets a back-off instead: a backend that passive health
marked down is offered traffic again after C{interval}, then twice that, and so
on up to L{MAX_BACKOFF_FACTOR} times it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rproxy._endpoints import backend_endpoint, reactor_endpoints
from rproxy.backends import Backend, BackendState, Pool
from rproxy.interfaces import IHealthCheck
from rproxy.proxyprotocol import encode_local

log = Logger(namespace="rproxy.health")

#: the longest back-off of a pool without checks, in multiples of its interval.
MAX_BACKOFF_FACTOR = 32
#: how much of a response an HTTP check reads looking for the status line.
_MAX_STATUS_LINE = 4096


class HealthCheckError(Exception):
    """
    A health check ran and the backend did not pass; the text says why.
    """


def describe_failure(failure: Failure) -> str:
    """
    A short, human reason for a failed check or connect: the one place
    that words connect, TLS and check failures for logs and backend states.
    """
    error = failure.value
    if isinstance(
        error,
        TimeoutError | ConnectTimeoutError | CancelledError | ConnectingCancelledError,
    ):
        return "timed out"
    if isinstance(error, HealthCheckError):
        return str(error)
    if isinstance(error, ConnectError):
        return error.__class__.__name__ + (
            f": {error.osError}" if error.osError else ""
        )
    if isinstance(error, VerificationError):
        names = ", ".join(_identity(mismatch) for mismatch in error.errors)
        return f"TLS: the certificate is not for {names}"
    if isinstance(error, SSL.Error):
        reasons = [
            entry[2]
            for entry in (error.args[0] if error.args else ())
            if isinstance(entry, tuple) and len(entry) == 3
        ]
        return "TLS handshake failed: " + ("; ".join(reasons) or str(error))
    return f"{error.__class__.__name__}: {error}"


def _identity(mismatch: object) -> str:
    """
    The name or address a service-identity mismatch was about.
    """
    wanted = getattr(mismatch, "mismatched_id", None)
    for attribute in ("hostname", "ip"):
        value = getattr(wanted, attribute, None)
        if isinstance(value, bytes):
            return value.decode("ascii", "replace")
        if value is not None:
            return str(value)
    return str(mismatch)


EndpointFor = Callable[[Backend, int | None], Any]


class _Probe(Protocol):
    """
    Connects, optionally writes a request, and decides pass or fail.
    """

    def __init__(self, request: bytes | None, judge: Callable[[bytes], None] | None):
        self._request = request
        self._judge = judge
        self._buffer = b""
        self.done: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[None]) -> None:
        transport: ITransport | None = self.transport
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        if self._request is None:
            self.done.callback(None)
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called or self._judge is None:
            return
        self._buffer += data
        line, sep, _ = self._buffer.partition(b"\r\n")
        if not sep and len(self._buffer) < _MAX_STATUS_LINE:
            return
        self.transport.loseConnection()  # type: ignore[union-attr]
        try:
            self._judge(line)
        except HealthCheckError as error:
            self.done.errback(error)
        else:
            self.done.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(
                HealthCheckError("connection closed before a status line")
            )


class _ProbeFactory(Factory):
    noisy = False

    def __init__(self, request: bytes | None, judge: Callable[[bytes], None] | None):
        self._request = request
        self._judge = judge

    def buildProtocol(self, addr: Any) -> _Probe:
        return _Probe(self._request, self._judge)


def _endpoint(
    reactor: Any,
    backend: Backend,
    port: int | None,
    timeout: float,
    send_proxy: str | None,
) -> Any:
    """
    Where a check of C{backend} connects: its address, or C{port} on its
    host, over its TLS if it has any.  With C{send_proxy}, the connection
    starts with the PROXY header of that version that carries no client
    (v1 C{PROXY UNKNOWN}, v2 C{LOCAL}), as backends that require the header
    expect of a check.
    """
    preface = b"" if send_proxy is None else encode_local(send_proxy)
    return backend_endpoint(
        reactor_endpoints(reactor, timeout, port=port), backend, preface
    )


def _probe(
    endpoint: Any, request: bytes | None, judge: Callable[[bytes], None] | None
) -> Deferred[None]:
    connecting: Deferred[_Probe] = endpoint.connect(_ProbeFactory(request, judge))
    return connecting.addCallback(lambda probe: probe.done)


@implementer(IHealthCheck)
class TCPCheck:
    """
    Passes when a TCP connection to the backend (or to C{port}) opens and,
    for a TLS backend, its TLS handshake succeeds.  With C{send_proxy}
    (C{"v1"}, C{"v2"}), the connection starts with a PROXY header without
    a client.
    """

    name = "tcp"

    def __init__(
        self,
        reactor: Any,
        *,
        port: int | None = None,
        timeout: float = 1.0,
        send_proxy: str | None = None,
    ):
        self._reactor = reactor
        self._port = port
        self._timeout = timeout
        self._send_proxy = send_proxy

    def check(self, backend: Backend) -> Deferred[None]:
        endpoint = _endpoint(
            self._reactor, backend, self._port, self._timeout, self._send_proxy
        )
        return _probe(endpoint, None, None)


@implementer(IHealthCheck)
class HTTPCheck:
    """
    Sends C{GET path} and passes when the status is in C{expect_status}.
    With C{send_proxy} (C{"v1"}, C{"v2"}), the request follows a PROXY
    header without a client.
    """

    name = "http"

    def __init__(
        self,
        reactor: Any,
        *,
        path: str = "/",
        expect_status: tuple[int, int] = (200, 399),
        host: str | None = None,
        port: int | None = None,
        timeout: float = 1.0,
        send_proxy: str | None = None,
    ):
        self._reactor = reactor
        self._send_proxy = send_proxy
        self._path = path
        self._expect = expect_status
        self._host = host
        self._port = port
        self._timeout = timeout

    def request_for(self, backend: Backend) -> bytes:
        """
        The bytes sent to C{backend}.
        """
        host = self._host or backend.address
        return (
            f"GET {self._path} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: rproxy-health\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")

    def judge(self, status_line: bytes) -> None:
        """
        Raise L{HealthCheckError} unless C{status_line} has an expected status.
        """
        parts = status_line.split(b" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/1.")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise HealthCheckError(f"not an HTTP status line: {status_line[:80]!r}")
        status = int(parts[1])
        low, high = self._expect
        if not low <= status <= high:
            raise HealthCheckError(f"status {status}, expected {low}-{high}")

    def check(self, backend: Backend) -> Deferred[None]:
        endpoint = _endpoint(
            self._reactor, backend, self._port, self._timeout, self._send_proxy
        )
        return _probe(endpoint, self.request_for(backend), self.judge)


class HealthMonitor(Service):
    """
    Keeps the health of one pool's backends: active checks when given one,
    otherwise a back-off after passive health marks a backend down.

    Call L{sync} after adding or removing backends of a running pool.
    """

    def __init__(
        self,
        pool: Pool,
        check: IHealthCheck | None,
        clock: IReactorTime,
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        rng: random.Random | None = None,
    ):
        self.pool = pool
        self.check = check
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._rng = rng or random.Random()
        self._loops: dict[Backend, LoopingCall] = {}
        self._starts: dict[Backend, IDelayedCall] = {}
        self._in_flight: dict[Backend, Deferred[None]] = {}
        self._backoff: dict[Backend, float] = {}
        self._trials: dict[Backend, IDelayedCall] = {}
        self._trial_at: dict[Backend, float] = {}

    def startService(self) -> None:
        super().startService()
        self.pool.observe(self._state_changed)
        self.sync()

    def stopService(self) -> None:
        if not self.running:
            return
        super().stopService()
        self.pool.unobserve(self._state_changed)
        for backend in list(self._loops) + list(self._trials):
            self._forget(backend)

    def sync(self) -> None:
        """
        Start checking new members of the pool and stop checking old ones.
        """
        members = set(self.pool.backends)
        for backend in set(self._loops) | set(self._trials):
            if backend not in members:
                self._forget(backend)
        for backend in self.pool.backends:
            if self.check is None:
                if not backend.healthy and backend not in self._trials:
                    # Down before this monitor ran (or before a restart).
                    self._schedule_trial(backend)
            elif backend not in self._loops:
                self._start_loop(backend)

    def _start_loop(self, backend: Backend) -> None:
        loop = LoopingCall(self._check_once, backend)
        loop.clock = self._clock
        self._loops[backend] = loop
        offset = self._rng.uniform(0, self.interval)
        self._starts[backend] = self._clock.callLater(
            offset, self._begin, backend, loop
        )

    def _begin(self, backend: Backend, loop: LoopingCall) -> None:
        del self._starts[backend]
        loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure(
                "health loop of {backend} stopped", f, backend=backend.name
            )
        )

    def _forget(self, backend: Backend) -> None:
        start = self._starts.pop(backend, None)
        if start is not None and start.active():
            start.cancel()
        loop = self._loops.pop(backend, None)
        if loop is not None and loop.running:
            loop.stop()
        checking = self._in_flight.pop(backend, None)
        if checking is not None:
            checking.cancel()
        trial = self._trials.pop(backend, None)
        if trial is not None and trial.active():
            trial.cancel()
        self._backoff.pop(backend, None)
        self._trial_at.pop(backend, None)

    def _check_once(self, backend: Backend) -> Deferred[None]:
        assert self.check is not None
        started = self._clock.seconds()
        checking = self.check.check(backend)
        self._in_flight[backend] = checking
        checking.addTimeout(self.timeout, self._clock)

        def passed(_: None) -> None:
            self.pool.record_check(backend, True, "passed")

        def failed(failure: Failure) -> None:
            if self._in_flight.get(backend) is not checking:
                return  # cancelled by stopService or sync(): not a verdict
            self.pool.record_check(backend, False, describe_failure(failure))

        def done(_: None) -> None:
            self._in_flight.pop(backend, None)
            backend.last_check_duration = self._clock.seconds() - started

        checking.addCallbacks(passed, failed).addCallback(done)
        return checking

    # Back-off for pools without active checks ---------------------------

    def _state_changed(
        self,
        pool: Pool,
        backend: Backend,
        old: BackendState,
        new: BackendState,
        reason: str,
    ) -> None:
        if self.check is not None or new is not BackendState.DOWN:
            return
        if not self.running or backend in self._trials:
            return
        self._schedule_trial(backend)

    def _schedule_trial(self, backend: Backend) -> None:
        previous = self._backoff.get(backend)
        if previous is None or self._up_since(backend) > 2 * previous:
            delay = self.interval
        else:
            delay = min(previous * 2, self.interval * MAX_BACKOFF_FACTOR)
        self._backoff[backend] = delay
        self._trials[backend] = self._clock.callLater(
            delay, self._trial, backend, delay
        )

    def _up_since(self, backend: Backend) -> float:
        up_at = self._trial_at.get(backend)
        return self._clock.seconds() - up_at if up_at is not None else float("inf")

    def _trial(self, backend: Backend, delay: float) -> None:
        del self._trials[backend]
        self._trial_at[backend] = self._clock.seconds()
        if not backend.healthy:
            self.pool.mark_up(
                backend,
                f"retrying after {delay:g}s back-off",
                fails=max(self.pool.fall - 1, 0),
            )
