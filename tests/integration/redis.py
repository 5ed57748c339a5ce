"""A real redis-server for integration tests: started on a free port of
127.0.0.1 with a temporary directory, stopped (and restarted) by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.helpers import free_port

#: where Debian's redis-server package installs the server.
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def have_redis() -> bool:
    """Whether a redis-server can be run here."""
    return Path(REDIS_SERVER).exists()


class RedisServer:
    """
    One redis-server process: no persistence, its files in C{directory},
    listening on 127.0.0.1 only.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = 20.0) -> None:
        """
        Start the server and wait (bounded) until it answers PING.
        """
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + deadline
        while self.command(b"PING") != b"+PONG\r\n":
            if self.proc.poll() is not None or time.monotonic() > end:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise AssertionError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)

    def command(self, *words: bytes) -> bytes | None:
        """
        Send one command; its raw reply, or None if nothing answers.
        """
        request = b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(word), word) for word in words
        )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(request)
                return sock.recv(65536)
        except OSError:
            return None

    def stop(self) -> None:
        """
        Stop the server (SIGTERM, then wait).
        """
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
