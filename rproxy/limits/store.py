"""The shared store of rate limits: L{RedisStore}, one Redis server that
several rproxy processes (on one machine or many) keep their GCRA state in,
so that they enforce one quota together.

Each check is one atomic Lua script (L{CHECK_SCRIPT}, sent once per
connection and then by its SHA1 with C{EVALSHA}) that reads the key's TAT,
decides on Redis's own clock (C{TIME}, so the processes' clocks need not
agree), stores the new TAT with an expiry of when it is past, and answers
whether the request is allowed and how far the key is ahead of now.

The client is txredisapi's protocol (the Redis wire format and commands,
Twisted-native) connected by Twisted's own C{ClientService} on the injected
reactor, which reconnects with a backoff.  While no connection is ready
L{RedisStore.check} answers None at once, so a limit decides locally rather
than wait; the store logs once when Redis becomes unreachable and once when
it is back, never per request.  A reply slower than C{timeout} drops the
connection (and the checks waiting on it fail).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["CHECK_SCRIPT", "RedisAddress", "RedisStore"]

log = Logger(namespace="rproxy.limits")

#: GCRA in Redis: KEYS[1] the key; ARGV[1] the emission interval and
#: ARGV[2] the tolerance, in microseconds.  Answers {1 if allowed else 0,
#: microseconds the key's TAT is ahead of now after the check}.
CHECK_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
if tat - now > tolerance then
  return {0, tat - now}
end
local after = tat + interval
redis.call('SET', KEYS[1], string.format('%d', after),
           'PX', math.ceil((after - now) / 1000))
return {1, after - now}
"""


@frozen
class RedisAddress:
    """
    Where a Redis server is: C{redis://[:PASSWORD@]HOST[:PORT][/DB]}.
    """

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """
        The address C{url} gives.

        @raise ValueError: saying what is wrong with it.
        """
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"must be a redis://HOST[:PORT][/DB] URL, got {url!r}")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"has a bad port: {url!r}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database must be a number, got {path!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"takes no query or fragment, got {url!r}")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, int(path or 0), password)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


class _RedisFactory(Factory):
    """
    Builds txredisapi's protocol on the store's reactor; what the protocol
    asks of its factory when AUTH or SELECT fails goes to the log.
    """

    noisy = False
    #: txredisapi's protocol reads this on a failed AUTH or SELECT.
    isLazy = True  # noqa: N815 (txredisapi's name)

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def buildProtocol(self, addr: Any) -> Any:
        from txredisapi import RedisProtocol  # type: ignore[import-untyped]

        address = self.store.address
        protocol = RedisProtocol(
            replyTimeout=self.store.timeout,
            password=address.password,
            dbid=address.db or None,
        )
        protocol.factory = self
        # Its timers and deferred reads go on the store's reactor, not the
        # global one the module imports.
        protocol.callLater = self.store.reactor.callLater
        return protocol

    def stopTrying(self) -> None:  # noqa: N802 (txredisapi's name)
        """
        txredisapi gives up on a failed AUTH or SELECT; the service retries.
        """

    def connectionError(self, why: str) -> None:  # noqa: N802 (txredisapi's name)
        log.error("{store}: {why}", store=str(self.store.address), why=why)


class RedisStore:
    """
    GCRA state in one Redis server, shared by every rproxy using it.

    @ivar ready: whether a connection is ready for checks now.
    """

    def __init__(self, address: RedisAddress, reactor: Any, timeout: float = 0.5):
        self.address = address
        self.reactor = reactor
        self.timeout = timeout
        self._protocol: Any = None
        #: Redis was reported unreachable (the next connection is logged).
        self._down = False
        endpoint_type = (
            TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
        )
        endpoint = endpoint_type(
            reactor, address.host, address.port, timeout=timeout * 4
        )
        self._service = ClientService(
            endpoint,
            _RedisFactory(self),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=5.0),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def ready(self) -> bool:
        return self._protocol is not None

    def start(self) -> None:
        """
        Connect, and stay connected until L{stop}.
        """
        self._service.startService()
        waiting = self._service.whenConnected(failAfterFailures=1)
        waiting.addErrback(self._first_failed)

    def stop(self) -> Deferred[None]:
        """
        Close the connection and stop reconnecting.
        """
        self._protocol = None
        stopping: Deferred[None] = self._service.stopService()
        return stopping

    def check(
        self, key: str, interval: float, tolerance: float
    ) -> Deferred[tuple[bool, float]] | None:
        """
        One GCRA check of C{key} in Redis.

        @return: None at once when no connection is ready; else a Deferred
            of whether the request is allowed and the seconds its TAT is
            ahead of now after it, which fails when Redis does not answer
            (in time).
        """
        protocol = self._protocol
        if protocol is None:
            return None
        asked: Deferred[list[int]] = protocol.eval(
            CHECK_SCRIPT,
            [key],
            [int(interval * 1e6), int(tolerance * 1e6)],
        )
        return asked.addCallback(_answer)

    def _prepare(self, protocol: Any) -> Deferred[None]:
        ready: Deferred[Any] = protocol.whenConnected()
        return ready.addCallback(self._connected)

    def _connected(self, protocol: Any) -> None:
        self._protocol = protocol
        if self._down:
            self._down = False
            log.info(
                "{store} is reachable again: limits using it share it again",
                store=str(self.address),
            )
        lost: Deferred[Any] = protocol.whenDisconnected()
        lost.addCallback(self._lost)

    def _lost(self, protocol: Any) -> None:
        if self._protocol is protocol:
            self._protocol = None
        if self._service.running:
            self._unreachable("connection lost")

    def _first_failed(self, failure: Failure) -> None:
        if self._service.running:  # not stopped before it ever connected
            self._unreachable(failure.getErrorMessage())

    def _unreachable(self, why: str) -> None:
        if self._down:
            return
        self._down = True
        log.warn(
            "{store} is unreachable ({why}): limits using it decide locally "
            "(fail = open) or answer 503 (fail = closed) until it is back",
            store=str(self.address),
            why=why,
        )


def _answer(reply: list[int]) -> tuple[bool, float]:
    allowed, backlog = reply
    return bool(allowed), backlog / 1e6
