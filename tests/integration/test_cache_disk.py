"""A twistd rproxy with a cache's disk tier: what it stored before a
restart is served after it, with the backend gone."""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.integration.helpers import proxy

BODY = b"stored before the restart\n" * 100


class _Origin(BaseHTTPRequestHandler):
    """Answers every GET with BODY, fresh for ten minutes."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Cache-Control", "max-age=600")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def get(port: int, path: str) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": "site.example"})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Cache-Status", "")
    finally:
        conn.close()


def test_disk_tier_survives_a_restart(tmp_path: Path) -> None:
    """A response stored on disk before a restart is a hit after it, with
    the backend stopped."""
    origin = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    serving = threading.Thread(target=origin.serve_forever, daemon=True)
    serving.start()
    config = tmp_path / "rproxy.toml"
    config.write_text(
        f"""
[caches.static]
memory = "8MiB"
disk = {{ path = "cache", size = "64MiB" }}

[pools.web]
backends = ["127.0.0.1:{origin.server_address[1]}"]
[pools.web.health]
check = "none"

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
[[listeners.routes]]
pool = "web"
cache = "static"
"""
    )
    try:
        with proxy(config) as running:
            running.wait_for("disk tier")
            port = running.ports["front"]
            status, body, cache_status = get(port, "/page")
            assert (status, body) == (200, BODY)
            assert cache_status == "rproxy; fwd=uri-miss; fwd-status=200; stored"
            assert re.fullmatch(r"rproxy; hit; ttl=(59\d|600)", get(port, "/page")[2])
            running.stop()
    finally:
        origin.shutdown()
        origin.server_close()
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1, files
    with proxy(config) as running:
        line = running.wait_for("disk tier")
        assert "1 responses" in line, line
        status, body, cache_status = get(running.ports["front"], "/page")
        assert (status, body) == (200, BODY)
        assert cache_status.startswith("rproxy; hit"), cache_status
