"""Helpers for integration tests: real backends in-process and rproxy run as
a real twistd process, all on 127.0.0.1."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
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

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


def greeter_factory(name: str) -> Factory:
    factory = Factory.forProtocol(Greeter)
    factory.name = name  # type: ignore[attr-defined]
    factory.connections = 0  # type: ignore[attr-defined]
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
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        if self.half_close:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

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


class RunningProxy:
    """A twistd rproxy process and what it printed."""

    def __init__(self, proc: subprocess.Popen[str], ports: dict[str, int]) -> None:
        self.proc = proc
        self.ports = ports
        self.output: list[str] = []

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The process's resident memory (or C{VmHWM}, its peak) in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} for {self.proc.pid}")

    def wait_for(self, text: str, deadline: float = 30) -> str:
        """Read the process's output until a line contains C{text}."""
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + deadline
        try:
            while True:
                remaining = end - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise AssertionError(f"no {text!r} in:\n" + "".join(self.output))
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"exited before {text!r}")
                self.output.append(line)
                if text in line:
                    return line
        finally:
            selector.close()

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM the process, wait for it and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        self.output.append(out)
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
        [
            *TWISTD,
            "-n",
            "--pidfile=",
            "rproxy",
            "--config",
            str(config),
            *(extra_args or []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=python_env(),
        cwd=str(config.parent),
    )
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    seen: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + deadline
    while len(ports) < listeners:
        if time.monotonic() > end or not selector.select(end - time.monotonic()):
            proc.kill()
            raise AssertionError("rproxy did not listen in time:\n" + "".join(seen))
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise AssertionError("rproxy exited:\n" + "".join(seen))
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            ports[match.group(1)] = int(match.group(2))
    selector.close()
    running = RunningProxy(proc, ports)
    running.output.extend(seen)
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
            running.proc.communicate(timeout=30)


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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def drain(sock: Any, size: int = 1 << 16) -> bytes:
    """Read C{sock} until EOF."""
    chunks = []
    while chunk := sock.recv(size):
        chunks.append(chunk)
    return b"".join(chunks)
