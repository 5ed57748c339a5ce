"""Zero-copy relaying of a spliced TCP pair with Linux splice(2).

Bytes go socket -> pipe -> socket inside the kernel and never become Python
objects.  The pipe is the only buffer of each direction and is bounded, so a
slow reader still pauses reading from the fast writer.  The two sockets stay
owned by their Twisted transports: a L{Splicer} only borrows their file
descriptors while it runs, and hands them back for closing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure

from rproxy._fds import FdBudget, is_out_of_fds

#: bytes asked of one splice call, and the size asked for each pipe.
CHUNK = 1 << 20
PIPE_SIZE = 1 << 18
#: bytes one direction moves per reactor wakeup before it yields to the rest
#: of the reactor (epoll is level-triggered: a ready socket comes back next
#: iteration).
BUDGET = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

#: transports whose class we know to be a plain TCP connection.
_TCP_TYPES = ("twisted.internet.tcp.Server", "twisted.internet.tcp.Client")


def can_splice(reactor: Any, *transports: Any) -> bool:
    """
    Whether C{transports} are plain TCP sockets of a reactor that can watch
    raw file descriptors, on a system with splice(2).
    """
    if not hasattr(os, "splice") or not hasattr(reactor, "addReader"):
        return False
    for transport in transports:
        kind = type(transport)
        if f"{kind.__module__}.{kind.__qualname__}" not in _TCP_TYPES:
            return False
        if ISSLTransport.providedBy(transport):
            return False
        if not isinstance(getattr(transport, "socket", None), socket.socket):
            return False
    return True


def take_pipes(fds: FdBudget | None, holder: str) -> bool:
    """
    Whether a pair of listener C{holder} may have splice pipes: always
    without a budget, else if C{fds} has room for them (they are then
    counted until the L{Splicer} closes them).
    """
    return fds is None or fds.take_pipes(holder)


def pipes_failed(fds: FdBudget | None, holder: str, error: OSError) -> None:
    """
    The pipes L{take_pipes} allowed could not be made (C{error}): give
    them back, and have the budget recount if descriptors ran out.
    """
    if fds is not None:
        fds.return_pipes(holder)
        if is_out_of_fds(error):
            fds.pipes_failed()


class _Direction:
    """
    One way of the pair: from C{src} through a pipe to C{dst}.
    """

    def __init__(self, src: _End, dst: _End, moved: Callable[[int], None]):
        self.src = src
        self.dst = dst
        self.moved = moved
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # over the pipe quota: default size
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0
        self.eof = False
        self.done = False
        #: the side whose socket failed, once one has.
        self.error_end = src
        #: what the direction waits for: "src" readable or "dst" writable.
        self.waiting = "src"

    def pump(self) -> None:
        """
        Move what can be moved now; set C{waiting} or C{done}.

        @raise OSError: on a socket error; C{error_end} says which side.
        """
        budget = BUDGET
        while not self.done:
            if self.pending:
                try:
                    n = os.splice(self.read_fd, self.dst.fd, self.pending, flags=_FLAGS)
                except BlockingIOError:
                    self.waiting = "dst"
                    return
                except OSError:
                    self.error_end = self.dst
                    raise
                self.pending -= n
                if self.pending:
                    self.waiting = "dst"
                    return
            if self.eof:
                try:
                    self.dst.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.error_end = self.dst
                    raise
                self.done = True
                return
            if budget <= 0:
                # The pipe is empty; let the reactor serve others first.
                self.waiting = "src"
                return
            try:
                n = os.splice(self.src.fd, self.write_fd, CHUNK, flags=_FLAGS)
            except BlockingIOError:
                self.waiting = "src"
                return
            except OSError:
                self.error_end = self.src
                raise
            if n == 0:
                self.eof = True
            else:
                self.pending = n
                self.moved(n)
                budget -= n

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _End:
    """
    One socket of the pair, as the selectable the reactor watches while
    the splicer runs.
    """

    def __init__(self, splicer: Splicer, transport: Any, side: str):
        self.splicer = splicer
        self.transport = transport
        self.side = side
        self.sock: socket.socket = transport.socket
        self.fd: int = self.sock.fileno()
        self.reading = False
        self.writing = False

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"splice-{self.side}"

    def doRead(self) -> None:
        self.splicer.step(self, "src")

    def doWrite(self) -> None:
        self.splicer.step(self, "dst")

    def connectionLost(self, reason: Failure) -> None:
        self.splicer.fail(self, reason)


class Splicer:
    """
    Relays a client transport and a backend transport to each other with
    splice(2), until both directions have ended or one side fails.

    @param moved_in: called with the bytes moved client -> backend.
    @param moved_out: called with the bytes moved backend -> client.
    @param finished: called once with None when both directions ended
        cleanly (both sockets half-closed), or with the side ("client" or
        "backend") and the failure when one failed.  The splicer has then
        given the sockets back; the caller closes the transports.
    @param fds: the budget the pipes were taken from (L{FdBudget.take_pipes}
        for C{holder}), given back when they close.
    @raise OSError: if the pipes cannot be made (no file descriptors left);
        the transports are then untouched.
    """

    def __init__(
        self,
        reactor: Any,
        client: Any,
        backend: Any,
        moved_in: Callable[[int], None],
        moved_out: Callable[[int], None],
        finished: Callable[[str | None, Failure | None], None],
        fds: FdBudget | None = None,
        holder: str = "",
    ):
        self._reactor = reactor
        self._finished = finished
        self._stopped = False
        self._fds = fds
        self._holder = holder
        self._client = _End(self, client, "client")
        self._backend = _End(self, backend, "backend")
        # Make both pipes before touching the transports, so that running out
        # of file descriptors leaves the pair to the portable relay.
        self._up = _Direction(self._client, self._backend, moved_in)
        try:
            self._down = _Direction(self._backend, self._client, moved_out)
        except OSError:
            self._up.close()
            raise
        for transport in (client, backend):
            transport.stopReading()
            transport.stopWriting()

    def start(self) -> None:
        """
        Begin relaying.
        """
        self._run(self._up)
        self._run(self._down)
        self._watch()

    def step(self, end: _End, role: str) -> None:
        """
        C{end} is readable (C{role="src"}) or writable (C{role="dst"}).
        """
        for direction in (self._up, self._down):
            if getattr(direction, role) is end:
                self._run(direction)
        self._watch()

    def _run(self, direction: _Direction) -> None:
        if self._stopped or direction.done:
            return
        try:
            direction.pump()
        except OSError as error:
            side = direction.error_end.side
            self._finish(side, Failure(error))
            return
        if self._up.done and self._down.done:
            self._finish(None, None)

    def fail(self, end: _End, reason: Failure) -> None:
        """
        The reactor reports C{end} broken.
        """
        self._finish(end.side, reason)

    def stop(self) -> None:
        """
        Stop relaying and give the sockets back, without calling finished.
        """
        if not self._stopped:
            self._stopped = True
            self._release()

    def _finish(self, side: str | None, failure: Failure | None) -> None:
        if self._stopped:
            return
        self.stop()
        self._finished(side, failure)

    def _watch(self) -> None:
        if self._stopped:
            return
        for end in (self._client, self._backend):
            read = any(
                d.src is end and not d.done and d.waiting == "src"
                for d in (self._up, self._down)
            )
            write = any(
                d.dst is end and not d.done and d.waiting == "dst"
                for d in (self._up, self._down)
            )
            self._set(end, read, write)

    def _set(self, end: _End, read: bool, write: bool) -> None:
        if read != end.reading:
            end.reading = read
            (self._reactor.addReader if read else self._reactor.removeReader)(end)
        if write != end.writing:
            end.writing = write
            (self._reactor.addWriter if write else self._reactor.removeWriter)(end)

    def _release(self) -> None:
        for end in (self._client, self._backend):
            self._set(end, False, False)
        self._up.close()
        self._down.close()
        if self._fds is not None:
            self._fds.return_pipes(self._holder)
