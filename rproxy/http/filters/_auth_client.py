"""Asking an auth service over HTTP: L{AgentFetch}, a L{Fetch} made of
Twisted's C{Agent} on a persistent connection pool (keep-alive to the
service; HTTPS verified by the Agent's default browser-like policy), reading
at most L{MAX_BODY} bytes of each answer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from rproxy.http.filters.auth import AuthAnswer

__all__ = ["MAX_BODY", "AgentFetch", "auth_pool"]

#: the most bytes of an answer's body kept (the rest is not read).
MAX_BODY = 64 * 1024


def auth_pool(reactor: Any) -> HTTPConnectionPool:
    """
    A persistent connection pool for auth services.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    pool.cachedConnectionTimeout = 60
    return pool


_DONE = Failure(ResponseDone())


def _stop(transport: Any) -> None:
    """
    Stop a body's transfer (its transport is an C{IPushProducer}).
    """
    if transport is not None:
        transport.stopProducing()


class _Bounded(Protocol):
    """
    Collects a body up to C{limit} bytes; past that, stops the transfer and
    keeps what came.
    """

    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self.done = done
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        room = self.limit - self.size
        self.parts.append(data[:room])
        self.size += min(len(data), room)
        if len(data) > room:
            self.done.callback(b"".join(self.parts))
            _stop(self.transport)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class AgentFetch:
    """
    C{GET} a URL with some fields through C{agent} (by default an C{Agent}
    on C{pool}), firing with its L{AuthAnswer}.
    """

    def __init__(
        self,
        reactor: Any,
        pool: HTTPConnectionPool | None = None,
        agent: Any = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.agent = agent if agent is not None else Agent(reactor, pool=pool)
        self.max_body = max_body

    def __call__(
        self, url: bytes, fields: list[tuple[bytes, bytes]]
    ) -> Deferred[AuthAnswer]:
        headers = Headers()
        for name, value in fields:
            headers.addRawHeader(name, value)
        asked: Deferred[IResponse] = self.agent.request(b"GET", url, headers)
        return asked.addCallback(self._read)

    def _read(self, response: IResponse) -> Deferred[AuthAnswer]:
        protocol: _Bounded

        def cancel(_: Deferred[bytes]) -> None:
            _stop(protocol.transport)

        done: Deferred[bytes] = Deferred(cancel)
        protocol = _Bounded(done, self.max_body)
        response.deliverBody(protocol)
        fields = tuple(
            (name, value)
            for name, values in response.headers.getAllRawHeaders()
            for value in values
        )
        return done.addCallback(lambda body: AuthAnswer(response.code, fields, body))
