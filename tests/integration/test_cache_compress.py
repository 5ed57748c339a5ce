"""Cache and compression on one route of a twistd rproxy: each encoding is
its own stored variant (Vary: Accept-Encoding), served compressed from the
cache with the backend stopped; curl --compressed decodes it."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.helpers import proxy

BODY = json.dumps([{"id": i, "name": f"item {i}"} for i in range(500)]).encode()


class _Origin(BaseHTTPRequestHandler):
    """Answers every GET with BODY as JSON, fresh for ten minutes."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "max-age=600")
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def get(port: int, encoding: str | None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Host": "site.example"}
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    conn.request("GET", "/items", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_each_encoding_is_stored_and_served_from_the_cache(tmp_path: Path) -> None:
    """gzip, identity and curl's Accept-Encoding are three variants, each
    fetched once and then hits with the backend stopped; each decodes to the
    backend's body."""
    origin = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    config = tmp_path / "rproxy.toml"
    config.write_text(
        f"""
[caches.api]
memory = "8MiB"

[pools.web]
backends = ["127.0.0.1:{origin.server_address[1]}"]
[pools.web.health]
check = "none"

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
[[listeners.routes]]
path_prefix = "/"
pool = "web"
cache = "api"
compress = true
"""
    )
    with proxy(config) as running:
        port = running.ports["front"]
        try:
            zipped, data = get(port, "gzip")
            assert zipped.getheader("Content-Encoding") == "gzip"
            assert zipped.getheader("Vary") == "Accept-Encoding"
            assert zipped.getheader("ETag") == 'W/"v1"'
            assert gzip.decompress(data) == BODY
            plain, data = get(port, None)
            assert plain.getheader("Content-Encoding") is None
            assert data == BODY
            assert _Origin.requests == 2
            # curl's own Accept-Encoding is a third variant.
            assert curl_compressed(port) == BODY
            assert _Origin.requests == 3
        finally:
            origin.shutdown()
            origin.server_close()
        for encoding, decode in (("gzip", gzip.decompress), (None, bytes)):
            response, data = get(port, encoding)
            status = response.getheader("Cache-Status", "")
            assert status.startswith("rproxy; hit"), status
            assert decode(data) == BODY
        assert curl_compressed(port) == BODY
        assert _Origin.requests == 3


def curl_compressed(port: int) -> bytes:
    """What C{curl --compressed} gets for /items, decoded."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed")
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "--compressed",
            "-H",
            "Host: site.example",
            f"http://127.0.0.1:{port}/items",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return curl.stdout
