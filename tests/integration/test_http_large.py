"""200 MiB each way through a twistd rproxy HTTP listener, with the far side
at first not reading: the proxy must stop reading too, not buffer."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

from tests.integration.helpers import MIB, StallingSender, proxy, read_head

TOTAL = 200 * MIB


def http_config(backend_port: int) -> str:
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
"""


def test_200_mib_download_to_a_stalled_client(tmp_path: Path) -> None:
    """A response larger than memory should hold arrives intact while the
    client at first reads nothing; proxy RSS stays bounded."""
    listener = socket.create_server(("127.0.0.1", 0))
    sender = StallingSender(TOTAL)

    def backend() -> None:
        conn, _ = listener.accept()
        with conn:
            read_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
            sender.send(conn)

    thread = threading.Thread(target=backend, daemon=True)
    thread.start()
    config = tmp_path / "rproxy.toml"
    config.write_text(http_config(listener.getsockname()[1]))
    with proxy(config) as running:
        baseline = running.rss_kib()
        client = socket.create_connection(("127.0.0.1", running.ports["front"]))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sender.stalled.wait(60), "the backend never stalled"
        stalled_rss = running.rss_kib()
        assert 0 < sender.sent_at_stall < 48 * MIB, sender.sent_at_stall
        sender.resume.set()
        head, body = read_head(client)
        digest = hashlib.sha256(body)
        received = len(body)
        while chunk := client.recv(1 << 16):
            digest.update(chunk)
            received += len(chunk)
        client.close()
        peak = running.rss_kib("VmHWM")
    thread.join(30)
    listener.close()
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert received == TOTAL
    assert digest.hexdigest() == sender.digest.hexdigest()
    assert stalled_rss - baseline < 32 * 1024, (baseline, stalled_rss)
    assert peak - baseline < 48 * 1024, (baseline, peak)


def test_200_mib_upload_to_a_stalled_backend(tmp_path: Path) -> None:
    """A request body larger than memory should hold arrives intact while the
    backend at first reads nothing; proxy RSS stays bounded."""
    listener = socket.create_server(("127.0.0.1", 0))
    sender = StallingSender(TOTAL)
    received = hashlib.sha256()
    count = [0]

    def backend() -> None:
        conn, _ = listener.accept()
        with conn:
            _, rest = read_head(conn)
            sender.stalled.wait(60)  # read nothing until the client is stuck
            received.update(rest)
            count[0] = len(rest)
            while count[0] < TOTAL:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                received.update(chunk)
                count[0] += len(chunk)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    thread = threading.Thread(target=backend, daemon=True)
    thread.start()
    config = tmp_path / "rproxy.toml"
    config.write_text(http_config(listener.getsockname()[1]))
    with proxy(config) as running:
        baseline = running.rss_kib()
        client = socket.create_connection(("127.0.0.1", running.ports["front"]))
        client.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TOTAL
        )
        uploader = threading.Thread(target=sender.send, args=(client,), daemon=True)
        uploader.start()
        assert sender.stalled.wait(60), "the client never stalled"
        stalled_rss = running.rss_kib()
        assert 0 < sender.sent_at_stall < 48 * MIB, sender.sent_at_stall
        sender.resume.set()
        uploader.join(120)
        client.setblocking(True)
        head, _ = read_head(client)
        client.close()
        peak = running.rss_kib("VmHWM")
    thread.join(30)
    listener.close()
    assert head.startswith(b"HTTP/1.1 204 No Content")
    assert count[0] == TOTAL
    assert received.hexdigest() == sender.digest.hexdigest()
    assert stalled_rss - baseline < 32 * 1024, (baseline, stalled_rss)
    assert peak - baseline < 48 * 1024, (baseline, peak)
