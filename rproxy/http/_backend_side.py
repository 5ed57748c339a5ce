"""The backend side of an HTTP exchange: choosing a backend, connecting or
reusing a kept-alive connection, retrying, sending the request head and
streaming the request body."""

from __future__ import annotations

from typing import cast

from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy._endpoints import backend_endpoint, proxy_header_for
from rproxy.backends import Pool
from rproxy.health import describe_failure
from rproxy.http._front_state import (
    BODY,
    CLOSED,
    WAIT,
    FrontState,
    end_stream,
    retryable,
)
from rproxy.http.chunked import End, Trailers, encode_chunk, encode_last_chunk
from rproxy.http.framing import HTTPError
from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool
from rproxy.http.messages import header, request_head
from rproxy.http.upstream import IResponseSink, UpstreamFactory, UpstreamProtocol

log = Logger(namespace="rproxy.http")

#: a request that could not be sent again only goes out on a pooled backend
#: connection idle for less than this: an older one may be closing just now
#: (backends' own keep-alive timeouts can be as short as two seconds).
FRESH_REUSE = 1.0

#: how a connect that took too long fails: our own timeout on the connect
#: Deferred, or the endpoint's.
_CONNECT_TIMEOUTS = (defer.TimeoutError, error.TimeoutError)


class BackendSide(FrontState):
    """
    The part of L{rproxy.http.server.HTTPFrontProtocol} that gets a request
    to a backend.
    """

    def _hash_key(self, pool: Pool) -> str | None:
        key = pool.hash_key
        if key.startswith("header:") and self.request is not None:
            value = header(self.request.headers, key[7:].lower().encode())
            return value.decode("latin-1") if value is not None else None
        return self.client

    def _connect(self, failed: int = 502) -> None:
        """
        Send the request to the next backend the pool gives, reusing an idle
        connection to it if there is one.

        @param failed: the answer if no backend is left to try after a
            failure: 502, or 504 when the last connect timed out (as nginx
            answers).  With nothing tried, no backend was up: 503.
        """
        pool = self.pool
        assert pool is not None
        backend = None
        if len(self.tried) < pool.connect_tries:
            backend = pool.pick(self._hash_key(pool), self.tried)
        if backend is None:
            self._reject(503 if not self.tried else failed)
            return
        self.tried.append(backend)
        self.backend = backend
        pool.acquire(backend)
        self._holding = True
        request = self.request
        assert request is not None
        upstream = self._keep_alive_for(pool).take(
            backend, None if retryable(request) else FRESH_REUSE
        )
        if upstream is not None:
            self._from_pool = True
            self._attach(upstream)
            return
        self._from_pool = False
        header = proxy_header_for(pool.send_proxy, self.transport)
        endpoint = backend_endpoint(self.factory.endpoint_for, backend, header)
        connecting = endpoint.connect(UpstreamFactory(backend, announced=bool(header)))
        connecting.addTimeout(self.settings.timeouts_for(pool.name)[0], self.clock)
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)
        connecting.addErrback(self._bug)

    def _keep_alive_for(
        self, pool: Pool, upstream: UpstreamProtocol | None = None
    ) -> KeepAlivePool | ClientKeepAlive:
        """
        Where idle connections to C{pool}'s backends are kept: the
        listener's shared pool, or for a pool that sends PROXY headers
        (each connection announces one client), this client's own.  An
        C{upstream} handed back goes where the way it was opened says (a
        reload may have changed the pool since).
        """
        private = (
            pool.send_proxy is not None if upstream is None else upstream.announced
        )
        if not private:
            shared: KeepAlivePool = self.factory.keep_alive
            return shared
        own = self._own_keep_alive
        if own is None:
            own = self._own_keep_alive = ClientKeepAlive(self.clock)
        return own

    def _connected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        if self._state == CLOSED:
            upstream.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._attach(upstream)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        backend, pool = self.backend, self.pool
        assert backend is not None and pool is not None
        self._release_backend()
        if self._state == CLOSED:
            return
        reason = describe_failure(failure)
        log.info(
            "connect to {backend} in pool {pool} failed: {reason}",
            backend=backend.name,
            pool=pool.name,
            reason=reason,
        )
        pool.report_failure(backend, reason)
        self._connect(504 if failure.check(*_CONNECT_TIMEOUTS) else 502)

    def _bug(self, failure: Failure) -> None:
        log.failure("bug in the HTTP proxy; closing the connection", failure)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _attach(self, upstream: UpstreamProtocol) -> None:
        # Success is reported to the pool when the response has come
        # (ResponseSide), not here: a backend that accepts connections but
        # answers garbage, resets or never answers must run up failures.
        head, backend = self.request, self.backend
        assert head is not None and backend is not None
        self.upstream = upstream
        # The whole protocol is the sink: ResponseSide is the other part of it.
        upstream.start(
            cast(IResponseSink, self), head.method, upgrade=head.upgrade is not None
        )
        settings = self.settings
        upstream.write(
            request_head(
                head,
                self.target,
                backend_address=backend.address.encode(),
                client_ip=self.client,
                scheme=settings.scheme,
                policy=settings.policy,
            )
        )
        self._upstream_started = self.clock.seconds()
        if self._state == WAIT:
            self._request_sent()
            return
        upstream.transport.registerProducer(self.transport, True)  # type: ignore[union-attr]
        self._resume()
        self._pump_body()
        if self._read_closed and self._state == BODY:
            # The client sent a FIN while connecting, and what it had sent
            # turned out not to be the whole body.
            self._give_up(499)

    def _pump_body(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        buffer = self._buffer
        if not buffer:
            return
        if self._decoder is None:
            count = min(self._body_left, len(buffer))
            data = bytes(buffer[:count])
            del buffer[:count]
            self._body_left -= count
            self.bytes_in += count
            upstream.write(data)
            if self._body_left == 0:
                self._body_sent()
            return
        data = bytes(buffer)
        buffer.clear()
        try:
            events = self._decoder.feed(data)
        except HTTPError as error:
            self._fail_request(error.status)
            return
        for event in events:
            if isinstance(event, bytes):
                self.bytes_in += len(event)
                upstream.write(encode_chunk(event))
            elif isinstance(event, Trailers):
                pass  # request trailers are not forwarded
            elif isinstance(event, End):
                upstream.write(encode_last_chunk())
                buffer[:0] = event.rest
                self._body_sent()
                return

    def _fail_request(self, status: int) -> None:
        """
        The exchange failed (a malformed or too large body, a broken or
        silent backend): drop the backend connection and answer C{status},
        or cut the client off if the response has begun.
        """
        if self._response_started:
            self._drop_upstream()
            self._abort()
        else:
            self._reject(status)

    def _request_sent(self) -> None:
        self._state = WAIT
        self._last_io = self.clock.seconds()
        if self.upstream is not None:
            # The client may have been paused by a full backend connection.
            end_stream(self.upstream.transport, resume=not self._paused)
        if self._buffer and len(self._buffer) > self.settings.limits.max_head:
            self._pause()

    def _body_sent(self) -> None:
        self._request_sent()
        if self._switch is not None:
            self._complete_switch()

    def _exchange_timed_out(self) -> None:
        """
        Nothing moved for the response timeout: a client that stopped
        sending its body gets 408, a backend that has not started answering
        504, and a response that stalled midway is cut.
        """
        if self._state == BODY and not self._response_started:
            self._fail_request(408)
            return
        backend, pool = self.backend, self.pool
        if backend is not None and pool is not None and self._holding:
            pool.report_failure(backend, "no response in time")
        self._fail_request(504)

    def upstream_failed(self, reason: str, status: int) -> None:
        upstream, backend, pool, request = (
            self.upstream,
            self.backend,
            self.pool,
            self.request,
        )
        assert pool is not None and backend is not None and request is not None
        self.upstream = None
        self._release_backend()
        if self._state == CLOSED:
            return
        received = upstream is not None and upstream.received_any
        if self._from_pool and not received:
            # A reused connection the backend had closed meanwhile: not the
            # backend's fault, and the same backend may be asked again.
            self.tried.remove(backend)
        else:
            pool.report_failure(backend, reason)
        if not self._response_started and not received and retryable(request):
            self._connect()
        else:
            self._fail_request(status)
