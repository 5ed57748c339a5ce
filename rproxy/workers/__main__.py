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

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger, globalLogBeginner

from rproxy._reactor import install_if_unset

log = Logger(namespace="rproxy.workers")


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
    from rproxy.workers._logs import ForwardLogs
    from rproxy.workers._worker import WorkerControl

    logs = ForwardLogs(args.index)
    globalLogBeginner.beginLoggingTo([logs], redirectStandardIO=False)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    control = WorkerControl(reactor, args.index)

    def lost(reason: object) -> None:
        if reactor.running:
            log.info("the supervisor is gone")
            with contextlib.suppress(ReactorNotRunning):  # stopping already
                reactor.stop()

    channel = ControlProtocol(control.handle, lost)
    control.channel = logs.channel = channel
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]
        args.control_fd, socket.AF_UNIX, Factory.forProtocol(lambda: channel)
    )
    os.close(args.control_fd)

    def stop() -> object:
        # From now on straight to standard output: the reactor may close the
        # channel before it has written what is queued on it.
        logs.channel = None
        return control.stop()

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    # After the reactor has set its own handlers: Ctrl-C in a terminal
    # reaches the whole process group, and the supervisor stops the workers.
    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    reactor.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
