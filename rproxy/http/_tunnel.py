"""An upgraded (101) connection pair: raw bytes both ways, each transport the
other's producer, closed when idle too long."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from rproxy.http.upstream import UpstreamProtocol


class Tunnel:
    """
    Relays between a client transport and an upstream connection after a
    protocol switch.

    @param on_idle: called when nothing moved for C{idle_timeout} seconds.
    """

    def __init__(
        self,
        client: Any,
        upstream: UpstreamProtocol,
        clock: IReactorTime,
        idle_timeout: float,
        on_idle: Callable[[], None],
    ):
        self.client = client
        self.upstream = upstream
        self.bytes_in = 0
        self.bytes_out = 0
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._last = clock.seconds()
        self._timer: IDelayedCall | None = None

    def start(self, from_client: bytes, from_backend: bytes) -> None:
        """
        Pass on what each side sent before the switch completed, then let
        both flow.
        """
        if from_backend:
            self.from_backend(from_backend)
        if from_client:
            self.from_client(from_client)
        server = self.upstream.transport
        server.registerProducer(self.client, True)
        self.client.registerProducer(server, True)
        self._watch(self._idle_timeout)

    def from_client(self, data: bytes) -> None:
        """
        Bytes from the client, for the backend.
        """
        self.bytes_in += len(data)
        self._last = self._clock.seconds()
        self.upstream.write(data)

    def from_backend(self, data: bytes) -> None:
        """
        Bytes from the backend, for the client.
        """
        self.bytes_out += len(data)
        self._last = self._clock.seconds()
        self.client.write(data)

    def stop(self) -> None:
        """
        The tunnel has ended: stop watching for idleness.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _watch(self, delay: float) -> None:
        self._timer = self._clock.callLater(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        remaining = self._idle_timeout - (self._clock.seconds() - self._last)
        if remaining > 0:
            self._watch(remaining)
        else:
            self._on_idle()
