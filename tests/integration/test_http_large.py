"""1 GiB each way through a twistd rproxy HTTP listener, with the far side
at first not reading: the proxy must stop reading too, not buffer, and its
memory must stay where it was when idle whatever the size."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.integration.helpers import (
    MIB,
    RunningProxy,
    StallingSender,
    proxy,
    read_head,
)

TOTAL = 1024 * MIB
#: what the far side may have sent when the proxy stops reading: kernel
#: buffers on both sockets plus what the proxy holds, not the body.
STALL_BOUND = 48 * MIB
#: how far above its idle RSS the proxy may be when stalled, and at its peak.
STALL_RSS_KIB = 32 * 1024
PEAK_RSS_KIB = 48 * 1024
#: bound on every blocking socket call and on waiting for the peer threads.
TIMEOUT = 60.0
#: the buffer the test's own ends read into and hash from.
_READ_BUFFER = 4 * MIB


def http_config(backend_port: int, *, cached: bool = False) -> str:
    cache = """
[caches.c]
memory = "32MiB"
max_object = "8MiB"

[[listeners.routes]]
path_prefix = "/"
pool = "p"
cache = "c"
"""
    return f"""
[pools.p]
backends = ["127.0.0.1:{backend_port}"]
[pools.p.health]
check = "none"

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "p"
{cache if cached else ""}"""


class _Peer:
    """A thread for one end of the exchange whose failure fails the test."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as e:
            self._error = e

    def join(self) -> None:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "peer thread still running"
        if self._error is not None:
            raise self._error


class _Memory:
    """The proxy's RSS (KiB) at the moments the tests look at it."""

    def __init__(self, running: RunningProxy) -> None:
        self._running = running
        self.baseline = running.rss_kib()
        self.stalled = 0
        self.end = 0
        self.peak = 0

    def at_stall(self) -> None:
        self.stalled = self._running.rss_kib()

    def at_end(self) -> None:
        self.end = self._running.rss_kib()
        self.peak = self._running.rss_kib("VmHWM")

    def assert_flat(self) -> None:
        figures = vars(self).copy()
        del figures["_running"]
        print(figures)
        assert self.stalled - self.baseline < STALL_RSS_KIB, figures
        assert self.peak - self.baseline < PEAK_RSS_KIB, figures


def read_body(
    conn: socket.socket,
    first: bytes,
    digest: hashlib._Hash,
    length: int | None = None,
) -> int:
    """
    Read a body of C{length} bytes (C{None}: until EOF) that starts with
    C{first}, hashing it a few MiB at a time; return how many bytes came.
    """
    digest.update(first)
    count = len(first)
    end = sys.maxsize if length is None else length
    view = memoryview(bytearray(_READ_BUFFER))
    fill = 0
    while count < end:
        n = conn.recv_into(view[fill:], min(_READ_BUFFER - fill, end - count - fill))
        fill += n
        if n and fill < _READ_BUFFER and count + fill < end:
            continue
        digest.update(view[:fill])
        count += fill
        fill = 0
        if not n:
            break
    return count


class Dechunker:
    """
    Reads a chunked body (no trailers) from a socket into a preallocated
    buffer, hashing each chunk's data where it lies.
    """

    def __init__(self, conn: socket.socket, first: bytes) -> None:
        self._conn = conn
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._buf[: len(first)] = first
        self._pos = 0
        self._end = len(first)
        self.chunks = 0
        self.largest = 0

    def _fill(self) -> None:
        """Move what is unread to the front and read more after it."""
        pos, end = self._pos, self._end
        if pos:
            self._buf[: end - pos] = self._view[pos:end]
            self._pos, self._end = 0, end - pos
        n = self._conn.recv_into(self._view[self._end :])
        if not n:
            raise AssertionError(f"closed inside the chunked body: {self.chunks}")
        self._end += n

    def _line(self) -> bytes:
        while (eol := self._buf.find(b"\r\n", self._pos, self._end)) < 0:
            if self._end - self._pos > 4096:
                raise AssertionError("no CRLF within 4 KiB of a chunk size")
            self._fill()
        line = bytes(self._view[self._pos : eol])
        self._pos = eol + 2
        return line

    def read(self, digest: hashlib._Hash) -> int:
        """Hash the payload into C{digest} up to the last chunk; its length."""
        count = 0
        while size := int(self._line(), 16):
            self.chunks += 1
            self.largest = max(self.largest, size)
            count += size
            while size:
                if self._pos == self._end:
                    self._pos = self._end = 0
                    self._fill()
                take = min(size, self._end - self._pos)
                digest.update(self._view[self._pos : self._pos + take])
                self._pos += take
                size -= take
            assert self._line() == b"", "chunk data not followed by CRLF"
        assert self._line() == b"", "trailers after the last chunk"
        assert self._pos == self._end, "bytes after the chunked body"
        return count


def _download_through_proxy(
    tmp_path: Path, chunk_size: int, *, cached: bool = False
) -> None:
    """
    The backend answers a GET with TOTAL bytes (chunked in C{chunk_size}
    pieces, or with a Content-Length when 0); the client reads nothing until
    the backend is stuck, then checks the body and the proxy's memory.
    C{cached}: through a route with a cache, the response storable but for
    its size.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    sender = StallingSender(TOTAL, chunk_size=chunk_size)
    framing = (
        b"Transfer-Encoding: chunked" if chunk_size else b"Content-Length: %d" % TOTAL
    )
    if cached:
        framing += b"\r\nCache-Control: max-age=600"

    def backend() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            read_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\n%b\r\n\r\n" % framing)
            sender.send(conn)

    config = tmp_path / "rproxy.toml"
    config.write_text(http_config(listener.getsockname()[1], cached=cached))
    digest = hashlib.sha256()
    with proxy(config) as running:
        memory = _Memory(running)
        peer = _Peer(backend)
        client = socket.create_connection(("127.0.0.1", running.ports["front"]))
        client.settimeout(TIMEOUT)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sender.stalled.wait(TIMEOUT), "the backend never stalled"
        memory.at_stall()
        print(f"sent before the stall: {sender.sent_at_stall}")
        assert 0 < sender.sent_at_stall < STALL_BOUND, sender.sent_at_stall
        sender.resume.set()
        with client:
            head, rest = read_head(client)
            if chunk_size:
                dechunker = Dechunker(client, rest)
                received = dechunker.read(digest)
                assert client.recv(1) == b"", "connection open after the body"
                print(f"{dechunker.chunks} chunks, largest {dechunker.largest}")
            else:
                received = read_body(client, rest, digest)
        peer.join()
        memory.at_end()
    listener.close()
    fields = head.lower().split(b"\r\n")
    assert fields[0] == b"http/1.1 200 ok", head
    assert (b"transfer-encoding: chunked" in fields) == bool(chunk_size), head
    assert received == TOTAL
    assert digest.hexdigest() == sender.digest.hexdigest()
    memory.assert_flat()


def test_1_gib_download_to_a_stalled_client(tmp_path: Path) -> None:
    """A 1 GiB response arrives intact while the client at first reads
    nothing; proxy RSS stays at its idle level."""
    _download_through_proxy(tmp_path, chunk_size=0)


def test_1_gib_chunked_download_to_a_stalled_client(tmp_path: Path) -> None:
    """A 1 GiB chunked response is re-chunked to the client intact while the
    client at first reads nothing; proxy RSS stays at its idle level."""
    _download_through_proxy(tmp_path, chunk_size=64 * 1024)


def test_1_gib_chunked_download_through_a_cache(tmp_path: Path) -> None:
    """A 1 GiB chunked response on a cached route streams through (too big
    to store: the cache stops keeping a copy past max_object) while the
    client at first reads nothing; proxy RSS stays at its idle level."""
    _download_through_proxy(tmp_path, chunk_size=64 * 1024, cached=True)


def test_1_gib_upload_to_a_stalled_backend(tmp_path: Path) -> None:
    """A 1 GiB request body arrives intact while the backend at first reads
    nothing; proxy RSS stays at its idle level."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    sender = StallingSender(TOTAL)
    digest = hashlib.sha256()
    received = [0]

    def backend() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            _, rest = read_head(conn)
            # Read nothing more until the client is stuck.
            assert sender.stalled.wait(TIMEOUT), "the client never stalled"
            received[0] = read_body(conn, rest, digest, TOTAL)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    config = tmp_path / "rproxy.toml"
    config.write_text(http_config(listener.getsockname()[1]))
    with proxy(config) as running:
        memory = _Memory(running)
        peer = _Peer(backend)
        with socket.create_connection(("127.0.0.1", running.ports["front"])) as client:
            client.settimeout(TIMEOUT)
            client.sendall(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % TOTAL
            )
            uploader = _Peer(lambda: sender.send(client))
            assert sender.stalled.wait(TIMEOUT), "the client never stalled"
            memory.at_stall()
            print(f"sent before the stall: {sender.sent_at_stall}")
            assert 0 < sender.sent_at_stall < STALL_BOUND, sender.sent_at_stall
            sender.resume.set()
            uploader.join()
            client.settimeout(TIMEOUT)  # send() left it blocking without one
            head, _ = read_head(client)
        peer.join()
        memory.at_end()
    listener.close()
    assert head.startswith(b"HTTP/1.1 204 No Content"), head
    assert received[0] == TOTAL
    assert digest.hexdigest() == sender.digest.hexdigest()
    memory.assert_flat()
