"""Reloading a twistd rproxy with SIGHUP twenty times while keep-alive HTTP
clients and TCP clients keep it busy: no request fails, no connection is
reset.  Backends are stdlib threaded servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import http.server
import signal
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.helpers import start_proxy

#: per client thread: the most requests or connections it makes.
MAX_PER_CLIENT = 20_000
#: the longest any single wait may take, in seconds.
DEADLINE = 60.0


class _Named(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body in one write (unbuffered, they would be two small
    # segments and the second would wait for a delayed ACK).
    wbufsize = 1 << 16
    name = ""

    def do_GET(self) -> None:
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def servers() -> Iterator[dict[str, int]]:
    """Three HTTP backends (a, b, c) and two TCP echo backends (t1, t2)."""
    running: list[socketserver.BaseServer] = []
    ports = {}
    for name in ("a", "b", "c"):
        handler = type(f"Named_{name}", (_Named,), {"name": name})
        server: socketserver.TCPServer = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), handler
        )
        running.append(server)
        ports[name] = server.server_address[1]
    for name in ("t1", "t2"):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        server.daemon_threads = True
        running.append(server)
        ports[name] = server.server_address[1]
    for server in running:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ports
    finally:
        for server in running:
            server.shutdown()
            server.server_close()


def config(ports: dict[str, int], round: int, *, broken: bool = False) -> str:
    """
    Round C{round}'s config: backend c comes and goes, a's weight changes,
    the TCP pool gains and loses t2.
    """
    a = ports["a"]
    web = [f'{{ address = "127.0.0.1:{a}", name = "a", weight = {1 + round % 3} }}']
    web.append(f'{{ address = "127.0.0.1:{ports["b"]}", name = "b" }}')
    if round % 2:
        web.append(f'{{ address = "127.0.0.1:{ports["c"]}", name = "c", weight = 2 }}')
    tcp = [f'"127.0.0.1:{ports["t1"]}"']
    if round % 2 == 0:
        tcp.append(f'"127.0.0.1:{ports["t2"]}"')
    balance = "weighted" if not broken else "weigthed"
    return f"""
[shutdown]
grace = 5

[pools.web]
balance = "{balance}"
backends = [{", ".join(web)}]
health = {{ check = "tcp", interval = 0.5 }}

[pools.tcp]
backends = [{", ".join(tcp)}]
health = {{ check = "none" }}

[[listeners]]
name = "http"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"

[[listeners]]
name = "tcp"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "tcp"
"""


class Load:
    """Client threads and what they saw."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.done: Counter[str] = Counter()
        self.failures: list[str] = []
        self.bodies: Counter[str] = Counter()
        self.threads: list[threading.Thread] = []

    def start(self, target: Callable[[int], None], port: int) -> None:
        thread = threading.Thread(target=target, args=(port,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def record(self, kind: str, failure: str | None = None, body: str = "") -> None:
        with self.lock:
            self.done[kind] += 1
            if failure is not None:
                self.failures.append(failure)
            if body:
                self.bodies[body] += 1
            self.lock.notify_all()

    def wait_for_more(self, requests: int, connections: int) -> None:
        """
        Block until C{requests} more HTTP requests and C{connections} more
        TCP connections are done.
        """
        with self.lock:
            target = self.done + Counter(http=requests, tcp=connections)

            def enough() -> bool:
                return all(self.done[k] >= target[k] for k in target)

            assert self.lock.wait_for(enough, DEADLINE), (
                f"only {self.done} of {target} done; failures: {self.failures[:5]}"
            )

    def http_client(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        try:
            for _ in range(MAX_PER_CLIENT):
                if self.stop.is_set():
                    return
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read().decode()
                except (OSError, http.client.HTTPException) as e:
                    self.record("http", f"http: {e!r}")
                    conn.close()
                    continue
                failure = None if response.status == 200 else f"http {response.status}"
                self.record("http", failure, body)
        finally:
            conn.close()

    def tcp_client(self, port: int) -> None:
        for n in range(MAX_PER_CLIENT):
            if self.stop.is_set():
                return
            payload = f"connection {n}\n".encode()
            try:
                with socket.create_connection(("127.0.0.1", port), DEADLINE) as sock:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    received = b""
                    while chunk := sock.recv(4096):
                        received += chunk
            except OSError as e:
                self.record("tcp", f"tcp: {e!r}")
                continue
            self.record(
                "tcp", None if received == payload else f"tcp echoed {received!r}"
            )

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(DEADLINE)


def test_twenty_reloads_under_load_lose_nothing(tmp_path: Path) -> None:
    """
    While four keep-alive HTTP clients and two TCP clients run, the config
    changes twenty times by SIGHUP (a backend added and removed, weights
    changed, a TCP backend added and removed, once a broken file): every
    request gets a 200 from a backend, every TCP connection its echo.
    """
    path = tmp_path / "rproxy.toml"
    with servers() as ports:
        path.write_text(config(ports, 0))
        running = start_proxy(path, listeners=2)
        load = Load()
        try:
            for _ in range(4):
                load.start(load.http_client, running.ports["http"])
            for _ in range(2):
                load.start(load.tcp_client, running.ports["tcp"])
            load.wait_for_more(40, 10)
            has_c = False
            for round in range(1, 21):
                broken = round == 10
                path.write_text(config(ports, round, broken=broken))
                running.proc.send_signal(signal.SIGHUP)
                line = running.wait_for("reloaded", DEADLINE)
                if broken:
                    assert "not reloaded" in line and "balance" in line, line
                else:
                    assert "not reloaded" not in line, line
                    if round % 2 and not has_c:
                        # An added backend takes traffic once checked.
                        running.wait_for("backend c in pool web is now up", DEADLINE)
                    has_c = bool(round % 2)
                load.wait_for_more(40, 10)
        finally:
            load.finish()
            output = running.stop()
    assert load.failures == [], load.failures[:10]
    assert output.count("not reloaded") == 1, output[-3000:]
    assert output.count(f"config {path} reloaded") == 19, output[-3000:]
    # Backend c was in the pool on odd rounds only, and took requests then.
    assert set(load.bodies) == {"a", "b", "c"}, load.bodies
    assert load.done["http"] >= 21 * 40 and load.done["tcp"] >= 21 * 10
