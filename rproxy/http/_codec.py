"""The seam between an L{Exchange} and the codec it belongs to: L{Codec},
what an exchange reads of and calls on the connection (HTTP/1.1) or the
stream (HTTP/2) its request came on.

A codec turns a client's request bytes into calls on its exchange, and the
exchange's neutral response events (L{send_head}, L{send_body},
L{send_end}) back into wire bytes.  The exchange never writes bytes itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mypy_extensions import trait
from twisted.internet.interfaces import IPushProducer

from rproxy._fastwrite import Data

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange
    from rproxy.http.framing import ResponseHead
    from rproxy.http.keepalive import ClientKeepAlive, KeepAlivePool
    from rproxy.http.listener import HTTPProxyFactory
    from rproxy.http.upstream import UpstreamProtocol

__all__ = ["Codec"]


@trait
class Codec:
    """
    What an exchange needs of its codec.

    @ivar factory: the listener factory (registry, counters, keep-alive).
    @ivar clock: the reactor's time.
    @ivar client: the client's address as a string.
    @ivar transport: the client connection's transport (the addresses a
        PROXY header announces are read from it).
    @ivar exchange: the exchange the codec is answering now, or C{None}.
    """

    factory: HTTPProxyFactory
    clock: Any
    client: str
    transport: Any
    exchange: Exchange | None

    # The request side: flow control.

    def pause_reading(self) -> None:
        """Stop reading the request (its body waits)."""

    def resume_reading(self) -> None:
        """Read the request again."""

    def producer(self) -> IPushProducer:
        """What a backend connection pauses while it cannot take more."""
        raise NotImplementedError

    def body_forwarded(self) -> None:
        """The request body has all reached the backend."""

    def keep_alive_for(self, private: bool) -> KeepAlivePool | ClientKeepAlive:
        """Where idle backend connections are kept for this client."""
        raise NotImplementedError

    def wake_by(self, when: float) -> None:
        """Look at the exchange's deadlines no later than C{when}."""

    # The response side.

    def send_interim(self, exchange: Exchange, head: ResponseHead) -> None:
        """Send a 1xx response."""

    def send_head(self, exchange: Exchange, head: ResponseHead) -> None:
        """Send the final response head."""

    def send_body(self, data: Data) -> None:
        """Send response body bytes."""

    def flush(self) -> None:
        """Send what the last read from the backend produced."""

    def send_end(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        """End the response, with C{trailers}."""

    def exchange_done(self, exchange: Exchange) -> None:
        """C{exchange}'s response has been sent."""

    def fail(self, exchange: Exchange, status: int) -> None:
        """C{exchange} failed: answer C{status}, or cut the response."""

    def abort(self) -> None:
        """Drop the client now (a connection; a stream is reset)."""

    # Protocol switches (HTTP/1.1 only; a stream refuses them).

    def open_tunnel(
        self,
        exchange: Exchange,
        head: ResponseHead,
        upstream: UpstreamProtocol,
        rest: bytes,
    ) -> None:
        """Pass a 101 on and relay raw bytes."""

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the backend side of a tunnel."""

    def tunnel_closed(self, exchange: Exchange) -> None:
        """The backend side of the tunnel closed."""
