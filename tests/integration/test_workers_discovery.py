"""Discovery with ``workers = 2``: the supervisor asks a real DNS server on
127.0.0.1 (twisted.names, in this process) and its answers reach both
workers, which route to what DNS says."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.integration.dns import DNSServer, a, srv
from tests.integration.helpers import RunningProxy, start_proxy
from tests.integration.workers import status, wait_until, worker_pids


class Named(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        return self.name.encode()


def fresh(port: int, count: int) -> list[bytes]:
    """Bodies of C{count} GETs, each on a new connection."""
    bodies = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        bodies.append(data.rsplit(b"\r\n", 1)[-1])
    return bodies


def members_in_workers(admin: int) -> list[list[tuple[str, str]]]:
    """Each worker's members of pool api, with their states."""
    return [
        [(b["name"], b["state"]) for p in w.get("pools", ()) for b in p["backends"]]
        for w in status(admin)["workers"]
    ]


class WorkersFollowDNS(TestCase):
    @inlineCallbacks
    def test_a_dns_change_in_the_supervisor_reaches_every_worker(self) -> Any:
        """
        The SRV target found by the supervisor serves through both workers;
        after the record changes, both workers drop it for the new target.
        """
        server = DNSServer()
        self.addCleanup(server.stop)
        ports = {}
        for name in ("one", "two"):
            port = reactor.listenTCP(  # type: ignore[attr-defined]
                0, Site(Named(name)), interface="127.0.0.1"
            )
            self.addCleanup(port.stopListening)
            ports[name] = port.getHost().port
        zone = server.zone
        service = "_http._tcp.api.test"
        zone.set("one.test", dns.A, [a("one.test", "127.0.0.1")])
        zone.set("two.test", dns.A, [a("two.test", "127.0.0.1")])
        zone.set(service, dns.SRV, [srv(service, 0, 1, ports["one"], "one.test")])
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        path = directory / "rproxy.toml"
        path.write_text(
            f"""
workers = 2

[pools.api]
discover = "srv:{service}"
resolver = "127.0.0.1:{server.port}"
discover_min_ttl = 0.05
[pools.api.health]
check = "http"
interval = 0.05
rise = 1

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "api"

[admin]
listen = "tcp:0:interface=127.0.0.1"
"""
        )
        running: RunningProxy = yield deferToThread(start_proxy, path, 1)
        self.addCleanup(deferToThread, running.stop)
        line = yield deferToThread(running.wait_for, "admin interface on")
        admin = int(line.split("(127.0.0.1:")[1].split(")")[0])
        front = running.ports["front"]

        def serving(name: str, port: int) -> bool:
            members = members_in_workers(admin)
            want = [(f"127.0.0.1:{port}", "up")]
            if len(worker_pids(admin)) < 2 or members != [want, want]:
                return False
            return set(fresh(front, 10)) == {name.encode()}

        yield deferToThread(
            wait_until, lambda: serving("one", ports["one"]), "one in both workers"
        )
        zone.set(service, dns.SRV, [srv(service, 0, 1, ports["two"], "two.test")])
        yield deferToThread(
            wait_until, lambda: serving("two", ports["two"]), "two in both workers"
        )
        bodies = yield deferToThread(fresh, front, 40)
        assert set(bodies) == {b"two"}, bodies
