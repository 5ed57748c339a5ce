"""Reloading the config of a running proxy, over real sockets on 127.0.0.1:
in-process twisted.web and TCP backends, clients in threads."""

from __future__ import annotations

import http.client
import socket
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rproxy.backends import AdminState
from rproxy.config import load_config
from rproxy.service import ProxyService
from tests.integration.helpers import free_port, greeter_factory


class Named(Resource):
    """
    Answers with its name; C{/slow} waits until the test releases it;
    C{/health} is 200 while C{healthy}, else 503.  C{served} counts the
    requests other than C{/health}.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.held: list[Request] = []
        self.holding: list[Deferred[None]] = []
        self.healthy = True
        self.served = 0

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/health":
            request.setResponseCode(200 if self.healthy else 503)
            return b"health"
        self.served += 1
        if request.path == b"/slow":
            self.held.append(request)
            waiting, self.holding = self.holding, []
            for d in waiting:
                d.callback(None)
            return NOT_DONE_YET
        return f"{self.name} {request.path.decode()}".encode()

    def request_held(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.held:
            d.callback(None)
        else:
            self.holding.append(d)
        return d

    def release(self) -> None:
        for request in self.held:
            request.write(f"{self.name} slow".encode())
            request.finish()
        self.held = []


def get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


class ReloadTests(TestCase):
    """
    A running ProxyService reloading its file: what changed takes effect for
    new traffic, what stayed keeps its state, traffic in flight finishes.
    """

    timeout = 60

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rproxy-reload-"))
        self.resources: dict[str, Named] = {}
        self.http: dict[str, int] = {}
        for name in ("a", "b", "c"):
            resource = self.resources[name] = Named(name)
            site = Site(resource)
            site.noisy = False
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.http[name] = port.getHost().port
        self.tcp: dict[str, int] = {}
        for name in ("t1", "t2"):
            port = reactor.listenTCP(0, greeter_factory(name), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.tcp[name] = port.getHost().port
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.path = self.dir / "rproxy.toml"

    def backends(self, *names: str, **weights: int) -> str:
        return ", ".join(
            f'{{ address = "127.0.0.1:{self.http[n]}", name = "{n}", '
            f"weight = {weights.get(n, 1)} }}"
            for n in names
        )

    def config(self, web: str, extra: str = "", routes: str = "") -> str:
        return f"""
[pools.web]
backends = [{web}]
health.check = "none"

[pools.other]
backends = [{self.backends("c")}]
health.check = "none"

[pools.tcp]
backends = ["127.0.0.1:{self.tcp["t1"]}"]
health.check = "none"

[[listeners]]
name = "http"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
{routes}

[[listeners]]
name = "tcp"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "tcp"
{extra}
"""

    def start(self, text: str) -> ProxyService:
        self.path.write_text(text)
        service = ProxyService(load_config(self.path), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.service = service
        return service

    def reload(self, text: str) -> list[str]:
        self.path.write_text(text)
        return self.service.reload()

    def stopped_accepting(self, name: str) -> Deferred[None]:
        """
        Fires once listener C{name} has closed its port.
        """
        closed: Deferred[None] = Deferred()

        def observe(event: dict[str, Any]) -> None:
            if (
                event.get("log_format", "").startswith("listener {listener} stopped")
                and event.get("listener") == name
                and not closed.called
            ):
                closed.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return closed

    def port(self, name: str) -> int:
        bound = self.service.listeners[name].bound
        return bound.port  # type: ignore[union-attr,no-any-return]

    @inlineCallbacks
    def test_added_backend_takes_traffic_and_kept_ones_keep_their_state(
        self,
    ) -> Any:
        service = self.start(self.config(self.backends("a")))
        pool = service.registry.get("web")
        a = pool.get("a")
        pool.set_weight(a, 3)
        for _ in range(2):
            self.assertEqual(
                (yield deferToThread(get, self.port("http"))), (200, "a /")
            )
        self.assertEqual(self.reload(self.config(self.backends("a", "b"))), [])
        self.assertIs(pool.get("a"), a)
        self.assertIs(service.registry.get("web"), pool)
        self.assertEqual((a.connections_total, a.weight), (2, 3))
        seen = []
        for _ in range(4):
            seen.append((yield deferToThread(get, self.port("http"))))
        self.assertEqual(sorted(seen), [(200, "a /")] * 2 + [(200, "b /")] * 2)
        self.assertEqual(a.connections_total, 4)
        reloaded = [e for e in self.events if "reloaded" in e.get("log_format", "")]
        self.assertEqual(len(reloaded), 1)
        self.assertEqual(reloaded[0]["changes"], "pool web changed")

    def backend_up(self, name: str) -> Deferred[None]:
        """
        Fires once backend C{name} of pool C{web} is logged as up.
        """
        up: Deferred[None] = Deferred()

        def observe(event: dict[str, Any]) -> None:
            if (
                event.get("log_namespace") == "rproxy.backends"
                and event.get("backend") == name
                and event.get("state") == "up"
                and not up.called
            ):
                up.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return up

    @inlineCallbacks
    def test_added_backend_gets_no_traffic_before_its_checks_pass(self) -> Any:
        """
        A backend a reload adds to a pool with HTTP checks is down until
        C{rise} checks pass: while its check fails, every request goes to
        the backend that was there; once it passes, it takes its share.
        """
        checked = (
            'health = { check = "http", path = "/health", interval = 0.2, rise = 2 }'
        )
        config = self.config(self.backends("a")).replace(
            'health.check = "none"', checked, 1
        )
        service = self.start(config)
        b = self.resources["b"]
        b.healthy = False
        self.assertEqual(
            self.reload(config.replace(self.backends("a"), self.backends("a", "b"))), []
        )
        pool = service.registry.get("web")
        self.assertEqual(
            (pool.get("b").state.value, pool.get("b").reason),
            ("down", "not checked yet"),
        )
        seen = []
        for _ in range(6):
            seen.append((yield deferToThread(get, self.port("http"))))
        self.assertEqual(seen, [(200, "a /")] * 6)
        self.assertEqual(b.served, 0)
        up = self.backend_up("b")
        b.healthy = True
        yield up
        seen = []
        for _ in range(4):
            seen.append((yield deferToThread(get, self.port("http"))))
        self.assertEqual(sorted(seen), [(200, "a /")] * 2 + [(200, "b /")] * 2)

    @inlineCallbacks
    def test_removed_backend_finishes_its_request_and_gets_no_more(self) -> Any:
        self.start(self.config(self.backends("a")))
        slow = deferToThread(get, self.port("http"), "/slow")
        yield self.resources["a"].request_held()
        self.assertEqual(self.reload(self.config(self.backends("b"))), [])
        self.assertEqual((yield deferToThread(get, self.port("http"))), (200, "b /"))
        self.resources["a"].release()
        self.assertEqual((yield slow), (200, "a slow"))
        self.assertEqual((yield deferToThread(get, self.port("http"))), (200, "b /"))

    @inlineCallbacks
    def test_broken_config_is_refused_and_the_running_one_stays(self) -> Any:
        service = self.start(self.config(self.backends("a")))
        broken = self.config(self.backends("a")).replace(
            'health.check = "none"', 'health.check = "nope"', 1
        )
        errors = self.reload(broken)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(f"{self.path}: pools.web.health.check", errors[0])
        refusals = [e for e in self.events if "not reloaded" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 1)
        self.assertIn("pools.web.health.check", refusals[0]["errors"])
        self.assertEqual(service.config.pool("web").health.check, "none")
        self.assertEqual((yield deferToThread(get, self.port("http"))), (200, "a /"))

    @inlineCallbacks
    def test_route_change_reaches_the_next_request_of_a_kept_alive_client(
        self,
    ) -> Any:
        self.start(self.config(self.backends("a")))
        conn = http.client.HTTPConnection("127.0.0.1", self.port("http"), timeout=20)
        self.addCleanup(conn.close)

        def ask(path: str) -> str:
            conn.request("GET", path)
            return conn.getresponse().read().decode()

        self.assertEqual((yield deferToThread(ask, "/x/1")), "a /x/1")
        routes = '[[listeners.routes]]\npath_prefix = "/x/"\npool = "other"\n'
        self.assertEqual(
            self.reload(self.config(self.backends("a"), routes=routes)), []
        )
        self.assertEqual((yield deferToThread(ask, "/x/2")), "c /x/2")
        self.assertEqual((yield deferToThread(ask, "/y")), "a /y")

    @inlineCallbacks
    def test_listeners_are_added_moved_and_removed(self) -> Any:
        self.start(self.config(self.backends("a")))
        tcp_port = self.port("tcp")
        second = """
[[listeners]]
name = "second"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "other"
"""
        self.assertEqual(self.reload(self.config(self.backends("a"), second)), [])
        self.assertEqual((yield deferToThread(get, self.port("second"))), (200, "c /"))
        # The tcp listener's endpoint string did not change: same port.
        self.assertEqual(self.port("tcp"), tcp_port)
        second_port = self.port("second")
        elsewhere = free_port()
        moved = second.replace("tcp:0:", f"tcp:{elsewhere}:", 1)
        closed = self.stopped_accepting("second")
        self.assertEqual(self.reload(self.config(self.backends("a"), moved)), [])
        yield closed
        self.assertEqual(self.port("second"), elsewhere)
        self.assertTrue((yield deferToThread(refused, second_port)))
        self.assertEqual((yield deferToThread(get, elsewhere)), (200, "c /"))
        closed = self.stopped_accepting("second")
        self.assertEqual(self.reload(self.config(self.backends("a"))), [])
        self.assertNotIn("second", self.service.listeners)
        yield closed
        self.assertTrue((yield deferToThread(refused, elsewhere)))

    @inlineCallbacks
    def test_a_port_that_cannot_be_bound_refuses_the_whole_reload(self) -> Any:
        service = self.start(self.config(self.backends("a")))
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        extra = f"""
[[listeners]]
name = "busy"
protocol = "http"
listen = "tcp:{busy}:interface=127.0.0.1"
pool = "other"
"""
        errors = self.reload(self.config(self.backends("a", "b"), extra))
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("busy", errors[0])
        self.assertNotIn("busy", service.listeners)
        self.assertEqual([b.name for b in service.registry.get("web").backends], ["a"])
        self.assertEqual((yield deferToThread(get, self.port("http"))), (200, "a /"))

    @inlineCallbacks
    def test_tcp_listener_moves_to_another_pool_for_new_connections(self) -> Any:
        self.start(self.config(self.backends("a")))

        def greeting(sock: socket.socket) -> bytes:
            return sock.recv(100)

        held = socket.create_connection(("127.0.0.1", self.port("tcp")), timeout=20)
        self.addCleanup(held.close)
        self.assertEqual((yield deferToThread(greeting, held)), b"t1\n")
        text = self.config(self.backends("a")).replace(
            f'"127.0.0.1:{self.tcp["t1"]}"', f'"127.0.0.1:{self.tcp["t2"]}"'
        )
        self.assertEqual(self.reload(text), [])

        def fresh() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port("tcp")), 20) as s:
                return s.recv(100)

        self.assertEqual((yield deferToThread(fresh)), b"t2\n")

        def echo() -> bytes:
            held.sendall(b"still here")
            return held.recv(100)

        self.assertEqual((yield deferToThread(echo)), b"still here")

    @inlineCallbacks
    def test_new_health_settings_replace_the_checks_and_keep_state(self) -> Any:
        service = self.start(self.config(self.backends("a", "b")))
        pool = service.registry.get("web")
        a, b = pool.get("a"), pool.get("b")
        pool.set_admin(a, AdminState.DRAINING, "operator")
        pool.mark_down(b, "test")
        came_up: Deferred[None] = Deferred()

        def observe(*args: Any) -> None:
            if args[1] is b and b.healthy and not came_up.called:
                came_up.callback(None)

        pool.observe(observe)
        old_monitor = service.monitors["web"]
        text = self.config(self.backends("a", "b")).replace(
            'health.check = "none"',
            'health = { check = "tcp", interval = 0.05, rise = 1 }',
            1,
        )
        self.assertEqual(self.reload(text), [])
        self.assertIsNot(service.monitors["web"], old_monitor)
        self.assertFalse(old_monitor.running)
        self.assertEqual(a.admin, AdminState.DISABLED)
        self.assertEqual(pool.rise, 1)
        yield came_up
        self.assertIs(pool.get("b"), b)
        self.assertEqual(b.last_check_ok, True)

    @inlineCallbacks
    def test_admin_section_is_added_changed_and_removed(self) -> Any:
        service = self.start(self.config(self.backends("a")))
        self.assertIsNone(service.admin)
        admin = '\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'
        self.assertEqual(self.reload(self.config(self.backends("a"), admin)), [])
        first = service.admin
        assert first is not None and first.bound is not None
        (self.dir / "token").write_text("s3cret\n")
        with_token = admin + 'token_file = "token"\n'
        self.assertEqual(self.reload(self.config(self.backends("a"), with_token)), [])
        self.assertIs(service.admin, first)
        self.assertEqual(first.token, "s3cret")

        def disable(token: str | None) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", first.bound.port, timeout=20)
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            conn.request("POST", "/pools/web/backends/a/disable", headers=headers)
            status = conn.getresponse().status
            conn.close()
            return status

        self.assertEqual((yield deferToThread(disable, None)), 401)
        self.assertEqual((yield deferToThread(disable, "s3cret")), 200)
        self.assertEqual(
            service.registry.get("web").get("a").admin, AdminState.DISABLED
        )
        self.assertEqual(self.reload(self.config(self.backends("a"))), [])
        self.assertIsNone(service.admin)
        self.assertFalse(first.running)

    @inlineCallbacks
    def test_accept_proxy_turned_on_applies_to_new_connections(self) -> Any:
        self.start(self.config(self.backends("a")))
        text = self.config(self.backends("a")).replace(
            'pool = "web"\n',
            'pool = "web"\naccept_proxy = true\ntrusted_proxies = ["127.0.0.1"]\n',
            1,
        )
        self.assertEqual(self.reload(text), [])
        port = self.port("http")

        def exchange(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(data)
                received = b""
                while chunk := sock.recv(4096):
                    received += chunk
                return received

        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        self.assertEqual((yield deferToThread(exchange, request)), b"")
        header = b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n"
        answer = yield deferToThread(exchange, header + request)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)

    def test_listener_counters_survive_a_reload(self) -> None:
        service = self.start(self.config(self.backends("a")))
        stats = service.listeners["tcp"].factory.stats
        stats.connections_closed = 5
        text = self.config(self.backends("a")).replace(
            f'"127.0.0.1:{self.tcp["t1"]}"', f'"127.0.0.1:{self.tcp["t2"]}"'
        )
        self.assertEqual(self.reload(text), [])
        self.assertIs(service.listeners["tcp"].factory.stats, stats)
        self.assertEqual(stats.connections_closed, 5)

    def test_a_certificate_openssl_refuses_refuses_the_reload(self) -> None:
        """
        A key too small for OpenSSL's security level passes the file checks
        but not the context: the reload is refused before anything changed.
        """
        cert, key = small_key_pair(self.dir)
        service = self.start(self.config(self.backends("a")))
        tls = f"""
[[listeners]]
name = "https"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
tls = {{ certificates = [{{ cert = "{cert}", key = "{key}" }}] }}
"""
        errors = self.reload(self.config(self.backends("a", "b"), tls))
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("listener https: OpenSSL refuses the certificate", errors[0])
        self.assertNotIn("https", service.listeners)
        self.assertEqual([b.name for b in service.registry.get("web").backends], ["a"])
        self.assertEqual(self.reload(self.config(self.backends("a", "b"))), [])


def small_key_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate with a 1024-bit RSA key, and its key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "small.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "small.pem", directory / "small.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
