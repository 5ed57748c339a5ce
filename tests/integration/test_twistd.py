"""rproxy as users run it: twistd processes, the CLI and the examples, with
real backends on 127.0.0.1 (plain sockets in threads)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.integration.helpers import (
    MIB,
    ROOT,
    TWISTD,
    RunningProxy,
    StallingSender,
    drain,
    free_port,
    proxy,
    python_env,
    run_twistd,
    start_proxy,
    tcp_config,
)


class Source(threading.Thread):
    """A backend that accepts one connection and sends C{total} bytes,
    noting when the proxy stops taking them."""

    def __init__(self, total: int) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sender = StallingSender(total)

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.sender.send(conn)
        self.listener.close()


def test_200_mib_through_a_stalled_reader_keeps_memory_flat(tmp_path: Path) -> None:
    """200 MiB arrive intact while the client at first reads nothing: the
    proxy stops reading from the backend instead of buffering."""
    source = Source(200 * MIB)
    source.start()
    config = tmp_path / "rproxy.toml"
    config.write_text(
        tcp_config([source.port], extra='[pools.p.health]\ncheck = "none"')
    )
    with proxy(config) as running:
        baseline = running.rss_kib()
        client = socket.create_connection(("127.0.0.1", running.ports["front"]))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        assert source.sender.stalled.wait(60), "the backend never stalled"
        stalled_rss = running.rss_kib()
        assert 0 < source.sender.sent_at_stall < 48 * MIB, source.sender.sent_at_stall
        source.sender.resume.set()
        digest = hashlib.sha256()
        received = 0
        while chunk := client.recv(16 * 1024):
            digest.update(chunk)
            received += len(chunk)
        client.close()
        peak = running.rss_kib("VmHWM")
        running.stop()
    source.join(30)
    assert received == 200 * MIB
    assert digest.hexdigest() == source.sender.digest.hexdigest()
    assert stalled_rss - baseline < 32 * 1024, (baseline, stalled_rss)
    assert peak - baseline < 48 * 1024, (baseline, peak)


def test_a_bad_config_is_refused_with_every_problem_and_no_traceback(
    tmp_path: Path,
) -> None:
    """twistd rproxy exits non-zero naming file, key and problem."""
    config = tmp_path / "bad.toml"
    config.write_text(
        """
[pools.db]
balanse = "round_robin"
backends = [{ address = "127.0.0.1:5433" }, { address = "127.0.0.1:5434", weight = -2 }]
[[listeners]]
name = "x"
listen = "tcp:6432"
pool = "dbb"
"""
    )
    result = run_twistd(config)
    assert result.returncode != 0
    err = result.stderr
    assert f"{config}: pools.db.balanse: unknown key, did you mean 'balance'?" in err
    assert (
        f"{config}: pools.db.backends[1].weight: must be a positive integer, got -2"
        in err
    )
    assert f"{config}: listeners[0].pool:" in err and "'dbb'" in err
    assert "Traceback" not in err + result.stdout


def test_a_busy_listen_address_is_refused_in_one_line(tmp_path: Path) -> None:
    """A listener that cannot bind stops startup with a one-line reason."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(tcp_config([9]).replace("tcp:0:", f"tcp:{port}:"))
        result = run_twistd(config)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert (
        f"rproxy: listener 'front' cannot listen on 'tcp:{port}:interface=127.0.0.1'"
        in output
    )
    assert "Address already in use" in output
    assert "Traceback" not in output


def test_check_command_exit_codes(tmp_path: Path) -> None:
    """rproxy check prints a summary and exits 0, or the errors and exits 1."""
    run = [sys.executable, "-m", "rproxy.cli", "check"]
    good = subprocess.run(
        [*run, str(ROOT / "examples" / "tcp.toml")],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().endswith("ok: 1 listener, 1 pool, 3 backends")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools.p]\nbackends = ['nohost']\n")
    result = subprocess.run(
        [*run, str(bad)], capture_output=True, text=True, env=python_env(), timeout=60
    )
    assert result.returncode == 1
    assert f"{bad}: pools.p.backends[0]" in result.stderr
    assert f"{bad}: listeners:" in result.stderr


def test_sigterm_stops_listening_and_lets_open_connections_finish(
    tmp_path: Path,
) -> None:
    """On SIGTERM new connections are refused while an open one still works,
    until the grace period ends."""
    backend = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "rproxy.toml"
    config.write_text(
        tcp_config(
            [backend.getsockname()[1]],
            grace=3.0,
            extra='[pools.p.health]\ncheck = "none"\n\n[access_log]\npath = "-"',
        )
    )
    with proxy(config) as running:
        port = running.ports["front"]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = backend.accept()
        running.proc.send_signal(15)
        running.wait_for("listener front stopped accepting; 1 connections open")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port))
        client.sendall(b"still here")
        assert conn.recv(100) == b"still here"
        conn.sendall(b"and answered")
        assert client.recv(100) == b"and answered"
        # After the grace period the proxy drops the connection (a reset) and
        # exits.
        with pytest.raises(ConnectionResetError):
            drain(client)
        running.proc.wait(30)
        output = running.stop()
        # twistd re-raises the signal that stopped it once it has shut down.
        assert running.proc.returncode == -15
        assert "Server Shut Down." in output
        assert '"TCP front" "shutdown"' in output
    conn.close()
    backend.close()


def test_embedding_example_balances_with_no_config(tmp_path: Path) -> None:
    """examples/embed_tcp.py runs a working load balancer."""
    backend = socket.create_server(("127.0.0.1", 0))
    listen = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "embed_tcp.py"),
            str(listen),
            str(backend.getsockname()[1]),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"listening on 127.0.0.1:{listen}"
        client = socket.create_connection(("127.0.0.1", listen))
        conn, _ = backend.accept()
        client.sendall(b"hi")
        assert conn.recv(10) == b"hi"
        conn.sendall(b"there")
        conn.close()
        assert drain(client) == b"there"
        client.close()
    finally:
        proc.kill()
        proc.wait(30)
        backend.close()


def test_quick_start_config_runs_with_demo_backends(tmp_path: Path) -> None:
    """The README's quick start: examples/tcp.toml with --demo-backends."""
    text = (ROOT / "examples" / "tcp.toml").read_text()
    ports = [free_port() for _ in range(3)]
    for default, port in zip((9001, 9002, 9003), ports, strict=True):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    text = text.replace("tcp:6000:", "tcp:0:")
    config = tmp_path / "tcp.toml"
    config.write_text(text)
    running = start_proxy(config, extra_args=["--demo-backends"])
    try:
        replies = []
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", running.ports["echo"]))
            client.sendall(b"ping\n")
            client.shutdown(socket.SHUT_WR)
            replies.append(drain(client))
            client.close()
    finally:
        running.stop()
    greeted = sorted(r.split(b" ")[2].decode() for r in replies)
    # weights 1 and 2, the backup idle: one connection to the first, two to
    # the second.
    assert greeted == sorted([f"127.0.0.1:{ports[0]}"] + [f"127.0.0.1:{ports[1]}"] * 2)
    assert all(r.endswith(b"ping\n") for r in replies)


def test_access_log_records_each_connection_through_shutdown(tmp_path: Path) -> None:
    """With [access_log], each connection is one JSON line in the file, and a
    connection cut by shutdown is recorded too."""
    backend = socket.create_server(("127.0.0.1", 0))
    log_path = tmp_path / "access.log"
    config = tmp_path / "rproxy.toml"
    config.write_text(
        tcp_config(
            [backend.getsockname()[1]],
            grace=0.5,
            extra=f'[pools.p.health]\ncheck = "none"\n\n'
            f'[access_log]\npath = "{log_path}"\nformat = "json"',
        )
    )
    with proxy(config) as running:
        port = running.ports["front"]
        first = socket.create_connection(("127.0.0.1", port))
        conn, _ = backend.accept()
        first.sendall(b"abc")
        assert conn.recv(3) == b"abc"
        conn.close()
        assert drain(first) == b""
        first.close()
        second = socket.create_connection(("127.0.0.1", port))
        second_conn, _ = backend.accept()
        running.stop()
        second.close()
        second_conn.close()
    backend.close()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["status"] for r in records] == ["closed", "shutdown"]
    assert records[0]["bytes_in"] == 3
    assert records[0]["listener"] == "front" and records[0]["pool"] == "p"


def test_http_example_runs_with_demo_backends(tmp_path: Path) -> None:
    """examples/http.toml with --demo-backends answers through both routes,
    strips the /api prefix, hides Server and adds Via."""
    import http.client

    text = (ROOT / "examples" / "http.toml").read_text()
    for default in (8001, 8002, 8011):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{free_port()}")
    text = text.replace("tcp:8080:", "tcp:0:").replace("tcp:9901:", "tcp:0:")
    config = tmp_path / "http.toml"
    config.write_text(text)
    running = start_proxy(config, extra_args=["--demo-backends"])
    try:
        conn = http.client.HTTPConnection(
            "127.0.0.1", running.ports["public"], timeout=20
        )
        conn.request("GET", "/hello")
        web = conn.getresponse()
        web_body = web.read()
        conn.request("GET", "/api/users")
        api = conn.getresponse()
        api_body = api.read()
        conn.close()
    finally:
        running.stop()
    assert web.status == 200 and b"you asked for /hello" in web_body
    assert api.status == 200 and b"you asked for /users" in api_body
    assert web.getheader("Server") is None
    assert web.getheader("Via") == "1.1 rproxy"
    log = (tmp_path / "access.log").read_text().splitlines()
    assert len(log) == 2 and '"GET /api/users HTTP/1.1" 200' in log[1]


def _exchange_through(port: int, backend: socket.socket) -> tuple[bytes, bytes]:
    """One round trip client -> proxy on C{port} -> C{backend} and back:
    (what the backend got, what the client got)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        conn, _ = backend.accept()
        with conn:
            client.sendall(b"ping")
            got = conn.recv(100)
            conn.sendall(b"pong")
            return got, client.recv(100)


def test_twistd_rproxy_runs_on_proxy_reactor(tmp_path: Path) -> None:
    """Without -r, twistd rproxy installs ProxyReactor, says so at startup,
    and proxies on it."""
    backend = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "rproxy.toml"
    config.write_text(
        tcp_config([backend.getsockname()[1]], extra='[pools.p.health]\ncheck = "none"')
    )
    running = start_proxy(config)
    try:
        exchanged = _exchange_through(running.ports["front"], backend)
    finally:
        output = running.stop()
        backend.close()
    assert "reactor class: rproxy._reactor.ProxyReactor." in output
    assert exchanged == (b"ping", b"pong")


def test_twistd_reactor_option_overrides_proxy_reactor(tmp_path: Path) -> None:
    """twistd -r poll rproxy keeps the reactor chosen with -r and proxies on
    it."""
    backend = socket.create_server(("127.0.0.1", 0))
    port = free_port()
    config = tmp_path / "rproxy.toml"
    config.write_text(
        tcp_config(
            [backend.getsockname()[1]], extra='[pools.p.health]\ncheck = "none"'
        ).replace("tcp:0:", f"tcp:{port}:")
    )
    # -r goes before the subcommand, where start_proxy cannot put it.
    args = [*TWISTD, "-r", "poll", "-n", "--pidfile=", "rproxy", "--config"]
    process = subprocess.Popen(
        [*args, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=python_env(),
        cwd=str(tmp_path),
    )
    running = RunningProxy(process)
    try:
        reactor_line = running.wait_for("reactor class:")
        running.wait_for(f"listener front on tcp:{port}:")
        exchanged = _exchange_through(port, backend)
    finally:
        running.stop()
        backend.close()
    assert "reactor class: twisted.internet.pollreactor.PollReactor." in reactor_line
    assert exchanged == (b"ping", b"pong")
