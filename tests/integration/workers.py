"""Helpers for the workers integration tests: named HTTP backends in threads
that count health probes and can hold a response, keep-alive client threads
that know which worker process served each of their connections, and the
admin's status and metrics read from the test."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: the longest any single wait may take, in seconds.
DEADLINE = 60.0
#: per client thread: the most requests it makes.
MAX_PER_CLIENT = 20_000


def socket_owner(local: int, remote: int, pids: list[int]) -> int | None:
    """
    Which of C{pids} holds the TCP socket whose local port on 127.0.0.1 is
    C{local} and whose peer's port is C{remote} (0: any peer), from
    C{/proc/net/tcp} and each process's descriptors.
    """
    want_local = f"0100007F:{local:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] != want_local:
                continue
            if remote and fields[2] != f"0100007F:{remote:04X}":
                continue
            inodes.add(fields[9])
    links = {f"socket:[{inode}]" for inode in inodes if inode != "0"}
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") in links:
                    return pid
            except OSError:
                continue
    return None


class Backend(http.server.ThreadingHTTPServer):
    """
    An HTTP backend answering its C{name}; it counts the health probes
    (C{User-Agent: rproxy-health}) once given C{pids}, noting which of
    those processes each came from; C{/slow} waits for C{release};
    C{/cached} may be cached for an hour.
    """

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.port: int = self.server_address[1]
        self.lock = threading.Lock()
        self.probes: list[tuple[float, int | None]] = []
        self.pids: list[int] = []
        self.release = threading.Event()
        self.slow_arrived = threading.Event()
        #: GETs of C{/cached}, answered with C{max-age=3600}.
        self.cached_fetches = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16
    server: Backend

    def do_GET(self) -> None:
        server = self.server
        if self.headers.get("User-Agent") == "rproxy-health" and server.pids:
            # The prober's end: its port is our peer's, its peer us.
            owner = socket_owner(self.client_address[1], server.port, server.pids)
            with server.lock:
                server.probes.append((time.monotonic(), owner))
        if self.path == "/slow":
            server.slow_arrived.set()
            server.release.wait(DEADLINE)
        body = server.name.encode()
        self.send_response(200)
        if self.path == "/cached":
            with server.lock:
                server.cached_fetches += 1
            self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def backends(*names: str) -> Iterator[dict[str, Backend]]:
    """Named backends serving in threads, shut down afterwards."""
    running = {name: Backend(name) for name in names}
    for server in running.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield running
    finally:
        for server in running.values():
            server.shutdown()
            server.server_close()


class Load:
    """
    Keep-alive HTTP client threads; each failure is recorded with the pid
    of the worker that held the connection it happened on.
    """

    def __init__(self, port: int, pids: Callable[[], list[int]]) -> None:
        self.port = port
        self.pids = pids
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.done = 0
        self.failures: list[tuple[int | None, str]] = []
        self.bodies: Counter[str] = Counter()
        self.served_by: Counter[int | None] = Counter()
        self.threads: list[threading.Thread] = []

    def start(self, clients: int) -> None:
        for _ in range(clients):
            thread = threading.Thread(target=self._client, daemon=True)
            self.threads.append(thread)
            thread.start()

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        owner: int | None = None
        for _ in range(MAX_PER_CLIENT):
            if self.stop.is_set():
                break
            try:
                if conn is None:
                    owner = None
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=30
                    )
                    # Refused would be a failure too: the sockets stay open.
                    conn.connect()
                    assert conn.sock is not None
                    owner = self._owner(conn.sock.getsockname()[1])
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read().decode()
            except (OSError, http.client.HTTPException) as e:
                self._record(owner, f"{e!r}")
                if conn is not None:
                    conn.close()
                conn = None
                continue
            self._record(
                owner, None if response.status == 200 else f"{response.status}", body
            )
        if conn is not None:
            conn.close()

    def _owner(self, local: int) -> int | None:
        # The worker accepts a moment after connect() returns.
        end = time.monotonic() + 5
        while time.monotonic() < end:
            owner = socket_owner(self.port, local, self.pids())
            if owner is not None:
                return owner
            time.sleep(0.005)
        return None

    def _record(self, owner: int | None, failure: str | None, body: str = "") -> None:
        with self.lock:
            self.done += 1
            self.served_by[owner] += 1
            if failure is not None:
                self.failures.append((owner, failure))
            if body:
                self.bodies[body] += 1
            self.lock.notify_all()

    def wait_for_more(self, requests: int) -> None:
        """Block until C{requests} more requests are done."""
        with self.lock:
            target = self.done + requests
            assert self.lock.wait_for(lambda: self.done >= target, DEADLINE), (
                f"only {self.done} of {target} done; failures: {self.failures[:5]}"
            )

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(DEADLINE)


def admin_get(port: int, path: str) -> bytes:
    """GET C{path} from the admin interface."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.status
        return response.read()
    finally:
        conn.close()


def admin_post(port: int, path: str) -> dict[str, Any]:
    """POST to C{path} on the admin interface; its JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, headers={"Content-Length": "0"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        answer: dict[str, Any] = json.loads(body)
        return answer
    finally:
        conn.close()


def status(port: int) -> dict[str, Any]:
    """The admin's JSON status."""
    answer: dict[str, Any] = json.loads(admin_get(port, "/status.json"))
    return answer


def wait_until(check: Callable[[], Any], what: str, deadline: float = 30) -> Any:
    """Poll C{check} (bounded) until it returns something true; return it."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def worker_requests(port: int) -> dict[int, int]:
    """Requests each worker's listeners answered, by worker number, from
    the C{workers} entries of the status."""
    counts = {}
    for worker in status(port)["workers"]:
        counts[worker["worker"]] = sum(
            listener.get("requests_total") or 0
            for listener in worker.get("listeners", ())
        )
    return counts


def worker_pids(port: int) -> dict[int, int]:
    """The pid of each running worker, by number."""
    return {
        w["worker"]: w["pid"]
        for w in status(port)["workers"]
        if w["state"] == "running" and w["pid"]
    }


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def echo_backend() -> Iterator[int]:
    """A TCP echo server in threads; its port."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def worker_connections(port: int, listener: str) -> dict[int, int]:
    """Connections each worker's listener C{listener} accepted, by worker."""
    counts = {}
    for worker in status(port)["workers"]:
        counts[worker["worker"]] = sum(
            entry.get("connections_total") or 0
            for entry in worker.get("listeners", ())
            if entry["name"] == listener
        )
    return counts
