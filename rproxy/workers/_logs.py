"""A worker's log events go to its supervisor, which logs them as its own
(so they end up wherever twistd writes the supervisor's: standard output, a
log file, syslog), each naming the worker; before the control channel is up
and once the worker is stopping, they go to standard output."""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

from rproxy.workers._control import ControlProtocol, Message

__all__ = ["ForwardLogs", "log_message", "relay"]

#: what the supervisor logs a worker's events as.
worker_log = Logger(namespace="rproxy.workers.worker")


def log_message(event: LogEvent) -> Message:
    """
    A log event as a control message: its level, namespace and text (with
    the traceback of a failure).
    """
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    level = event.get("log_level", LogLevel.info)
    return {
        "type": "log",
        "level": level.name,
        "namespace": event.get("log_namespace", "-"),
        "text": text,
    }


def relay(index: int, message: Message) -> None:
    """
    Log, in the supervisor, what worker C{index} logged.
    """
    try:
        level = LogLevel.levelWithName(message.get("level", "info"))
    except Exception:
        level = LogLevel.info
    worker_log.emit(
        level,
        "[worker {worker}] {text}",
        worker=index,
        text=message.get("text", ""),
        worker_namespace=message.get("namespace"),
    )


@implementer(ILogObserver)
class ForwardLogs:
    """
    The worker's log observer: over C{channel} when it is connected, else
    to standard output with the worker's number.
    """

    def __init__(self, index: int) -> None:
        self.channel: ControlProtocol | None = None
        system = f"worker {index}"

        def format(event: Any) -> str | None:
            return formatEventAsClassicLogText({**event, "log_system": system})

        self._fallback = FileLogObserver(sys.stdout, format)

    def __call__(self, event: LogEvent) -> None:
        channel = self.channel
        if channel is not None and channel.connected_now:
            channel.send(log_message(event))
        else:
            self._fallback(event)
