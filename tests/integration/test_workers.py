"""``workers = 2`` as real processes: twistd rproxy's supervisor and its two
workers, with HTTP backends in this process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
from pathlib import Path

import trustme

from tests.integration.helpers import RunningProxy, start_proxy
from tests.integration.workers import (
    DEADLINE,
    Backend,
    Load,
    admin_get,
    admin_post,
    backends,
    echo_backend,
    status,
    wait_until,
    worker_connections,
    worker_pids,
    worker_requests,
)


def config(
    pools: dict[str, Backend],
    *,
    interval: float = 0.5,
    weight: int = 1,
    extra_listener: bool = False,
    broken: bool = False,
    check: str = "http",
    access_log: str = "",
) -> str:
    addresses = ", ".join(
        f'{{ address = "127.0.0.1:{b.port}", name = "{name}", '
        f"weight = {weight if name == 'a' else 1} }}"
        for name, b in pools.items()
    )
    extra = (
        """
[[listeners]]
name = "extra"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
"""
        if extra_listener
        else ""
    )
    log = (
        f'[access_log]\npath = "{access_log}"\nformat = "json"\n' if access_log else ""
    )
    return f"""
workers = 2
{log}
[shutdown]
grace = 10

[pools.web]
balance = "{"weighted" if not broken else "weigthed"}"
backends = [{addresses}]
health = {{ check = "{check}", interval = {interval} }}

[[listeners]]
name = "http"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"

[admin]
listen = "tcp:0:interface=127.0.0.1"
{extra}"""


def start(path: Path) -> tuple[RunningProxy, int, int]:
    """Start the group; wait until both workers are ready.  The proxy, its
    http port and its admin port."""
    running = start_proxy(path, listeners=1)
    admin = int(
        running.wait_for("admin interface on").split("(127.0.0.1:")[1].split(")")[0]
    )
    wait_until(lambda: len(worker_pids(admin)) == 2, "both workers ready")
    return running, running.ports["http"], admin


def fresh_requests(port: int, count: int = 20) -> list[bytes]:
    """C{count} requests, each on a new connection; their bodies."""
    bodies = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK"), data
        bodies.append(data.rsplit(b"\r\n", 1)[-1])
    return bodies


def applied_in(running: RunningProxy, workers: set[int]) -> None:
    """Read the output until each of C{workers} said it applied a config."""
    left = set(workers)
    while left:
        line = running.wait_for("] config ", DEADLINE)
        for worker in list(left):
            if f"[worker {worker}] config " in line:
                assert "applied" in line, line
                left.discard(worker)


def pids_of(running: RunningProxy, admin: int) -> list[int]:
    return [running.proc.pid, *worker_pids(admin).values()]


def test_both_workers_serve_traffic_and_the_admin_sums_them(tmp_path: Path) -> None:
    """
    Requests on new connections are served by both workers (counted per
    worker in the status and the metrics), and the group's totals are their
    sum; both append whole lines to the one access log, a line a request.
    """
    path = tmp_path / "rproxy.toml"
    access = tmp_path / "access.log"
    made = 0
    with backends("a") as pools:
        path.write_text(config(pools, access_log=str(access)))
        running, port, admin = start(path)
        try:

            def both_served() -> bool:
                nonlocal made
                made += len(fresh_requests(port))
                counts = worker_requests(admin)
                return all(counts.get(i, 0) > 0 for i in (1, 2))

            wait_until(both_served, "requests served by both workers")
            now = status(admin)
            per_worker = worker_requests(admin)
            total = now["listeners"][0]["requests_total"]
            metrics = admin_get(admin, "/metrics").decode()
        finally:
            running.stop()
    lines = access.read_text().splitlines()
    assert len(lines) == made
    assert all(json.loads(line)["status"] == 200 for line in lines)
    # Reports come every second: the total is of the same reports.
    assert total == sum(per_worker.values()), (total, per_worker)
    assert (
        'rproxy_worker_listener_requests_total{code="2xx",listener="http",worker="1"}'
        in metrics
    )
    assert (
        'rproxy_worker_listener_requests_total{code="2xx",listener="http",worker="2"}'
        in metrics
    )


def test_health_checks_run_once_in_the_supervisor(tmp_path: Path) -> None:
    """
    With two workers, every health probe a backend sees comes from the
    supervisor, at most one per interval.
    """
    path = tmp_path / "rproxy.toml"
    with backends("a") as pools:
        path.write_text(config(pools, interval=0.2))
        running, _, admin = start(path)
        backend = pools["a"]
        backend.pids = pids_of(running, admin)
        try:
            wait_until(lambda: len(backend.probes) >= 10, "ten probes")
            with backend.lock:
                probes = list(backend.probes)
        finally:
            running.stop()
    owners = {owner for _, owner in probes}
    assert owners == {running.proc.pid}, (owners, backend.pids)
    span = probes[-1][0] - probes[0][0]
    # N workers probing would make N per interval.
    assert len(probes) - 1 <= span / 0.2 + 1, (len(probes), span)


def test_a_killed_worker_comes_back_and_the_other_loses_nothing(
    tmp_path: Path,
) -> None:
    """
    Under load from six keep-alive clients, SIGKILL one worker: requests on
    the other worker's connections never fail, only the killed worker's
    connections see (one) failure each; it is started again and serves, and
    the group's request count does not go back.
    """
    path = tmp_path / "rproxy.toml"
    with backends("a", "b") as pools:
        path.write_text(config(pools))
        running, port, admin = start(path)
        pids = worker_pids(admin)
        victim, survivor = pids[1], pids[2]
        load = Load(port, lambda: [victim, survivor])
        try:
            load.start(6)
            load.wait_for_more(300)
            before = status(admin)["listeners"][0]["requests_total"]
            os.kill(victim, signal.SIGKILL)
            line = running.wait_for("worker 1 (pid", DEADLINE)
            assert "exited" in line and "starting it again" in line, line
            running.wait_for("worker 1 ready", DEADLINE)
            load.wait_for_more(300)
            restarted = worker_pids(admin)[1]
            load.pids = lambda: [victim, survivor, restarted]
            # New connections reach the new worker too.
            wait_until(
                lambda: fresh_requests(port) and worker_requests(admin).get(1, 0) > 0,
                "requests on the restarted worker",
            )
            after = status(admin)["listeners"][0]["requests_total"]
        finally:
            load.finish()
            running.stop()
    assert restarted != victim
    # The killed worker's requests stay counted in the group's total.
    assert after > before, (before, after)
    assert load.served_by[survivor] > 0, load.served_by
    assert [f for f in load.failures if f[0] != victim] == [], load.failures
    victims = sum(1 for owner, _ in load.failures if owner == victim)
    assert victims <= 6, load.failures


def test_reloads_under_load_lose_nothing_in_any_worker(tmp_path: Path) -> None:
    """
    Fifty SIGHUP reloads while keep-alive clients run (weights change, a
    listener is added then removed, once a broken file that changes nothing
    anywhere): no request fails, no connection is reset, and the added
    listener is served by the workers.
    """
    path = tmp_path / "rproxy.toml"
    rounds = 50
    with backends("a", "b") as pools:
        path.write_text(config(pools))
        running, port, _ = start(path)
        load = Load(port, lambda: [])
        extra_answers: list[bytes] = []
        try:
            load.start(4)
            load.wait_for_more(40)
            for round in range(1, rounds + 1):
                broken = round == 20
                extra = 10 <= round < 30
                path.write_text(
                    config(
                        pools, weight=1 + round % 3, extra_listener=extra, broken=broken
                    )
                )
                running.proc.send_signal(signal.SIGHUP)
                line = running.wait_for("reloaded", DEADLINE)
                if broken:
                    assert "not reloaded" in line and "balance" in line, line
                else:
                    assert "not reloaded" not in line, line
                    applied_in(running, {1, 2})
                if round == 10:
                    bound = [
                        seen
                        for seen in running.output
                        if "rproxy.service#info] listener extra on" in seen
                    ]
                    extra_port = int(bound[0].split("(127.0.0.1:")[1].split(")")[0])
                if extra and not broken:
                    extra_answers += fresh_requests(extra_port, 2)
                load.wait_for_more(40)
        finally:
            load.finish()
            output = running.stop()
    assert load.failures == [], load.failures[:10]
    assert output.count("not reloaded") == 1, output[-3000:]
    assert output.count(f"config {path} reloaded") == rounds - 1
    assert "did not apply" not in output
    assert set(extra_answers) <= {b"a", b"b"} and extra_answers, extra_answers
    assert load.done >= (rounds + 1) * 40


def test_drain_through_the_admin_applies_to_every_worker(tmp_path: Path) -> None:
    """
    Draining backend b through the admin interface takes it out of every
    worker: the status shows it disabled in both, and requests landing on
    both workers all go to a.
    """
    path = tmp_path / "rproxy.toml"
    with backends("a", "b") as pools:
        path.write_text(config(pools))
        running, port, admin = start(path)
        try:
            admin_post(admin, "/pools/web/backends/b/drain")

            def drained_everywhere() -> bool:
                states = [
                    b["state"]
                    for w in status(admin)["workers"]
                    for p in w.get("pools", ())
                    for b in p["backends"]
                    if b["name"] == "b"
                ]
                return states == ["disabled", "disabled"]

            wait_until(drained_everywhere, "b disabled in both workers")
            before = worker_requests(admin)
            bodies = fresh_requests(port, 100)
            wait_until(
                lambda: all(worker_requests(admin)[i] > before[i] for i in (1, 2)),
                "requests counted on both workers",
            )
        finally:
            running.stop()
    assert set(bodies) == {b"a"}, bodies


def test_sigterm_lets_every_worker_finish_its_requests(tmp_path: Path) -> None:
    """
    SIGTERM to the supervisor: the workers stop accepting, a request under
    way is still answered, and the whole group exits 0.
    """
    path = tmp_path / "rproxy.toml"
    with backends("a") as pools:
        path.write_text(config(pools))
        running, port, admin = start(path)
        answer: list[bytes] = []

        def slow() -> None:
            with socket.create_connection(("127.0.0.1", port), 30) as s:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                answer.append(data)

        client = threading.Thread(target=slow, daemon=True)
        client.start()
        assert pools["a"].slow_arrived.wait(DEADLINE)
        pids = list(worker_pids(admin).values())
        running.proc.send_signal(signal.SIGTERM)
        stopped = {1, 2}
        while stopped:
            line = running.wait_for("stopped accepting; ", DEADLINE)
            stopped -= {i for i in stopped if f"[worker {i}]" in line}
        assert "1 connections open" in "".join(running.output)
        pools["a"].release.set()
        client.join(DEADLINE)
        running.proc.wait(DEADLINE)
        output = running.stop()
    # twistd ends by the signal it was stopped with, after a clean shutdown.
    assert running.proc.returncode == -signal.SIGTERM, output[-2000:]
    assert "Server Shut Down." in output
    assert "killed" not in output
    assert answer and answer[0].startswith(b"HTTP/1.1 200 OK"), answer
    assert answer[0].endswith(b"a")
    for pid in pids:
        assert f"(pid {pid}) stopped" in output


def https_get(port: int, context: ssl.SSLContext) -> bytes:
    """One GET over TLS to web.example.com on a new connection; its body."""
    with (
        socket.create_connection(("127.0.0.1", port), 10) as raw,
        context.wrap_socket(raw, server_hostname="web.example.com") as s,
    ):
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK"), data
    return data.rsplit(b"\r\n", 1)[-1]


def test_tls_listeners_are_terminated_in_each_worker(tmp_path: Path) -> None:
    """
    A [listeners.tls] listener with two workers: each worker wraps the
    socket it adopted in TLS, so HTTPS requests on new connections are
    answered by both, with the configured certificate.
    """
    ca = trustme.CA()
    leaf = ca.issue_cert("web.example.com")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    path = tmp_path / "rproxy.toml"
    with backends("a") as pools:
        text = config(pools).replace(
            'pool = "web"\n',
            f'pool = "web"\n[listeners.tls]\ncertificates = [{{ cert = "{cert}", '
            f'key = "{key}" }}]\n',
            1,
        )
        path.write_text(text)
        running, port, admin = start(path)
        bodies: list[bytes] = []
        try:

            def both_served() -> bool:
                for _ in range(10):
                    bodies.append(https_get(port, context))
                counts = worker_requests(admin)
                return all(counts.get(i, 0) > 0 for i in (1, 2))

            wait_until(both_served, "HTTPS requests served by both workers")
        finally:
            running.stop()
    assert set(bodies) == {b"a"}


def test_tcp_and_unix_listeners_are_served_by_both_workers(tmp_path: Path) -> None:
    """A TCP passthrough listener: connections land on both workers and each
    gets its bytes echoed whole; an HTTP listener on a UNIX socket answers
    through both too."""
    path = tmp_path / "rproxy.toml"
    unix_path = tmp_path / "rproxy.sock"
    with backends("a") as pools, echo_backend() as echo:
        path.write_text(
            config(pools)
            + f"""
[pools.echo]
backends = ["127.0.0.1:{echo}"]
health = {{ check = "none" }}

[[listeners]]
name = "tcp"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "echo"

[[listeners]]
name = "local"
protocol = "http"
listen = "unix:{unix_path}"
pool = "web"
"""
        )
        running = start_proxy(path, listeners=2)
        admin = int(
            running.wait_for("admin interface on").split("(127.0.0.1:")[1].split(")")[0]
        )
        echoed: list[bool] = []
        unix_bodies: list[bytes] = []
        try:
            wait_until(lambda: len(worker_pids(admin)) == 2, "both workers ready")

            def both_served() -> bool:
                for n in range(10):
                    payload = f"connection {n}\n".encode() * 100
                    with socket.create_connection(
                        ("127.0.0.1", running.ports["tcp"]), 10
                    ) as s:
                        s.sendall(payload)
                        s.shutdown(socket.SHUT_WR)
                        data = b""
                        while chunk := s.recv(65536):
                            data += chunk
                    echoed.append(data == payload)
                counts = worker_connections(admin, "tcp")
                return all(counts.get(i, 0) > 0 for i in (1, 2))

            wait_until(both_served, "TCP connections on both workers")

            def unix_served() -> bool:
                for _ in range(10):
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(unix_path))
                        s.sendall(
                            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        )
                        data = b""
                        while chunk := s.recv(4096):
                            data += chunk
                    unix_bodies.append(data.rsplit(b"\r\n", 1)[-1])
                counts = worker_connections(admin, "local")
                return all(counts.get(i, 0) > 0 for i in (1, 2))

            wait_until(unix_served, "UNIX socket connections on both workers")
        finally:
            running.stop()
    assert echoed and all(echoed)
    assert set(unix_bodies) == {b"a"}


def test_a_cache_purge_through_the_admin_reaches_every_worker(
    tmp_path: Path,
) -> None:
    """
    Each worker caches a response on its own; a purge through the admin
    interface drops it in every one and answers how many it dropped, and the
    next requests fetch it again.
    """
    path = tmp_path / "rproxy.toml"
    with backends("a") as pools:
        text = config(pools).replace(
            'pool = "web"\n',
            'pool = "web"\n[[listeners.routes]]\npath_prefix = "/"\npool = "web"\n'
            'cache = "pages"\n',
            1,
        )
        path.write_text(text + '\n[caches.pages]\nmemory = "1MiB"\n')
        running, port, admin = start(path)
        backend = pools["a"]
        try:

            def get_cached() -> None:
                with socket.create_connection(("127.0.0.1", port), 10) as s:
                    s.sendall(
                        b"GET /cached HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    while s.recv(4096):
                        pass

            def cached_by_both() -> bool:
                for _ in range(10):
                    get_cached()
                return backend.cached_fetches == 2

            wait_until(cached_by_both, "/cached stored in both workers")
            answer = admin_post(admin, "/caches/pages/purge?url=http://x/cached")
            get_cached()
        finally:
            running.stop()
    assert answer == {"cache": "pages", "purged": 2}
    assert backend.cached_fetches >= 3
