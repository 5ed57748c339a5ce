"""Helpers for integration tests: real backends in-process and rproxy run as
a real twistd process, all on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

ROOT = Path(__file__).resolve().parents[2]

#: runs twistd with this interpreter, whatever the PATH holds.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
]


@implementer(IHalfCloseableProtocol)
class Greeter(Protocol):
    """A backend that greets with its name, then echoes, and half-closes
    when the client does."""

    def connectionMade(self) -> None:
        self.factory.connections += 1  # type: ignore[attr-defined]
        self.transport.write(f"{self.factory.name}\n".encode())  # type: ignore[attr-defined]
        waiting, self.factory.waiting = self.factory.waiting, []  # type: ignore[attr-defined]
        for d in waiting:
            d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


def backend_connected(factory: Factory) -> Deferred[Greeter]:
    """A Deferred that fires when C{factory}'s next connection is made."""
    d: Deferred[Greeter] = Deferred()
    factory.waiting.append(d)  # type: ignore[attr-defined]
    return d


def greeter_factory(name: str) -> Factory:
    factory = Factory.forProtocol(Greeter)
    factory.name = name  # type: ignore[attr-defined]
    factory.connections = 0  # type: ignore[attr-defined]
    factory.waiting = []  # type: ignore[attr-defined]
    factory.noisy = False
    return factory


@implementer(IHalfCloseableProtocol)
class Exchange(Protocol):
    """A client that sends C{payload}, half-closes, and collects the reply
    until the connection closes."""

    def __init__(self, payload: bytes, half_close: bool = True) -> None:
        self.payload = payload
        self.half_close = half_close
        self.received: list[bytes] = []
        self.count = 0
        self.done: Deferred[bytes] = Deferred()
        self._wanted: list[tuple[int, Deferred[None]]] = []

    def received_at_least(self, count: int) -> Deferred[None]:
        """A Deferred that fires once C{count} bytes have arrived."""
        d: Deferred[None] = Deferred()
        self._wanted.append((count, d))
        self._notify()
        return d

    def _notify(self) -> None:
        for item in list(self._wanted):
            if self.count >= item[0]:
                self._wanted.remove(item)
                item[1].callback(None)

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        if self.half_close:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.count += len(data)
        self._notify()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.received))


def python_env() -> dict[str, str]:
    """The environment for child processes: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def run_twistd(config: Path) -> subprocess.CompletedProcess[str]:
    """Run C{twistd -n rproxy --config CONFIG} to its end (for configs that
    must be refused)."""
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )


class RunningProxy:
    """A twistd rproxy process; a thread collects what it prints."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.ports: dict[str, int] = {}
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next line printed, or None once the process has exited."""
        try:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            raise AssertionError(
                "rproxy printed nothing in time:\n" + "".join(self.output)
            ) from None
        if line is not None:
            self.output.append(line)
        return line

    def wait_for(self, text: str, deadline: float = 30) -> str:
        """Read the process's output until a line contains C{text}."""
        end = time.monotonic() + deadline
        while (line := self.next_line(end)) is not None:
            if text in line:
                return line
        raise AssertionError(f"exited before {text!r}:\n" + "".join(self.output))

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The process's resident memory (or C{VmHWM}, its peak) in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.proc.pid}")

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM the process, wait for it and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self._reader.join(timeout)
        while line := self._lines.get_nowait() if not self._lines.empty() else None:
            self.output.append(line)
        return "".join(self.output)


_LISTENING = re.compile(r"listener (\S+) on .* \((?:[\d.]+|[0-9a-f:]+):(\d+)\)")


def start_proxy(
    config: Path,
    listeners: int = 1,
    deadline: float = 30,
    extra_args: list[str] | None = None,
) -> RunningProxy:
    """
    Start C{twistd -n rproxy --config CONFIG} and wait (up to C{deadline}
    seconds) until it logs that its listeners are bound.
    """
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "rproxy", "--config", str(config)]
        + (extra_args or []),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=python_env(),
        cwd=str(config.parent),
    )
    running = RunningProxy(proc)
    end = time.monotonic() + deadline
    try:
        while len(running.ports) < listeners:
            line = running.next_line(end)
            if line is None:
                raise AssertionError("rproxy exited:\n" + "".join(running.output))
            match = _LISTENING.search(line)
            if match:
                running.ports[match.group(1)] = int(match.group(2))
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return running


@contextmanager
def proxy(config: Path, listeners: int = 1) -> Iterator[RunningProxy]:
    """L{start_proxy} as a context manager that always stops the process."""
    running = start_proxy(config, listeners)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(30)


def tcp_config(backends: list[int], *, extra: str = "", grace: float = 10.0) -> str:
    """A config with one TCP listener on a free port over C{backends}."""
    addresses = ", ".join(f'"127.0.0.1:{port}"' for port in backends)
    return f"""
[shutdown]
grace = {grace}

[pools.p]
backends = [{addresses}]
{extra}

[[listeners]]
name = "front"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "p"
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, deadline: float = 20.0) -> None:
    """Wait (bounded) until something accepts on 127.0.0.1:C{port}."""
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise AssertionError(f"nothing listens on {port}") from None
            time.sleep(0.02)


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send C{data} to 127.0.0.1:C{port} and read until the peer closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        return drain(sock)


def drain(sock: Any, size: int = 1 << 16) -> bytes:
    """Read C{sock} until EOF."""
    chunks = []
    while chunk := sock.recv(size):
        chunks.append(chunk)
    return b"".join(chunks)


MIB = 1 << 20


class StallingSender:
    """
    Sends C{total} pseudo-random bytes on a socket, noticing when the peer
    (the proxy) takes nothing for 2 s: it then records how much it had sent,
    sets C{stalled} and waits for C{resume} before sending the rest.

    With C{chunk_size}, the bytes go out in chunked coding, in chunks of
    that size, ending with the last chunk; C{digest} stays the payload's and
    C{sent} counts bytes on the wire.
    """

    def __init__(self, total: int, chunk_size: int = 0) -> None:
        self.total = total
        self.chunk_size = chunk_size
        self.sent = 0
        self.digest = hashlib.sha256()
        self.stalled = threading.Event()
        self.resume = threading.Event()
        self.sent_at_stall = -1

    def send(self, conn: socket.socket) -> None:
        block = os.urandom(MIB)
        conn.setblocking(False)
        for piece in self._pieces(block):
            view = memoryview(piece)
            while view:
                if not self.stalled.is_set():
                    _, writable, _ = select.select([], [conn], [], 2.0)
                    if not writable:
                        # Nothing taken for 2 s: the proxy stopped reading.
                        self.sent_at_stall = self.sent
                        self.stalled.set()
                        self.resume.wait(60)
                        conn.setblocking(True)
                        continue
                try:
                    n = conn.send(view)
                except BlockingIOError:
                    continue
                view = view[n:]
                self.sent += n
        self.stalled.set()

    def _pieces(self, block: bytes) -> Iterator[bytes]:
        """What goes on the wire, a MiB of payload at a time."""
        size = self.chunk_size
        for index in range(self.total // MIB):
            chunk = index.to_bytes(8, "big") + block[8:]
            self.digest.update(chunk)
            if not size:
                yield chunk
                continue
            view = memoryview(chunk)
            parts: list[bytes | memoryview] = []
            for start in range(0, MIB, size):
                part = view[start : start + size]
                parts += [b"%x\r\n" % len(part), part, b"\r\n"]
            yield b"".join(parts)
        if size:
            yield b"0\r\n\r\n"


def read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """Read an HTTP head from a blocking socket: (head, bytes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest
