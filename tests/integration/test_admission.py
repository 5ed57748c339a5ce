"""Connection limits and address lists through a twistd rproxy on real
sockets: clients bound to several addresses of 127.0.0.0/8 (127.0.0.2,
127.0.0.3, ...), stdlib backends in threads, the counters read from
/metrics and the access log, and a SIGHUP reload that changes the lists."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseRequestHandler, ThreadingTCPServer

import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import drain, free_port, proxy

TIMEOUT = 20


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Greeter(BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hi\n")
        with suppress(OSError):
            while self.request.recv(4096):
                pass


@contextmanager
def backends() -> Iterator[tuple[int, int]]:
    """An HTTP backend and a TCP one that greets, on 127.0.0.1."""
    ThreadingHTTPServer.daemon_threads = True
    ThreadingTCPServer.daemon_threads = True
    ThreadingTCPServer.allow_reuse_address = True
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    tcp = ThreadingTCPServer(("127.0.0.1", 0), _Greeter)
    threads = [
        threading.Thread(target=server.serve_forever, daemon=True)
        for server in (web, tcp)
    ]
    for thread in threads:
        thread.start()
    try:
        yield web.server_address[1], tcp.server_address[1]
    finally:
        for server in (web, tcp):
            server.shutdown()
            server.server_close()


def config(web: int, tcp: int, admin: int, log: Path, listeners: str) -> str:
    return f"""
[pools.web]
backends = ["127.0.0.1:{web}"]
health = {{ check = "none" }}

[pools.tcp]
backends = ["127.0.0.1:{tcp}"]
health = {{ check = "none" }}

[admin]
listen = "tcp:{admin}:interface=127.0.0.1"

[access_log]
path = "{log}"
format = "json"
{listeners}
"""


def connect_from(source: str, port: int) -> socket.socket:
    """A connection to the proxy's C{port} from C{source}."""
    return socket.create_connection(
        ("127.0.0.1", port), TIMEOUT, source_address=(source, 0)
    )


def greeted(sock: socket.socket) -> bool:
    """Whether the TCP backend's greeting came through (else the proxy
    closed the connection)."""
    try:
        return sock.recv(3) == b"hi\n"
    except ConnectionResetError:
        return False


def get(source: str, port: int, path: str = "/") -> tuple[int, bytes]:
    """One GET from C{source}."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def refused_answer(source: str, port: int, request: bytes = b"") -> bytes:
    """What the proxy sends a client from C{source} (that sends
    C{request}, perhaps nothing) until it closes."""
    with connect_from(source, port) as sock:
        if request:
            sock.sendall(request)
        return drain(sock)


def refusals(admin: int) -> dict[tuple[str, str], float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        (s.labels["listener"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "rproxy_listener_refused_total" and s.value
    }


def access(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def refused_events(log: Path) -> list[tuple[object, object, object]]:
    return [
        (r["listener"], r["client"], r["refused_by"])
        for r in access(log)
        if "refused_by" in r
    ]


def wait_for_log(log: Path, count: int) -> None:
    """The access log is flushed each second: wait (bounded) for C{count}
    refusal events."""
    deadline = threading.Event()
    for _ in range(100):
        if log.exists() and len(refused_events(log)) >= count:
            return
        deadline.wait(0.05)
    raise AssertionError(f"not {count} refusals in {log}: {access(log)}")


def test_per_ip_caps_listener_cap_and_accept_rate(tmp_path: Path) -> None:
    """
    A TCP listener with max_connections_per_ip = 2: a third connection from
    127.0.0.2 is closed at once while 127.0.0.3 still gets two, and
    127.0.0.2 gets one again once one of its own closed.  An HTTP listener
    with max_connections = 2 answers a third client 503 before it sends
    anything (and one that sends its request at once still reads the
    answer), and one with accept_rate_per_ip = "2/m" answers 429 with a
    Retry-After.  Each refusal is counted in /metrics and is an access
    event naming the key.
    """
    admin, log = free_port(), tmp_path / "access.log"
    listeners = """
[[listeners]]
name = "raw"
listen = "tcp:0:interface=127.0.0.1"
pool = "tcp"
max_connections_per_ip = 2

[[listeners]]
name = "full"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
max_connections = 2

[[listeners]]
name = "rated"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
accept_rate_per_ip = "2/m"
"""
    path = tmp_path / "rproxy.toml"
    with backends() as (web, tcp):
        path.write_text(config(web, tcp, admin, log, listeners))
        with proxy(path, listeners=3) as running:
            raw = running.ports["raw"]
            a1, a2 = connect_from("127.0.0.2", raw), connect_from("127.0.0.2", raw)
            assert greeted(a1) and greeted(a2)
            with connect_from("127.0.0.2", raw) as a3:
                assert not greeted(a3)
            b1, b2 = connect_from("127.0.0.3", raw), connect_from("127.0.0.3", raw)
            assert greeted(b1) and greeted(b2)
            a1.close()
            # The proxy sees the close soon; try a bounded number of times.
            for _ in range(50):
                with connect_from("127.0.0.2", raw) as again:
                    if greeted(again):
                        break
            else:
                raise AssertionError("127.0.0.2 never let in again")
            for sock in (a2, b1, b2):
                sock.close()

            full = running.ports["full"]
            held = [
                http.client.HTTPConnection(
                    "127.0.0.1", full, timeout=TIMEOUT, source_address=(src, 0)
                )
                for src in ("127.0.0.4", "127.0.0.5")
            ]
            for conn in held:  # two kept-alive clients fill the listener
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"hello /"
            silent = refused_answer("127.0.0.6", full)
            assert silent.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), silent
            assert silent.endswith(b"too many connections, try again later\n")
            eager = refused_answer(
                "127.0.0.6", full, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            assert eager == silent
            for conn in held:
                conn.close()

            rated = running.ports["rated"]
            assert get("127.0.0.7", rated) == (200, b"hello /")
            assert get("127.0.0.7", rated) == (200, b"hello /")
            answer = refused_answer("127.0.0.7", rated)
            assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer
            assert b"\r\nRetry-After: 30\r\n" in answer
            assert get("127.0.0.8", rated) == (200, b"hello /")

            counts = refusals(admin)
            assert counts[("raw", "per_ip")] >= 1
            assert counts[("full", "full")] == 2
            assert counts[("rated", "rate")] == 1
            # One access event per refusal counted.
            wait_for_log(log, int(sum(counts.values())))
            events = refused_events(log)
            assert ("raw", "127.0.0.2", "max_connections_per_ip") in events
            assert events.count(("full", "127.0.0.6", "max_connections")) == 2
            assert ("rated", "127.0.0.7", "accept_rate_per_ip") in events


def test_deny_lists_on_a_listener_and_a_route_and_a_reload(tmp_path: Path) -> None:
    """
    A listener's deny list refuses 127.0.0.2 at accept (403 before any
    request), a route's allow file lets only 127.0.0.3 into /admin/ (403
    for the others, the rest of the site open), a TCP listener's deny list
    closes 127.0.0.2 at once; after the files and config change and a
    SIGHUP, the new lists apply on the same ports.
    """
    admin, log = free_port(), tmp_path / "access.log"
    office = tmp_path / "office.txt"
    office.write_text("# the office\n127.0.0.3\n")

    def listeners(denied: str) -> str:
        return f"""
[[listeners]]
name = "site"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
deny = ["{denied}"]
[[listeners.routes]]
path_prefix = "/admin/"
pool = "web"
allow_file = "office.txt"
[[listeners.routes]]
pool = "web"

[[listeners]]
name = "raw"
listen = "tcp:0:interface=127.0.0.1"
pool = "tcp"
deny = ["{denied}/32"]
"""

    path = tmp_path / "rproxy.toml"
    with backends() as (web, tcp):
        path.write_text(config(web, tcp, admin, log, listeners("127.0.0.2")))
        with proxy(path, listeners=2) as running:
            site, raw = running.ports["site"], running.ports["raw"]
            answer = refused_answer("127.0.0.2", site)
            assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
            assert get("127.0.0.3", site, "/admin/") == (200, b"hello /admin/")
            assert get("127.0.0.4", site, "/admin/") == (403, b"forbidden\n")
            assert get("127.0.0.4", site, "/") == (200, b"hello /")
            with connect_from("127.0.0.2", raw) as sock:
                assert not greeted(sock)
            with connect_from("127.0.0.4", raw) as sock:
                assert greeted(sock)

            office.write_text("127.0.0.4\n")
            path.write_text(config(web, tcp, admin, log, listeners("127.0.0.5")))
            running.proc.send_signal(signal.SIGHUP)
            line = running.wait_for("reloaded", TIMEOUT)
            assert "not reloaded" not in line, line
            assert get("127.0.0.2", site, "/") == (200, b"hello /")
            assert get("127.0.0.3", site, "/admin/") == (403, b"forbidden\n")
            assert get("127.0.0.4", site, "/admin/") == (200, b"hello /admin/")
            assert refused_answer("127.0.0.5", site).startswith(b"HTTP/1.1 403 ")
            with connect_from("127.0.0.2", raw) as sock:
                assert greeted(sock)
            with connect_from("127.0.0.5", raw) as sock:
                assert not greeted(sock)

            counts = refusals(admin)
            assert counts == {
                ("site", "denied"): 2,
                ("site", "route_denied"): 2,
                ("raw", "denied"): 2,
            }
            wait_for_log(log, 6)
            assert sorted(map(str, refused_events(log))) == sorted(
                map(
                    str,
                    [
                        ("site", "127.0.0.2", "deny"),
                        ("site", "127.0.0.4", "route.allow"),
                        ("raw", "127.0.0.2", "deny"),
                        ("site", "127.0.0.3", "route.allow"),
                        ("site", "127.0.0.5", "deny"),
                        ("raw", "127.0.0.5", "deny"),
                    ],
                )
            )

            # A reload with a bad list entry is refused and the lists stay.
            path.write_text(config(web, tcp, admin, log, listeners("127.0.0.x")))
            running.proc.send_signal(signal.SIGHUP)
            line = running.wait_for("reloaded", TIMEOUT)
            assert "not reloaded" in line and "listeners[0].deny[0]" in line, line
            assert refused_answer("127.0.0.5", site).startswith(b"HTTP/1.1 403 ")


def test_tls_and_proxy_header_listeners(tmp_path: Path) -> None:
    """
    An HTTPS listener closes a refused connection before the handshake
    (the client's handshake fails; the allowed one is served).  A listener
    reading PROXY headers from 127.0.0.1 checks its deny list on the client
    each header announces.
    """
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "site.pem"))
    admin, log = free_port(), tmp_path / "access.log"
    listeners = """
[[listeners]]
name = "secure"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
deny = ["127.0.0.2"]
[listeners.tls]
certificates = [{ cert = "site.pem" }]

[[listeners]]
name = "behind"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
accept_proxy = true
trusted_proxies = ["127.0.0.1"]
deny = ["203.0.113.0/24"]
"""
    path = tmp_path / "rproxy.toml"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with backends() as (web, tcp):
        path.write_text(config(web, tcp, admin, log, listeners))
        with proxy(path, listeners=2) as running:
            secure = running.ports["secure"]
            with (
                connect_from("127.0.0.3", secure) as sock,
                context.wrap_socket(sock, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert tls.recv(4096).startswith(b"HTTP/1.1 200 ")
            with connect_from("127.0.0.2", secure) as sock:
                try:
                    context.wrap_socket(sock, server_hostname="localhost")
                except (ssl.SSLError, OSError):
                    pass
                else:
                    raise AssertionError("a denied client completed a handshake")

            behind = running.ports["behind"]
            request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            header = b"PROXY TCP4 %s 127.0.0.1 5000 80\r\n"
            denied = refused_answer("127.0.0.1", behind, header % b"203.0.113.9")
            assert denied.startswith(b"HTTP/1.1 403 "), denied
            served = refused_answer(
                "127.0.0.1", behind, header % b"198.51.100.9" + request
            )
            assert served.startswith(b"HTTP/1.1 200 ") and served.endswith(b"hello /")
            assert refusals(admin) == {("secure", "denied"): 1, ("behind", "denied"): 1}
            wait_for_log(log, 2)
            assert sorted(map(str, refused_events(log))) == sorted(
                [
                    str(("secure", "127.0.0.2", "deny")),
                    str(("behind", "203.0.113.9", "deny")),
                ]
            )
