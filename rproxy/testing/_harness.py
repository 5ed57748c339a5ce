"""L{HTTPHarness}: an HTTP listener between fake clients and fake backends,
on a L{Clock}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from rproxy.accesslog import access_events
from rproxy.backends import Backend, Pool, Registry
from rproxy.http.h1 import H1Connection
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.testing._fakes import Attempt, FakeEndpoints, HalfCloseTransport, connect
from rproxy.testing._http import Response, parse_responses, request_bytes

__all__ = ["Client", "HTTPHarness"]


class Client:
    """
    One client connection to the harness's listener.

    @ivar protocol: the listener's protocol for it (its C{exchange} is the
        request under way).
    @ivar transport: what the client received is its C{value()}.
    """

    def __init__(self, protocol: H1Connection, transport: HalfCloseTransport):
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes) -> Client:
        """
        The client sends C{data}.
        """
        self.protocol.dataReceived(data)
        return self

    def request(self, request: bytes | str, *args: Any, **kwargs: Any) -> Client:
        """
        Send a raw request (bytes), or one built by L{request_bytes} from a
        method (str) and its other arguments, on this connection.
        """
        if isinstance(request, bytes):
            assert not args and not kwargs, "a raw request takes no other arguments"
            return self.send(request)
        return self.send(request_bytes(request, *args, **kwargs))

    @property
    def received(self) -> bytes:
        """
        Everything the client received so far.
        """
        return bytes(self.transport.value())

    @property
    def closed(self) -> bool:
        """
        Whether the listener closed (or aborted) the connection.
        """
        return bool(self.transport.disconnecting)

    @property
    def paused(self) -> bool:
        """
        Whether the listener stopped reading from the client.
        """
        return self.transport.paused

    def responses(self, head: bool = False) -> list[Response]:
        """
        The responses received so far (see L{parse_responses}).
        """
        return parse_responses(self.received, closed=self.closed, head=head)

    def response(self, head: bool = False) -> Response:
        """
        The one response received, whole (else an C{AssertionError} showing
        what was received).
        """
        got = self.responses(head)
        assert len(got) == 1 and got[0].complete, f"not one response: {self.received!r}"
        return got[0]

    def close(self) -> None:
        """
        The client closes the connection.
        """
        self.transport.loseConnection()


class HTTPHarness:
    """
    An HTTP listener with fake backends on a L{Clock}.

    By default one pool, C{"web"}, of one backend (C{127.0.0.1:8001}), and
    one route to it for every request.  Give C{routes} and C{filters} (the
    listener's), or whole C{settings}; C{pools} built on C{clock} (their
    C{now=clock.seconds}) replace the default pool.  Call L{close} at the
    end of each test, even a failing one (C{self.addCleanup(harness.close)}):
    until then the harness observes the global log and access events.

    @ivar clock: the time the listener and pools see; advance it.
    @ivar endpoints: every connect the listener made, as L{Attempt}s.
    @ivar factory: the listener; replace its C{settings} to reload.
    @ivar access: the access events emitted since the harness was made.
    @ivar failures: the log events with a C{log_failure} (a traceback)
        logged since the harness was made.
    """

    def __init__(
        self,
        routes: Sequence[Route] = (Route(pool="web"),),
        *,
        filters: Sequence[Any] = (),
        settings: HTTPSettings | None = None,
        pools: Sequence[Pool] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock = clock if clock is not None else Clock()
        if pools is None:
            pools = [Pool("web", [Backend("127.0.0.1", 8001)], now=clock.seconds)]
        self.registry = Registry(pools)
        if settings is None:
            settings = HTTPSettings("front", Router(routes), filters=filters)
        self.endpoints = FakeEndpoints()
        self.factory = HTTPProxyFactory(
            self.registry, clock, settings, endpoint_for=self.endpoints
        )
        self.clients: list[Client] = []
        self.access: list[dict[str, Any]] = []
        self.failures: list[LogEvent] = []
        access_events.add_observer(self.access.append)  # type: ignore[arg-type]
        self._observer = cast(ILogObserver, self._logged)
        globalLogPublisher.addObserver(self._observer)

    def _logged(self, event: LogEvent) -> None:
        if event.get("log_failure") is not None:
            self.failures.append(event)

    def connect(self, peer: str = "192.0.2.7", port: int = 40000) -> Client:
        """
        A new client connection from C{peer}.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", peer, port))
        client = Client(protocol, connect(protocol, HalfCloseTransport(peer, port)))
        self.clients.append(client)
        return client

    def request(self, request: bytes | str, *args: Any, **kwargs: Any) -> Client:
        """
        Send a request on a new client connection (see L{Client.request}).
        """
        return self.connect().request(request, *args, **kwargs)

    def backend_responds(self, data: bytes) -> Attempt:
        """
        The latest backend connection sends C{data}; its connect is
        completed first if it is still pending.
        """
        assert self.endpoints.attempts, "no backend was asked"
        attempt = self.endpoints.last
        attempt.respond(data)
        return attempt

    def close(self) -> None:
        """
        Close every connection left open and the idle backend connections,
        stop collecting events, and fail if a delayed call is left on the
        clock (a timer the code under test forgot).
        """
        for client in self.clients:
            client.close()
        for attempt in self.endpoints.attempts:
            if attempt.transport is not None:
                attempt.transport.loseConnection()
        self.factory.keep_alive.close_all()
        access_events.remove_observer(self.access.append)  # type: ignore[arg-type]
        globalLogPublisher.removeObserver(self._observer)
        left = self.clock.getDelayedCalls()
        assert not left, f"delayed calls left on the clock: {left}"
