"""The access log: one event per proxied connection (and, for HTTP, request),
written as combined-style text or JSON lines.

The protocols hand events (with the stable keys C{client}, C{listener},
C{pool}, C{backend}, C{status}, C{bytes_in}, C{bytes_out}, C{duration}, and
for HTTP C{method}, C{path}, C{version}, C{referer}, C{user_agent},
C{upstream_time}; C{refused_by} when a limit, list or rule refused it, naming
which) to L{access_events}, and build them only when something
observes it: the L{AccessLog} the config asks for, or an embedder's
observer.  They do not go through Twisted's global log, so a busy proxy with
no access log pays nothing for one.  Lines are written through a buffer that
is flushed every second, and the file is reopened when it has been moved away
(logrotate without C{copytruncate}); C{path = "-"} writes to standard output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, LogLevel
from zope.interface import implementer

#: bytes the file buffers; lines are written out in eighths of it (a UTF-8
#: character takes at most four bytes), so no write ends mid-line.
_BUFFER = 1 << 20

#: the namespace of access events.
NAMESPACE = "rproxy.access"


class AccessEvents:
    """
    Where access events go.  Observers are Twisted log observers; an event
    is a Twisted log event (C{log_namespace} C{"rproxy.access"}, C{log_time},
    C{log_format}) with the access fields.
    """

    def __init__(self) -> None:
        self._observers: list[ILogObserver] = []
        #: whether anything observes: protocols build events only then (an
        #: attribute, not a property: it is read once per request).
        self.active = False

    def add_observer(self, observer: ILogObserver) -> None:
        """
        Start giving events to C{observer}.
        """
        self._observers.append(observer)
        self.active = True

    def remove_observer(self, observer: ILogObserver) -> None:
        """
        Stop giving events to C{observer}.
        """
        self._observers.remove(observer)
        self.active = bool(self._observers)

    def emit(self, log_format: str, **fields: Any) -> None:
        """
        Give every observer one event with C{fields}.
        """
        event: LogEvent = {
            "log_namespace": NAMESPACE,
            "log_level": LogLevel.info,
            "log_format": log_format,
            "log_time": time.time(),
            **fields,
        }
        for observer in list(self._observers):
            observer(event)


#: the access events of every listener in this process.
access_events = AccessEvents()

_JSON_KEYS = (
    "client",
    "listener",
    "protocol",
    "method",
    "path",
    "version",
    "status",
    "bytes_in",
    "bytes_out",
    "pool",
    "backend",
    "upstream_time",
    "duration",
    "referer",
    "user_agent",
    "refused_by",
)
_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def _clf_time(when: float) -> str:
    t = time.gmtime(when)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _quoted(value: object) -> str:
    """
    C{value} inside double quotes, with quotes, backslashes and control
    characters escaped so one event is always one line.
    """
    if value is None or value == "":
        return '"-"'
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value)
    escaped = "".join(
        f"\\x{ord(c):02x}" if ord(c) < 0x20 or c in '"\\' or ord(c) == 0x7F else c
        for c in text
    )
    return f'"{escaped}"'


def _plain(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def render_combined(event: LogEvent) -> str:
    """
    The Apache/nginx combined format, followed by rproxy's own fields::

        CLIENT - - [TIME] "REQUEST" STATUS BYTES "REFERER" "UA" pool=.. ...

    A TCP connection has no request: its request field is C{"TCP LISTENER"}
    and its status is how the connection ended.  An event with a
    C{refused_by} ends with C{refused_by="..."}.
    """
    when = _clf_time(event.get("log_time") or time.time())
    if event.get("method"):
        request = (
            f"{event['method']} {event.get('path', '')} {event.get('version', '')}"
        )
        status = _plain(event.get("status"))
    else:
        request = f"TCP {event.get('listener', '')}"
        status = _quoted(event.get("status"))
    upstream = event.get("upstream_time")
    refused = event.get("refused_by")
    line = (
        f"{_plain(event.get('client'))} - - [{when}] {_quoted(request)} {status} "
        f"{_plain(event.get('bytes_out'))} {_quoted(event.get('referer'))} "
        f"{_quoted(event.get('user_agent'))} pool={_plain(event.get('pool'))} "
        f"backend={_plain(event.get('backend'))} "
        f"bytes_in={_plain(event.get('bytes_in'))} "
        f"upstream={'-' if upstream is None else f'{upstream:.3f}'} "
        f"duration={event.get('duration', 0.0):.3f}"
    )
    return f"{line} refused_by={_quoted(refused)}" if refused else line


def render_json(event: LogEvent) -> str:
    """
    One JSON object with a C{time} (ISO 8601, UTC) and the stable keys the
    event has.
    """
    when = event.get("log_time") or time.time()
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
        + f".{int(when % 1 * 1000):03d}Z"
    }
    for key in _JSON_KEYS:
        value = event.get(key)
        if value is not None:
            record[key] = value.decode("latin-1") if isinstance(value, bytes) else value
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


RENDERERS: dict[str, Callable[[LogEvent], str]] = {
    "combined": render_combined,
    "json": render_json,
}


@implementer(ILogObserver)
class AccessLog:
    """
    Appends a line per access event to the file at C{path}.

    @param format: C{"combined"} or C{"json"}.
    @param clock: drives the once-a-second flush and rotation check.
    """

    def __init__(
        self,
        path: str,
        format: str,
        clock: IReactorTime,
        events: AccessEvents = access_events,
    ):
        self.path = path
        self._render = RENDERERS[format]
        self._events = events
        self._clock = clock
        self._file: IO[str] | None = None
        self._pending = 0
        self._identity: tuple[int, int] | None = None
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock

    def open(self) -> None:
        """
        Open (or reopen) the file for appending.

        @raise OSError: if it cannot be opened.
        """
        if self.path == "-":
            self._file = sys.stdout
            return
        handle = open(  # noqa: SIM115 - kept open for the service's life
            self.path,
            "a",
            buffering=_BUFFER,
            encoding="utf-8",
            errors="backslashreplace",
        )
        if self._file is not None:
            self._file.close()
        self._file = handle
        status = os.fstat(handle.fileno())
        self._identity = (status.st_dev, status.st_ino)

    def start(self) -> None:
        """
        Open the file and start observing access events.
        """
        self.open()
        self._events.add_observer(self)
        self._flusher.start(1.0, now=False)

    def stop(self) -> None:
        """
        Stop observing, write out what is buffered and close the file.
        """
        self._events.remove_observer(self)
        if self._flusher.running:
            self._flusher.stop()
        if self._file is not None:
            if self._file is sys.stdout:
                self._file.flush()
            else:
                self._file.close()
            self._file = None

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") != NAMESPACE or self._file is None:
            return
        line = self._render(event) + "\n"
        self._file.write(line)
        # Flushed before the buffer fills, so that every write to the file
        # ends a line: the workers of one supervisor append to the same
        # file, and a write of whole lines is not cut by another's.
        self._pending += len(line)
        if self._pending > _BUFFER // 8:
            self._file.flush()
            self._pending = 0

    def flush(self) -> None:
        """
        Write out buffered lines; reopen the file if it was moved away.
        """
        if self._file is None:
            return
        self._file.flush()
        self._pending = 0
        if self._file is sys.stdout:
            return
        try:
            status = os.stat(self.path)
            moved = (status.st_dev, status.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved:
            self.open()


class AccessLogService(Service):
    """
    Runs an L{AccessLog} for the life of the service.
    """

    def __init__(self, log: AccessLog):
        self.log = log

    def startService(self) -> None:
        try:
            self.log.start()
        except OSError as error:
            raise SystemExit(
                f"rproxy: cannot open the access log {self.log.path!r}: "
                f"{error.strerror or error}"
            ) from None
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.log.stop()
