"""Reading what a connection sends before the protocol that serves it (a
TLS ClientHello to route by, a PROXY protocol header): the bytes are kept
until a parser makes a whole preface of them, within a deadline, and the
connection is closed with a log event if they cannot be one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

__all__ = ["NeedMore", "PrefaceReader"]

T = TypeVar("T")


@frozen
class NeedMore:
    """
    The preface is not complete yet.

    @ivar at_least: the total byte count below which parsing again cannot
        complete it, so the caller need not parse again before then.
    """

    at_least: int


class PrefaceReader(Protocol):
    """
    The reading half of a front protocol that waits for a preface.

    Subclasses call C{super().__init__(log)} with their module's logger;
    set C{preface} (what is awaited, for messages), C{timeout_ended} and
    C{malformed_ended} (how such connections end); call L{_await_preface}
    when the connection is made and L{_read} with each read; and have a
    C{factory} with a C{listener} name.

    @ivar client: the address the connection came from, for log events.
    @ivar ended: why the connection was closed before its hand-over, if so.
    """

    preface = ""
    timeout_ended = ""
    malformed_ended = ""
    factory: Any
    client = ""
    ended = ""
    _deadline: IDelayedCall | None = None
    _timeout = 0.0

    def __init__(self, log: Logger) -> None:
        # An instance attribute: a Logger on the class would name its events
        # after the class, not the module.
        self._log = log
        self._received = bytearray()
        self._wanted = 1

    def _await_preface(self, clock: IReactorTime, timeout: float) -> None:
        self._timeout = timeout
        self._deadline = clock.callLater(timeout, self._timed_out)

    def _read(self, data: bytes, parse: Callable[[bytes], T | NeedMore]) -> T | None:
        """
        Add C{data}; the preface once C{parse} finds it whole (the deadline
        is then off), None while it is not, or once the connection has been
        refused for bytes that cannot be one (C{parse} raised ValueError).
        """
        self._received += data
        if len(self._received) < self._wanted:
            return None
        try:
            result = parse(bytes(self._received))
        except ValueError as error:
            self._refuse(self.malformed_ended, self._malformed(error))
            return None
        if isinstance(result, NeedMore):
            self._wanted = result.at_least
            return None
        self._stop_deadline()
        return result

    def _malformed(self, error: ValueError) -> str:
        return str(error)

    def _timed_out(self) -> None:
        self._deadline = None
        self._refuse(
            self.timeout_ended,
            f"no whole {self.preface} in {self._timeout}s "
            f"({len(self._received)} bytes received)",
        )

    def _refuse(self, ended: str, reason: str) -> None:
        """
        Close the connection before the protocol that serves it saw it.
        """
        if self.ended:
            return
        self.ended = ended
        self._stop_deadline()
        self._log.info(
            "closing {client} on listener {listener}: {reason}",
            client=self.client,
            listener=self.factory.listener,
            reason=reason,
        )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
