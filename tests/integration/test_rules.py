"""Request rules over real sockets: a twistd rproxy on 127.0.0.1 running the
shipped example rules (examples/rules/waf.toml) in front of a stdlib HTTP
backend.  A traversal is refused before any backend sees it while the same
kind of path, properly encoded, reaches the backend unchanged; a scanner's
User-Agent is refused; a tarpit drops its connection unanswered; /metrics
counts each rule's hits and the access log names the rule that refused."""

from __future__ import annotations

import http.client
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, RunningProxy, proxy, raw_exchange

EXAMPLE = ROOT / "examples" / "rules"


class Backend(BaseHTTPRequestHandler):
    """Answers 200 with the request-target it got, and records it."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = f"backend got {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Recording", (Backend,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def running(
    tmp_path: Path, backend: tuple[int, list[str]]
) -> Iterator[tuple[RunningProxy, int, Path]]:
    """The shipped config, listening on free ports, with an admin interface,
    an access log and a tarpit rule added."""
    text = (EXAMPLE / "waf.toml").read_text()
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{backend[0]}")
    text = text.replace("tcp:8080:interface=127.0.0.1", "tcp:0:interface=127.0.0.1")
    text = text.replace(
        "[pools.web]",
        '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n\n'
        '[access_log]\npath = "access.log"\n\n[pools.web]',
    )
    text += (
        '\ntarpit = [{ name = "waf.login-tarpit", path = "/wp-login.php", '
        "seconds = 1 }]\n"
    )
    (tmp_path / "waf.toml").write_text(text)
    shutil.copy(EXAMPLE / "bad-bots.txt", tmp_path / "bad-bots.txt")
    with proxy(tmp_path / "waf.toml") as rproxy:
        line = next(
            (line for line in rproxy.output if "admin interface on" in line), None
        ) or rproxy.wait_for("admin interface on")
        found = re.search(r"\(127\.0\.0\.1:(\d+)\)", line)
        assert found is not None, line
        yield rproxy, int(found[1]), tmp_path


def get(port: int, target: str, agent: str = "test/1") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("User-Agent", agent)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_traversal_blocked_encoded_path_passes(
    running: tuple[RunningProxy, int, Path], backend: tuple[int, list[str]]
) -> None:
    """Traversals in their encodings get 403 and reach no backend; paths
    whose escapes decode to nothing dangerous reach it as sent."""
    rproxy, _, _ = running
    port = rproxy.ports["public"]
    _, seen = backend
    for attack in [
        "/a/..%2f..%2fetc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/a/%2E./%2E./etc/passwd",
        "/a/..%5c..%5cwindows/win.ini",
        "/%252e%252e/etc/passwd",
    ]:
        assert get(port, attack)[0] == 403, attack
    assert seen == []
    for benign in ["/files/report%2Epdf", "/files/annual%20report.pdf", "/%7Euser/"]:
        status, body = get(port, benign)
        assert (status, body) == (200, f"backend got {benign}".encode())
    assert seen == ["/files/report%2Epdf", "/files/annual%20report.pdf", "/%7Euser/"]


def test_scanner_agent_refused_and_counted(
    running: tuple[RunningProxy, int, Path], backend: tuple[int, list[str]]
) -> None:
    """A scanner's User-Agent gets 403; /metrics counts the rule's hits and
    the access log names it."""
    rproxy, admin, directory = running
    port = rproxy.ports["public"]
    assert get(port, "/", "sqlmap/1.7.2#stable (https://sqlmap.org)")[0] == 403
    assert get(port, "/", "Mozilla/5.00 (Nikto/2.1.6)")[0] == 403
    assert backend[1] == []
    status, metrics = get(admin, "/metrics")
    assert status == 200
    hits = b'rproxy_rule_hits_total{action="deny",rule="waf.scanner-agent",rules="waf"}'
    assert hits + b" 2.0" in metrics
    rproxy.stop()
    log = (directory / "access.log").read_text()
    assert log.count('refused_by="waf.scanner-agent"') == 2


def test_tarpit_drops_the_connection_unanswered(
    running: tuple[RunningProxy, int, Path], backend: tuple[int, list[str]]
) -> None:
    """A tarpitted request gets no answer: its connection is dropped once
    the rule's second is up."""
    rproxy, _, _ = running
    try:
        answer = raw_exchange(
            rproxy.ports["public"],
            b"GET /wp-login.php HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\n",
        )
    except ConnectionResetError:
        answer = b""
    assert answer == b""
    assert backend[1] == []
    assert get(rproxy.ports["public"], "/ok")[0] == 200
