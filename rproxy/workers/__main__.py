"""The worker process the supervisor starts:
C{python -m rproxy.workers --index N --control-fd FD}.

It reads nothing but its control channel: the config's text, the listening
sockets (by descriptor number), then the supervisor's pushes.  It stops
(draining) on SIGTERM or when the supervisor goes away; SIGHUP and SIGINT
are the supervisor's to act on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import (
    FileLogObserver,
    Logger,
    formatEventAsClassicLogText,
    globalLogBeginner,
)

from rproxy._reactor import install_if_unset

log = Logger(namespace="rproxy.workers")


def _observer(index: int) -> FileLogObserver:
    """
    Log lines on standard output (the supervisor's), each naming the worker.
    """
    system = f"worker {index}"

    def format(event: Any) -> str | None:
        return formatEventAsClassicLogText({**event, "log_system": system})

    return FileLogObserver(sys.stdout, format)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run one worker until it is stopped; return the exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m rproxy.workers")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    install_if_unset()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    from rproxy.workers._control import ControlProtocol
    from rproxy.workers._worker import WorkerControl

    globalLogBeginner.beginLoggingTo([_observer(args.index)], redirectStandardIO=False)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    control = WorkerControl(reactor, args.index)

    def lost(reason: object) -> None:
        if reactor.running:
            log.info("worker {index}: the supervisor is gone", index=args.index)
            with contextlib.suppress(ReactorNotRunning):  # stopping already
                reactor.stop()

    channel = ControlProtocol(control.handle, lost)
    control.channel = channel
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]
        args.control_fd, socket.AF_UNIX, Factory.forProtocol(lambda: channel)
    )
    os.close(args.control_fd)
    reactor.addSystemEventTrigger("before", "shutdown", control.stop)
    # After the reactor has set its own handlers: Ctrl-C in a terminal
    # reaches the whole process group, and the supervisor stops the workers.
    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    reactor.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
