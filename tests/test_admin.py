"""The admin interface driven in memory: its Site fed raw HTTP requests over
a StringTransport, on a MemoryReactorClock, over a registry and listeners
whose counters the tests set."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rproxy.admin import AdminService
from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.config import parse_config
from rproxy.config._admin import AdminConfig
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.policy import PoolPolicy
from rproxy.service import ProxyService
from rproxy.service._listeners import ListenerService
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes

PEER = IPv4Address("TCP", "127.0.0.1", 50000)


class Response:
    """A parsed HTTP/1.1 response."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return json.loads(self.body)


class _AdminCase(SynchronousTestCase):
    token: str | None = None

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000.0)
        self.b0 = Backend("10.0.0.1", 80, name="b0", weight=2)
        self.b1 = Backend("10.0.0.2", 80, name="b1")
        self.pool = Pool("web", [self.b0, self.b1], now=self.reactor.seconds)
        self.registry = Registry([self.pool])
        self.http = HTTPProxyFactory(
            self.registry,
            self.reactor,
            HTTPSettings(listener="front", router=Router([Route(pool="web")])),
        )
        self.tcp = TCPProxyFactory(self.pool, self.reactor, listener="raw")
        self.listeners = {
            "front": ListenerService("front", "tcp:8080", self.http, self.reactor, 1.0),
            "raw": ListenerService("raw", "tcp:9000", self.tcp, self.reactor, 1.0),
        }
        self.reloads: list[str] = []
        self.reload_answer: list[str] = []
        self.admin = AdminService(
            AdminConfig("tcp:9901:interface=127.0.0.1", None, self.token),
            self.registry,
            self.listeners,
            self.reactor,
            self.reload,
        )

    def reload(self) -> list[str]:
        self.reloads.append("called")
        return self.reload_answer

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request to the admin Site and parse its answer."""
        channel, transport = self.connect()
        channel.dataReceived(raw_request(method, path, headers, body, close=True))
        response = Response(transport.value())
        channel.connectionLost(Failure(ConnectionDone()))
        return response

    def connect(self) -> tuple[IProtocol, StringTransport]:
        """A connection to the admin Site from PEER."""
        channel = self.admin.site.buildProtocol(PEER)
        assert channel is not None
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        return channel, transport


def raw_request(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    close: bool = False,
) -> bytes:
    """
    One HTTP/1.1 request as curl sends it to the admin (Host 127.0.0.1:9901)
    unless C{headers} say otherwise.
    """
    fields = {"Host": "127.0.0.1:9901"}
    if close:
        fields["Connection"] = "close"
    fields.update(headers or {})
    if body:
        fields["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in fields.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ReadTests(_AdminCase):
    def traffic(self) -> None:
        """Counters as known traffic would leave them."""
        self.b0.connections_total = 7
        self.b0.active = 1
        self.b0.responses[:] = [0, 5, 0, 1, 0, 0]
        self.b0.latency.observe(0.02)
        self.b0.latency.observe(0.2)
        self.b0.bytes_in, self.b0.bytes_out = 30, 400
        self.b1.failures_total = 2
        self.b1.responses[5] = 1
        stats = self.http.stats
        stats.requests[:] = [0, 5, 0, 1, 0, 1]
        stats.connections_closed = 3
        stats.bytes_in, stats.bytes_out = 30, 400
        stats.request_body_timeouts, stats.request_body_too_slow = 2, 9
        stats.refused["per_ip"], stats.refused["route_denied"] = 4, 6
        self.tcp.stats.connection_ended(11, 22)

    def test_status_json_shows_every_listener_pool_and_backend(self) -> None:
        """/status.json holds the counters, state and health as they are."""
        self.traffic()
        self.pool.record_check(self.b0, True, "ok")
        self.b0.last_check_duration = 0.004
        self.reactor.advance(3.0)
        response = self.request("GET", "/status.json")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], "application/json")
        status = response.json()
        self.assertEqual(status["time"], 1003.0)
        front, raw = status["listeners"]
        self.assertEqual(
            front,
            {
                "name": "front",
                "listen": "tcp:8080",
                "address": None,
                "protocol": "http",
                "tls": False,
                "pool": "web",
                "pools": ["web"],
                "active": 0,
                "connections_total": 3,
                "connections_per_second": None,
                "requests_total": 7,
                "requests_per_second": None,
                "requests": {
                    "1xx": 0,
                    "2xx": 5,
                    "3xx": 0,
                    "4xx": 1,
                    "5xx": 0,
                    "none": 1,
                },
                "bytes_in": 30,
                "bytes_out": 400,
                "request_body_timeouts": 2,
                "request_body_too_slow": 9,
                "refused_full": 0,
                "refused_per_ip": 4,
                "refused_rate": 0,
                "refused_denied": 0,
                "refused_route_denied": 6,
                "refused_fds": 0,
            },
        )
        self.assertEqual(
            (raw["protocol"], raw["pool"], raw["connections_total"]), ("tcp", "web", 1)
        )
        self.assertEqual(
            (raw["request_body_timeouts"], raw["request_body_too_slow"]), (0, 0)
        )
        self.assertEqual((raw["bytes_in"], raw["bytes_out"]), (11, 22))
        [pool] = status["pools"]
        self.assertEqual(pool["name"], "web")
        b0, b1 = pool["backends"]
        self.assertEqual(
            b0,
            {
                "name": "b0",
                "address": "10.0.0.1:80",
                "state": "up",
                "admin": "enabled",
                "healthy": True,
                "weight": 2,
                "backup": False,
                "max_connections": None,
                "active": 1,
                "connections_total": 7,
                "connections_per_second": None,
                "requests_total": 6,
                "requests_per_second": None,
                "responses": {
                    "1xx": 0,
                    "2xx": 5,
                    "3xx": 0,
                    "4xx": 1,
                    "5xx": 0,
                    "none": 0,
                },
                "failures_total": 0,
                "bytes_in": 30,
                "bytes_out": 400,
                "state_since": 1000.0,
                "state_age": 3.0,
                "reason": "initial state",
                "last_check": {"ok": True, "at": 1000.0, "age": 3.0, "duration": 0.004},
                "ejected": False,
                "ejected_until": None,
                "ejections_total": 0,
                "effective_weight": 2,
            },
        )
        self.assertEqual((b1["failures_total"], b1["last_check"]), (2, None))

    def test_rates_come_from_samples_over_the_clock(self) -> None:
        """
        Once started, the admin samples every 5 s; rates are the growth
        between the last two samples per second.
        """
        self.admin.startService()
        self.addCleanup(self.admin.stopService)
        self.b0.connections_total += 10
        self.b0.responses[1] += 20
        self.http.stats.requests[1] += 50
        self.reactor.advance(5.0)
        status = self.request("GET", "/status.json").json()
        front = status["listeners"][0]
        b0 = status["pools"][0]["backends"][0]
        self.assertEqual(
            (front["requests_per_second"], front["connections_per_second"]),
            (10.0, 0.0),
        )
        self.assertEqual(
            (b0["requests_per_second"], b0["connections_per_second"]), (4.0, 2.0)
        )
        self.reactor.advance(5.0)
        b0 = self.request("GET", "/status.json").json()["pools"][0]["backends"][0]
        self.assertEqual(b0["requests_per_second"], 0.0)

    def test_pools_and_listeners_are_looked_up_at_each_request(self) -> None:
        """A pool or listener added after start shows (as a reload adds them)."""
        self.registry.add(Pool("api", [Backend("10.0.0.9", 81)]))
        self.listeners["late"] = ListenerService(
            "late", "tcp:81", self.tcp, self.reactor, 1.0
        )
        status = self.request("GET", "/status.json").json()
        self.assertEqual([p["name"] for p in status["pools"]], ["web", "api"])
        self.assertEqual(
            [listener["name"] for listener in status["listeners"]],
            ["front", "raw", "late"],
        )
        metrics = self.request("GET", "/metrics").body.decode()
        self.assertIn(
            'rproxy_backend_weight{backend="10.0.0.9:81",pool="api"} 1.0', metrics
        )

    def test_metrics_hold_the_counters(self) -> None:
        """/metrics: Prometheus text with every counter's value."""
        self.traffic()
        self.pool.record_check(self.b0, True, "ok")
        self.b0.last_check_duration = 0.004
        self.pool.set_admin(self.b1, AdminState.DISABLED, "test")
        response = self.request("GET", "/metrics")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/plain"))
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.body.decode())
            for s in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        b0 = {"pool": "web", "backend": "b0"}
        b1 = {"pool": "web", "backend": "b1"}
        self.assertEqual(value("rproxy_backend_requests_total", code="2xx", **b0), 5)
        self.assertEqual(value("rproxy_backend_requests_total", code="4xx", **b0), 1)
        self.assertEqual(value("rproxy_backend_requests_total", code="none", **b1), 1)
        self.assertEqual(value("rproxy_backend_connections_total", **b0), 7)
        self.assertEqual(value("rproxy_backend_connections_active", **b0), 1)
        self.assertEqual(value("rproxy_backend_failures_total", **b1), 2)
        self.assertEqual(value("rproxy_backend_sent_bytes_total", **b0), 30)
        self.assertEqual(value("rproxy_backend_received_bytes_total", **b0), 400)
        self.assertEqual(value("rproxy_backend_weight", **b0), 2)
        self.assertEqual(value("rproxy_backend_state", state="up", **b0), 1)
        self.assertEqual(value("rproxy_backend_state", state="disabled", **b0), 0)
        self.assertEqual(value("rproxy_backend_state", state="disabled", **b1), 1)
        self.assertEqual(value("rproxy_backend_healthy", **b1), 1)
        self.assertEqual(value("rproxy_backend_health_check_success", **b0), 1)
        self.assertEqual(
            value("rproxy_backend_health_check_duration_seconds", **b0), 0.004
        )
        self.assertEqual(
            value("rproxy_backend_health_check_timestamp_seconds", **b0), 1000.0
        )
        self.assertNotIn(
            ("rproxy_backend_health_check_success", tuple(sorted(b1.items()))),
            samples,
        )
        self.assertEqual(
            value("rproxy_backend_upstream_latency_seconds_bucket", le="0.01", **b0), 0
        )
        self.assertEqual(
            value("rproxy_backend_upstream_latency_seconds_bucket", le="0.025", **b0),
            1,
        )
        self.assertEqual(
            value("rproxy_backend_upstream_latency_seconds_bucket", le="+Inf", **b0), 2
        )
        self.assertEqual(
            value("rproxy_backend_upstream_latency_seconds_count", **b0), 2
        )
        self.assertAlmostEqual(
            value("rproxy_backend_upstream_latency_seconds_sum", **b0), 0.22
        )
        self.assertEqual(value("rproxy_pool_backends", pool="web", state="up"), 1)
        self.assertEqual(value("rproxy_pool_backends", pool="web", state="disabled"), 1)
        self.assertEqual(value("rproxy_pool_backends", pool="web", state="down"), 0)
        front = {"listener": "front"}
        self.assertEqual(
            value("rproxy_listener_requests_total", code="2xx", **front), 5
        )
        self.assertEqual(
            value("rproxy_listener_requests_total", code="none", **front), 1
        )
        self.assertEqual(value("rproxy_listener_connections_total", **front), 3)
        self.assertEqual(value("rproxy_listener_connections_active", **front), 0)
        self.assertEqual(value("rproxy_listener_received_bytes_total", **front), 30)
        self.assertEqual(value("rproxy_listener_sent_bytes_total", **front), 400)
        self.assertEqual(
            value(
                "rproxy_listener_request_body_timeouts_total", reason="idle", **front
            ),
            2,
        )
        self.assertEqual(
            value(
                "rproxy_listener_request_body_timeouts_total", reason="slow", **front
            ),
            9,
        )
        self.assertEqual(
            value("rproxy_listener_info", protocol="tcp", listener="raw"), 1
        )
        self.assertEqual(
            value("rproxy_listener_received_bytes_total", listener="raw"), 11
        )
        refused = {
            reason: value("rproxy_listener_refused_total", reason=reason, **front)
            for reason in ("full", "per_ip", "rate", "denied", "route_denied", "fds")
        }
        self.assertEqual(
            refused,
            {
                "full": 0,
                "per_ip": 4,
                "rate": 0,
                "denied": 0,
                "route_denied": 6,
                "fds": 0,
            },
        )

    def test_request_bodies_cut_by_a_listener_are_counted(self) -> None:
        """
        An upload that stalls and one that trickles under the minimum rate,
        both answered 408 by an HTTP listener, show in /status.json and
        /metrics by reason.
        """
        pool = Pool(
            "uploads",
            [Backend("10.0.0.3", 80)],
            policy=PoolPolicy(connect_timeout=60.0),
        )
        factory = HTTPProxyFactory(
            Registry([pool]),
            self.reactor,
            HTTPSettings(
                listener="uploads",
                router=Router([Route(pool="uploads")]),
                request_body_timeout=2.0,
                request_body_min_rate=100.0,
            ),
        )
        self.listeners["uploads"] = ListenerService(
            "uploads", "tcp:8081", factory, self.reactor, 1.0
        )
        head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n"
        stalled, trickled = StringTransport(), StringTransport()
        clients = []
        for transport in (stalled, trickled):
            client = factory.buildProtocol(PEER)
            client.makeConnection(transport)
            client.dataReceived(head + b"x")
            clients.append(client)
        for _ in range(40):  # 10 s, one byte every 0.25 s on one of them
            self.reactor.advance(0.25)
            if not trickled.disconnecting:
                clients[1].dataReceived(b"x")
        for transport in (stalled, trickled):
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
            self.assertTrue(transport.disconnecting)
        [listener] = [
            entry
            for entry in self.request("GET", "/status.json").json()["listeners"]
            if entry["name"] == "uploads"
        ]
        self.assertEqual(
            (listener["request_body_timeouts"], listener["request_body_too_slow"]),
            (1, 1),
        )
        metrics = self.request("GET", "/metrics").body.decode()
        for reason in ("idle", "slow"):
            self.assertIn(
                "rproxy_listener_request_body_timeouts_total"
                f'{{listener="uploads",reason="{reason}"}} 1.0',
                metrics,
            )

    def test_status_page_shows_each_backend_escaped(self) -> None:
        """
        / is an HTML page that refreshes itself, with a row per backend;
        names are escaped.
        """
        self.registry.add(Pool("<odd>", [Backend("10.0.0.3", 80, name="a&b")]))
        self.pool.set_admin(self.b1, AdminState.DRAINING, "maintenance")
        self.reactor.advance(125)
        response = self.request("GET", "/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], "text/html; charset=utf-8")
        page = response.body.decode()
        self.assertIn('<meta http-equiv="refresh" content="5">', page)
        self.assertIn('<td class="text">b0</td><td class="text">10.0.0.1:80</td>', page)
        self.assertIn('<tr class="disabled"><td class="text">b1</td>', page)
        self.assertIn("<td>2m 05s</td>", page)
        self.assertIn("pool &lt;odd&gt;", page)
        self.assertIn("a&amp;b", page)
        self.assertNotIn("<odd>", page)
        self.assertNotIn("<script", page)

    def test_listeners_show_their_default_pool_and_routed_pools(self) -> None:
        """
        An HTTP listener with several routes shows each routed pool and its
        default; an SNI listener its routes' pools and default pool.  The
        page lists them, the default marked.
        """
        self.registry.add(Pool("api", [Backend("10.0.0.3", 80)]))
        routes = [Route(pool="api", path_prefix="/api/"), Route(pool="web")]
        self.http.settings = HTTPSettings(listener="front", router=Router(routes))
        sni = SNIProxyFactory(
            self.registry,
            SNIRoutes.from_routes([("a.example", "api")], "web"),
            self.reactor,
        )
        self.listeners["tls"] = ListenerService(
            "tls", "tcp:443", sni, self.reactor, 1.0
        )
        front, raw, tls = self.request("GET", "/status.json").json()["listeners"]
        self.assertEqual(
            [
                (entry["name"], entry["pool"], entry["pools"])
                for entry in (front, raw, tls)
            ],
            [
                ("front", "web", ["api", "web"]),
                ("raw", "web", ["web"]),
                ("tls", "web", ["api", "web"]),
            ],
        )
        page = self.request("GET", "/").body.decode()
        self.assertIn('<td class="text">api, web (default)</td>', page)

    def test_head_and_unknown_paths(self) -> None:
        """HEAD reads like GET without a body; unknown paths are 404."""
        head = self.request("HEAD", "/metrics")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(self.request("GET", "/nope").status, 404)
        self.assertEqual(self.request("GET", "/pools/web").status, 404)

    def test_reading_endpoints_refuse_post(self) -> None:
        """POST to a page is 405, naming the methods allowed."""
        response = self.request("POST", "/status.json")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.headers["allow"], "GET, HEAD")


class ControlTests(_AdminCase):
    def test_drain_with_open_connections_then_disabled_when_last_ends(self) -> None:
        """
        Draining a backend with a connection open marks it draining (no
        new traffic) until the connection ends, then disabled.
        """
        self.pool.acquire(self.b0)
        response = self.request("POST", "/pools/web/backends/b0/drain")
        self.assertEqual(response.status, 200)
        answer = response.json()
        self.assertEqual(
            (answer["pool"], answer["name"], answer["state"], answer["admin"]),
            ("web", "b0", "draining", "draining"),
        )
        self.assertEqual(self.pool.candidates(), [self.b1])
        self.pool.release(self.b0)
        self.assertIs(self.b0.state, BackendState.DISABLED)
        state = self.request("GET", "/status.json").json()["pools"][0]["backends"][0]
        self.assertEqual((state["state"], state["reason"]), ("disabled", "drained"))

    def test_drain_idle_backend_disables_it_at_once(self) -> None:
        """With nothing open, drain is disable."""
        answer = self.request("POST", "/pools/web/backends/b1/drain").json()
        self.assertEqual(answer["state"], "disabled")

    def test_disable_and_enable(self) -> None:
        """Disable takes a backend out of rotation and enable puts it back."""
        with capturedLogs() as events:
            disabled = self.request("POST", "/pools/web/backends/b0/disable").json()
        self.assertEqual(
            (disabled["state"], disabled["reason"]), ("disabled", "disable by admin")
        )
        self.assertEqual(self.pool.candidates(), [self.b1])
        self.assertIn(
            ("127.0.0.1", "disable", "b0", "web"),
            [
                (e.get("peer"), e.get("action"), e.get("backend"), e.get("pool"))
                for e in events
            ],
        )
        enabled = self.request("POST", "/pools/web/backends/b0/enable").json()
        self.assertEqual(enabled["state"], "up")
        self.assertEqual(self.pool.candidates(), [self.b0, self.b1])

    def test_weight_from_query_or_form(self) -> None:
        """
        The new weight comes as ?value=N or a form field value=N, and the
        balancer is told (the pool's version grows).
        """
        version = self.pool.version
        answer = self.request("POST", "/pools/web/backends/b0/weight?value=5").json()
        self.assertEqual((answer["weight"], self.b0.weight), (5, 5))
        self.assertGreater(self.pool.version, version)
        response = self.request(
            "POST",
            "/pools/web/backends/b1/weight",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"value=7",
        )
        self.assertEqual((response.status, self.b1.weight), (200, 7))

    def test_bad_weight_is_400(self) -> None:
        """A missing, repeated, non-numeric or out-of-range weight is 400."""
        for query in (
            "",
            "?value=0",
            "?value=-1",
            "?value=x",
            "?value=1001",
            "?value=1&value=2",
            "?value=%C2%B2",
        ):
            response = self.request("POST", f"/pools/web/backends/b0/weight{query}")
            self.assertEqual(response.status, 400, query)
            self.assertIn("error", response.json())
        self.assertEqual(self.b0.weight, 2)

    def test_unknown_pool_or_backend_is_404(self) -> None:
        """Names that do not exist are 404, saying which."""
        response = self.request("POST", "/pools/nope/backends/b0/drain")
        self.assertEqual(
            (response.status, response.json()), (404, {"error": "no pool 'nope'"})
        )
        response = self.request("POST", "/pools/web/backends/b9/drain")
        self.assertEqual(response.status, 404)
        self.assertEqual(
            self.request("POST", "/pools/web/backends/b0/explode").status, 404
        )

    def test_backend_names_are_percent_decoded(self) -> None:
        """A backend named by its address (colons, IPv6 brackets) is reachable."""
        self.pool.add(Backend("::1", 80))
        response = self.request(
            "POST", "/pools/web/backends/%5B%3A%3A1%5D%3A80/disable"
        )
        self.assertEqual((response.status, response.json()["name"]), (200, "[::1]:80"))

    def test_controls_refuse_get(self) -> None:
        """GET on a control endpoint is 405 and changes nothing."""
        response = self.request("GET", "/pools/web/backends/b0/disable")
        self.assertEqual((response.status, response.headers["allow"]), (405, "POST"))
        self.assertIs(self.b0.state, BackendState.UP)
        self.assertEqual(self.request("GET", "/reload").status, 405)
        self.assertEqual(self.reloads, [])

    def test_reload_applied(self) -> None:
        """POST /reload calls reload; no problems: 200, reloaded."""
        response = self.request("POST", "/reload")
        self.assertEqual((response.status, response.json()), (200, {"reloaded": True}))
        self.assertEqual(self.reloads, ["called"])

    def test_reload_refused(self) -> None:
        """A reload with problems: 422 with every problem."""
        self.reload_answer = ["c.toml: pools: missing", "c.toml: x: bad"]
        response = self.request("POST", "/reload")
        self.assertEqual(response.status, 422)
        self.assertEqual(
            response.json(),
            {"reloaded": False, "errors": ["c.toml: pools: missing", "c.toml: x: bad"]},
        )

    def test_reload_that_raises_is_500_and_logged(self) -> None:
        """A bug in reload is logged and answered 500, never a traceback."""

        def broken() -> list[str]:
            raise RuntimeError("boom")

        self.admin.reload = broken
        with capturedLogs() as events:
            response = self.request("POST", "/reload")
        self.assertEqual(response.status, 500)
        self.assertNotIn(b"boom", response.body)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)
        self.flushLoggedErrors(RuntimeError)


class CrossSiteTests(_AdminCase):
    """Without a token, control requests a browser sends for another site."""

    def control(self, headers: dict[str, str]) -> Response:
        return self.request("POST", "/pools/web/backends/b0/disable", headers)

    def assert_refused(self, headers: dict[str, str], reason: str) -> None:
        with capturedLogs() as events:
            response = self.control(headers)
        self.assertEqual(response.status, 403, headers)
        self.assertIn("cross-site", response.json()["error"])
        self.assertIs(self.b0.state, BackendState.UP)
        [refusal] = [e for e in events if "reason" in e]
        self.assertEqual(refusal["peer"], "127.0.0.1")
        self.assertIn(reason, refusal["reason"])

    def test_curl_like_requests_are_allowed(self) -> None:
        """
        No Origin and Host an address or localhost (as curl and scripts
        send), or a same-origin browser request: allowed.
        """
        for headers in (
            {},
            {"Host": "localhost:9901"},
            {"Host": "LOCALHOST"},
            {"Host": "[::1]:9901"},
            {"Host": "10.0.0.5"},
            {"Origin": "http://127.0.0.1:9901", "Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "none"},
        ):
            response = self.control(headers)
            self.assertEqual(response.status, 200, headers)
            self.request("POST", "/pools/web/backends/b0/enable", headers)
        self.assertEqual(self.request("POST", "/reload").status, 200)

    def test_foreign_origin_is_refused(self) -> None:
        """
        An Origin other than the Host, or Sec-Fetch-Site cross-site or
        same-site (a form on another page): 403, logged with the peer.
        """
        self.assert_refused({"Origin": "http://evil.example"}, "Origin")
        self.assert_refused({"Origin": "null"}, "Origin")
        self.assert_refused({"Origin": "http://127.0.0.1:8080"}, "Origin")
        self.assert_refused({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site")
        self.assert_refused({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site")
        response = self.request("POST", "/reload", {"Origin": "http://evil.example"})
        self.assertEqual((response.status, self.reloads), (403, []))

    def test_rebinding_host_is_refused(self) -> None:
        """
        A Host that is a name other than localhost (a DNS rebinding page
        sends its own name, and its Origin matches it): 403.
        """
        for host in (
            "evil.example:9901",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9901",
            "127.0.0.1:x",
            "[::1]x",
        ):
            self.assert_refused(
                {"Host": host, "Origin": f"http://{host}"}, "not an IP address"
            )

    def test_reading_is_not_checked(self) -> None:
        """GETs answer whatever the Host and Origin."""
        headers = {"Host": "evil.example", "Origin": "http://evil.example"}
        for path in ("/", "/status.json", "/metrics"):
            self.assertEqual(self.request("GET", path, headers).status, 200, path)


class TokenTests(_AdminCase):
    token = "s3cret"

    def test_control_without_token_is_401_and_logged(self) -> None:
        """No Authorization: 401 with a Bearer challenge, a log event naming
        the peer, and no change."""
        with capturedLogs() as events:
            response = self.request("POST", "/pools/web/backends/b0/disable")
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.headers["www-authenticate"], 'Bearer realm="rproxy admin"'
        )
        self.assertIs(self.b0.state, BackendState.UP)
        refusals = [e for e in events if e.get("reason") in ("no token", "wrong token")]
        self.assertEqual(len(refusals), 1)
        self.assertEqual(
            (refusals[0]["peer"], refusals[0]["reason"], refusals[0]["method"]),
            ("127.0.0.1", "no token", "POST"),
        )

    def test_wrong_token_is_401(self) -> None:
        """A wrong token (or scheme) is refused, for reload too."""
        for value in ("Bearer nope", "Basic s3cret", "Bearer s3cret2", "s3cret"):
            with capturedLogs() as events:
                response = self.request(
                    "POST", "/pools/web/backends/b0/drain", {"Authorization": value}
                )
            self.assertEqual(response.status, 401, value)
            self.assertEqual(
                [e["reason"] for e in events if "reason" in e and "peer" in e],
                ["wrong token"],
            )
        self.assertEqual(
            self.request("POST", "/reload", {"Authorization": "Bearer x"}).status, 401
        )
        self.assertEqual(self.reloads, [])
        self.assertIs(self.b0.state, BackendState.UP)

    def test_right_token_is_accepted(self) -> None:
        """The configured token lets control requests through."""
        response = self.request(
            "POST", "/pools/web/backends/b0/disable", {"Authorization": "Bearer s3cret"}
        )
        self.assertEqual(response.status, 200)
        self.assertIs(self.b0.state, BackendState.DISABLED)

    def test_bearer_works_whatever_the_host(self) -> None:
        """With a token, a remote name in Host is fine (a browser cannot send
        the token cross-site)."""
        response = self.request(
            "POST",
            "/pools/web/backends/b0/disable",
            {"Authorization": "Bearer s3cret", "Host": "admin.example.com:9901"},
        )
        self.assertEqual(response.status, 200)
        self.assertIs(self.b0.state, BackendState.DISABLED)

    def test_reading_needs_no_token(self) -> None:
        """Status, JSON and metrics are readable without the token."""
        for path in ("/", "/status.json", "/metrics"):
            self.assertEqual(self.request("GET", path).status, 200, path)


class StopTests(_AdminCase):
    """A stopped admin service (a reload removed or moved it) does not serve."""

    def setUp(self) -> None:
        super().setUp()
        self.admin.startService()

    def test_open_connection_gets_no_control_after_stop(self) -> None:
        """
        A keep-alive connection opened before stop is closed by it, and a
        request that still comes on it is not handled.
        """
        channel, transport = self.connect()
        channel.dataReceived(raw_request("GET", "/status.json"))
        self.assertEqual(Response(transport.value()).status, 200)
        self.assertFalse(transport.disconnecting)
        transport.clear()
        self.admin.stopService()
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(raw_request("POST", "/pools/web/backends/b0/disable"))
        self.assertEqual(transport.value(), b"")
        self.assertIs(self.b0.state, BackendState.UP)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.admin.site.channels, set())

    def test_request_arriving_across_stop_is_503_then_closed(self) -> None:
        """
        A request whose body is still coming at stop is answered 503, not
        obeyed, and the connection closes after the answer.
        """
        channel, transport = self.connect()
        body = b"value=7"
        request = raw_request(
            "POST",
            "/pools/web/backends/b0/weight",
            {"Content-Type": "application/x-www-form-urlencoded"},
            body,
        )
        channel.dataReceived(request[: -len(body)])
        self.admin.stopService()
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(body)
        response = Response(transport.value())
        self.assertEqual(response.status, 503)
        self.assertEqual(response.headers["connection"], "close")
        self.assertEqual(self.b0.weight, 2)
        self.assertTrue(transport.disconnecting)

    def test_reload_that_stops_the_admin_is_answered_then_closed(self) -> None:
        """
        POST /reload whose reload replaces this admin gets its answer, with
        Connection: close, and then the connection closes.
        """

        def moved() -> list[str]:
            self.admin.stopService()
            return []

        self.admin.reload = moved
        channel, transport = self.connect()
        channel.dataReceived(raw_request("POST", "/reload"))
        response = Response(transport.value())
        self.assertEqual((response.status, response.json()), (200, {"reloaded": True}))
        self.assertEqual(response.headers["connection"], "close")
        self.assertTrue(transport.disconnecting)


class BadClientTests(_AdminCase):
    """Garbage and slow requests do not hold admin connections open."""

    def assert_refused_at_once(self, data: bytes) -> None:
        channel, transport = self.connect()
        channel.dataReceived(data)
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
        )
        self.assertTrue(transport.disconnecting, data)
        channel.connectionLost(Failure(ConnectionDone()))

    def test_garbage_is_answered_400_and_closed_at_once(self) -> None:
        """
        A TLS ClientHello or binary noise (no line end, nothing that can
        begin a method) and a whole malformed request line are each
        answered 400 and closed, without waiting for more.
        """
        for data in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\x00\xff\xfe",
            b"G\x00T / HTTP/1.1",
            b"A" * 40,
            b"hello\r\n",
            b"GET / HTTP/1.1 extra\r\n",
        ):
            self.assert_refused_at_once(data)
        self.assertEqual(self.admin.site.channels, set())

    def test_request_line_in_pieces_is_served(self) -> None:
        """A request line arriving a byte at a time is a request."""
        channel, transport = self.connect()
        for byte in raw_request("GET", "/status.json"):
            channel.dataReceived(bytes([byte]))
        self.assertEqual(Response(transport.value()).status, 200)
        self.assertFalse(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))

    def test_incomplete_head_is_closed_after_the_head_timeout(self) -> None:
        """
        A head not whole 10 s after connecting is closed then, however it
        trickles in.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /status.json HTTP/1.1\r\n")
        for _ in range(4):
            self.reactor.advance(2.25)
            channel.dataReceived(b"X: y\r\n")
        self.reactor.advance(0.75)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.25)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_idle_connection_is_closed_10s_after_its_answer(self) -> None:
        """
        The timer starts again after each answer: a keep-alive connection
        may send its next request within 10 s of the last answer.
        """
        channel, transport = self.connect()
        self.reactor.advance(9.0)
        channel.dataReceived(raw_request("GET", "/status.json"))
        self.assertEqual(Response(transport.value()).status, 200)
        self.reactor.advance(9.75)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.25)
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))


class ServiceTests(SynchronousTestCase):
    def test_listens_and_samples_until_stopped(self) -> None:
        """
        Starting listens on the configured endpoint and starts sampling;
        stopping stops both and leaves no timer.
        """
        reactor = MemoryReactorClock()
        admin = AdminService(
            AdminConfig("tcp:9901:interface=127.0.0.1"), Registry(), {}, reactor
        )
        admin.startService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (9901, "127.0.0.1"))
        self.assertIs(factory, admin.site)
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        admin.stopService()
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertIsNone(admin.port)

    def test_proxy_service_builds_the_admin_with_its_live_state(self) -> None:
        """
        [admin] gives the ProxyService an admin child over its registry and
        listeners dict, and POST /reload asks the proxy's reload at request
        time.
        """
        config = parse_config(
            tomllib.loads(
                """
[pools.web]
backends = ["10.0.0.1:80"]
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "web"
[admin]
listen = "tcp:9901:interface=127.0.0.1"
"""
            ),
            "c.toml",
        )
        proxy = ProxyService(config, MemoryReactorClock())
        admin = proxy.admin
        assert admin is not None
        self.assertIs(proxy.getServiceNamed("admin"), admin)
        self.assertIs(admin.registry, proxy.registry)
        self.assertIs(admin.listeners, proxy.listeners)
        self.assertEqual(
            admin.reload(), ["c.toml: cannot read: No such file or directory"]
        )
        proxy.reload = lambda: []  # type: ignore[method-assign]
        self.assertEqual(admin.reload(), [])

    def test_no_admin_section_no_admin(self) -> None:
        """Without [admin] the proxy has no admin service."""
        config = parse_config(
            tomllib.loads(
                '[pools.web]\nbackends = ["10.0.0.1:80"]\n[[listeners]]\n'
                'name = "f"\nprotocol = "tcp"\nlisten = "tcp:1"\npool = "web"\n'
            ),
            "c.toml",
        )
        self.assertIsNone(ProxyService(config, MemoryReactorClock()).admin)
