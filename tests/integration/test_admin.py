"""The admin interface over real sockets on 127.0.0.1: a ProxyService built
from a TOML config in this process, twisted.web backends in process, clients
(the stdlib's http.client, and headless Chromium for the page) in threads."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rproxy.backends import BackendState
from rproxy.config import parse_config
from rproxy.service import ProxyService

CHROMIUM = "/usr/bin/chromium"
TOKEN = "integration-t0ken"


class Named(Resource):
    """A backend that says its name; /missing is a 404, /slow waits until
    the test lets it answer."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.held: list[Request] = []
        self.waiting: list[Deferred[None]] = []

    def render_GET(self, request: Request) -> bytes | int:
        if request.path.endswith(b"/missing"):
            request.setResponseCode(404)
            return b"no"
        if request.path.endswith(b"/slow"):
            self.held.append(request)
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(None)
            return NOT_DONE_YET
        return self.name.encode()

    def arrived(self) -> Deferred[None]:
        """Fires when the next /slow request arrives."""
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d


def get(port: int, path: str, count: int = 1) -> list[tuple[int, bytes]]:
    """C{count} GETs of C{path} on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        results = []
        for _ in range(count):
            conn.request("GET", path)
            response = conn.getresponse()
            results.append((response.status, response.read()))
        return results
    finally:
        conn.close()


def call(
    port: int, method: str, path: str, token: str | None = TOKEN
) -> tuple[int, bytes, dict[str, str]]:
    """One request to the admin interface."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def raw(port: int, data: bytes) -> bytes:
    """Send C{data} and read until the peer closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class AdminIntegrationTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.dir = Path(directory.name)
        (self.dir / "admin.token").write_text(TOKEN + "\n")
        self.backends = {}
        ports = {}
        for name in ("b0", "b1", "s0"):
            resource = Named(name)
            site = Site(resource)
            site.noisy = False
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.backends[name] = resource
            ports[name] = port.getHost().port
        text = f"""
[pools.web]
backends = [
  {{ address = "127.0.0.1:{ports["b0"]}", name = "b0" }},
  {{ address = "127.0.0.1:{ports["b1"]}", name = "b1" }},
]
[pools.web.health]
check = "none"

[pools.solo]
backends = [{{ address = "127.0.0.1:{ports["s0"]}", name = "s0" }}]
[pools.solo.health]
check = "none"

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
[[listeners.routes]]
path_prefix = "/solo/"
pool = "solo"

[admin]
listen = "tcp:0:interface=127.0.0.1"
token_file = "admin.token"
"""
        path = self.dir / "rproxy.toml"
        path.write_text(text)
        config = parse_config(tomllib.loads(text), str(path))
        self.service = ProxyService(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        listener = self.service.listeners["front"]
        assert listener.port is not None
        self.front = listener.port.getHost().port
        assert self.service.admin is not None and self.service.admin.port is not None
        self.admin = self.service.admin.port.getHost().port
        self.web = self.service.registry.get("web")

    def status(self) -> Deferred[Any]:
        d = deferToThread(call, self.admin, "GET", "/status.json", None)
        return d.addCallback(lambda answer: json.loads(answer[1]))

    @inlineCallbacks
    def control(self, path: str, expect: int = 200) -> Any:
        status, body, _ = yield deferToThread(call, self.admin, "POST", path)
        self.assertEqual(status, expect, body)
        return json.loads(body)

    @inlineCallbacks
    def test_json_and_metrics_count_known_traffic_exactly(self) -> Any:
        """
        Three 200s and a backend 404 on one connection, and a malformed
        request on another: the JSON status and the metrics say exactly so.
        """
        results = yield deferToThread(get, self.front, "/solo/ok", 3)
        self.assertEqual(results, [(200, b"s0")] * 3)
        [(status, _)] = yield deferToThread(get, self.front, "/solo/missing")
        self.assertEqual(status, 404)
        answer = yield deferToThread(raw, self.front, b"GET /\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "))

        state = yield self.status()
        [front] = state["listeners"]
        self.assertEqual(front["connections_total"], 3)
        self.assertEqual(
            front["requests"],
            {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 2, "5xx": 0, "none": 0},
        )
        self.assertEqual((front["bytes_in"], front["bytes_out"]), (0, 8))
        solo = next(p for p in state["pools"] if p["name"] == "solo")
        [s0] = solo["backends"]
        self.assertEqual(
            s0["responses"],
            {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 0, "none": 0},
        )
        self.assertEqual(
            (s0["connections_total"], s0["active"], s0["requests_total"]), (4, 0, 4)
        )
        self.assertEqual((s0["bytes_in"], s0["bytes_out"], s0["state"]), (0, 8, "up"))
        web = next(p for p in state["pools"] if p["name"] == "web")
        self.assertEqual([b["requests_total"] for b in web["backends"]], [0, 0])

        _, body, headers = yield deferToThread(call, self.admin, "GET", "/metrics")
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        s0_labels = {"pool": "solo", "backend": "s0"}
        self.assertEqual(
            {
                code: value("rproxy_backend_requests_total", code=code, **s0_labels)
                for code in ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
            },
            {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 0, "none": 0},
        )
        self.assertEqual(
            value("rproxy_backend_upstream_latency_seconds_count", **s0_labels), 4
        )
        self.assertEqual(value("rproxy_backend_connections_total", **s0_labels), 4)
        self.assertEqual(value("rproxy_backend_received_bytes_total", **s0_labels), 8)
        self.assertEqual(
            value("rproxy_listener_requests_total", code="2xx", listener="front"), 3
        )
        self.assertEqual(
            value("rproxy_listener_requests_total", code="4xx", listener="front"), 2
        )
        self.assertEqual(
            value("rproxy_listener_connections_total", listener="front"), 3
        )
        self.assertEqual(value("rproxy_listener_sent_bytes_total", listener="front"), 8)

    @inlineCallbacks
    def test_tls_handshake_on_the_admin_port_is_refused_at_once(self) -> Any:
        """
        A TLS ClientHello sent to the plain HTTP admin gets a 400 and the
        close, not a connection held until a timeout.
        """
        hello = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + b"\x00" * 32
        answer = yield deferToThread(raw, self.admin, hello)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        state = yield self.status()
        self.assertEqual(len(state["listeners"]), 1)

    @inlineCallbacks
    def test_disable_enable_and_drain_change_routing(self) -> Any:
        """
        Disabled, a backend gets no requests; enabled, it is back in turn;
        drained with a request in flight, it gets no new ones, finishes that
        one and is then disabled.
        """
        answer = yield self.control("/pools/web/backends/b1/disable")
        self.assertEqual(answer["state"], "disabled")
        results = yield deferToThread(get, self.front, "/", 4)
        self.assertEqual(results, [(200, b"b0")] * 4)

        yield self.control("/pools/web/backends/b1/enable")
        results = yield deferToThread(get, self.front, "/", 4)
        self.assertEqual(
            sorted(body for _, body in results), [b"b0", b"b0", b"b1", b"b1"]
        )

        # A request held by b0 (b1 disabled so that b0 takes it).
        yield self.control("/pools/web/backends/b1/disable")
        arrived = self.backends["b0"].arrived()
        slow = deferToThread(get, self.front, "/slow")
        yield arrived
        yield self.control("/pools/web/backends/b1/enable")
        answer = yield self.control("/pools/web/backends/b0/drain")
        self.assertEqual((answer["state"], answer["active"]), ("draining", 1))
        results = yield deferToThread(get, self.front, "/", 3)
        self.assertEqual(results, [(200, b"b1")] * 3)
        state = yield self.status()
        web = next(p for p in state["pools"] if p["name"] == "web")
        self.assertEqual(
            [(b["name"], b["state"]) for b in web["backends"]],
            [("b0", "draining"), ("b1", "up")],
        )
        [held] = self.backends["b0"].held
        held.write(b"slow b0")
        held.finish()
        results = yield slow
        self.assertEqual(results, [(200, b"slow b0")])
        b0 = self.web.get("b0")
        self.assertIs(b0.state, BackendState.DISABLED)
        state = yield self.status()
        web = next(p for p in state["pools"] if p["name"] == "web")
        self.assertEqual(
            (web["backends"][0]["state"], web["backends"][0]["reason"]),
            ("disabled", "drained"),
        )
        results = yield deferToThread(get, self.front, "/", 2)
        self.assertEqual(results, [(200, b"b1")] * 2)

    @inlineCallbacks
    def test_controls_need_the_token(self) -> Any:
        """Without the right token: 401 and no change; reading needs none."""
        for token in (None, "wrong"):
            status, _, headers = yield deferToThread(
                call, self.admin, "POST", "/pools/web/backends/b0/disable", token
            )
            self.assertEqual(status, 401)
            self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="rproxy admin"')
        self.assertIs(self.web.get("b0").state, BackendState.UP)
        status, _, _ = yield deferToThread(call, self.admin, "POST", "/reload", None)
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_reload_applies_the_file_or_answers_its_errors(self) -> Any:
        """
        POST /reload applies the file as it is now; a broken file gets a 422
        with the errors, and the running config stays.
        """
        path = self.dir / "rproxy.toml"
        text = path.read_text()
        path.write_text(
            text.replace(
                "[admin]", '[pools.extra]\nbackends = ["127.0.0.1:1"]\n\n[admin]'
            )
        )
        status, body, _ = yield deferToThread(call, self.admin, "POST", "/reload")
        self.assertEqual((status, json.loads(body)), (200, {"reloaded": True}))
        self.assertIn("extra", self.service.registry)
        path.write_text(text.replace('pool = "solo"', 'pool = "nowhere"'))
        status, body, _ = yield deferToThread(call, self.admin, "POST", "/reload")
        self.assertEqual(status, 422)
        errors = json.loads(body)["errors"]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(f"{path}: listeners[0].routes", errors[0])
        self.assertIn("extra", self.service.registry)

    @inlineCallbacks
    def test_status_page_renders_in_headless_chromium(self) -> Any:
        """
        Chromium, without JavaScript in play, loads the page and its DOM
        has a row for each backend with its state.
        """
        if not os.path.exists(CHROMIUM):
            raise SkipTest(f"{CHROMIUM} is not installed")
        yield self.control("/pools/web/backends/b1/disable")
        profile = tempfile.TemporaryDirectory()
        self.addCleanup(profile.cleanup)
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile.name}",
            "--dump-dom",
            f"http://127.0.0.1:{self.admin}/",
        ]
        done = yield deferToThread(
            subprocess.run, command, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        dom = done.stdout
        self.assertIn("<title>rproxy status</title>", dom)
        self.assertIn('<tr class="up"><td class="text">b0</td>', dom)
        self.assertIn('<tr class="disabled"><td class="text">b1</td>', dom)
        self.assertIn('<td class="text">s0</td>', dom)
