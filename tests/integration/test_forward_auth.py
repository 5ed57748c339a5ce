"""Forward auth over real sockets on 127.0.0.1: a ProxyService built from a
TOML config in this process, a twisted.web auth service and backend in
process, http.client in threads: allowed, denied, cached, and the auth
service down (503); the counters in /metrics."""

from __future__ import annotations

import http.client
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rproxy.config import parse_config
from rproxy.service import ProxyService
from tests.integration.helpers import free_port

TOKEN = "fa-t0ken"


class AuthService(Resource):
    """Allows C{Bearer good} as ann (cacheable for 60 s), sends a browser
    without credentials to a login page, refuses the rest with a challenge."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[bytes, bytes]] = []

    def render_GET(self, request: Request) -> bytes:
        fields = {
            name.lower(): values[0]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append(fields)
        credential = fields.get(b"authorization")
        if credential == b"Bearer good":
            request.setHeader(b"X-User", b"ann")
            request.setHeader(b"Cache-Control", b"max-age=60")
            return b""
        if credential is None:
            request.setResponseCode(302)
            request.setHeader(b"Location", b"https://login.example/")
            return b""
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="api"')
        request.setHeader(b"Content-Type", b"text/plain")
        return b"bad token\n"


class Echo(Resource):
    """A backend that answers with the X-User it was given."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"user=" + (request.getHeader(b"X-User") or b"-")


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def listen(resource: Resource) -> Any:
    site = Site(resource)
    site.noisy = False
    return reactor.listenTCP(0, site, interface="127.0.0.1")


class ForwardAuthIntegrationTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.dir = Path(directory.name)
        (self.dir / "admin.token").write_text(TOKEN + "\n")
        self.auth = AuthService()
        auth_port = listen(self.auth)
        self.addCleanup(auth_port.stopListening)
        backend = listen(Echo())
        self.addCleanup(backend.stopListening)
        self.auth_url = f"http://127.0.0.1:{auth_port.getHost().port}/verify"
        self.down_url = f"http://127.0.0.1:{free_port()}/verify"
        text = f"""
[pools.web]
backends = ["127.0.0.1:{backend.getHost().port}"]
[pools.web.health]
check = "none"

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
[[listeners.routes]]
path_prefix = "/api/"
pool = "web"
auth = {{ url = "{self.auth_url}", copy_headers = ["X-User"], cache = 30 }}
[[listeners.routes]]
path_prefix = "/down/"
pool = "web"
auth = {{ url = "{self.down_url}", timeout = 5 }}
[[listeners.routes]]
pool = "web"

[admin]
listen = "tcp:0:interface=127.0.0.1"
token_file = "admin.token"
"""
        path = self.dir / "rproxy.toml"
        path.write_text(text)
        self.service = ProxyService(
            parse_config(tomllib.loads(text), str(path)), reactor
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        listener = self.service.listeners["front"]
        assert listener.port is not None
        self.front = listener.port.getHost().port
        assert self.service.admin is not None and self.service.admin.port is not None
        self.admin = self.service.admin.port.getHost().port

    @inlineCallbacks
    def test_allowed_denied_cached_and_down(self) -> Any:
        """A good token reaches the backend as ann (a forged X-User is
        replaced; the second time from the cache); a bad one gets the
        service's 401; none its login redirect; a dead service 503; the
        counters in /metrics say so."""
        good = {"Authorization": "Bearer good", "X-User": "root"}
        status, body, _ = yield deferToThread(get, self.front, "/api/x?a=1", good)
        self.assertEqual((status, body), (200, b"user=ann"))
        [seen] = self.auth.seen
        self.assertEqual(seen[b"x-forwarded-uri"], b"/api/x?a=1")
        self.assertEqual(seen[b"x-forwarded-method"], b"GET")
        self.assertEqual(seen[b"x-forwarded-for"], b"127.0.0.1")
        self.assertNotIn(b"x-user", seen)
        status, body, _ = yield deferToThread(get, self.front, "/api/y", good)
        self.assertEqual((status, body, len(self.auth.seen)), (200, b"user=ann", 1))

        bad = {"Authorization": "Bearer bad"}
        status, body, headers = yield deferToThread(get, self.front, "/api/x", bad)
        self.assertEqual((status, body), (401, b"bad token\n"))
        self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="api"')
        status, _, headers = yield deferToThread(get, self.front, "/api/x", {})
        self.assertEqual((status, headers["Location"]), (302, "https://login.example/"))

        status, _, _ = yield deferToThread(get, self.front, "/down/x", good)
        self.assertEqual(status, 503)
        status, body, _ = yield deferToThread(get, self.front, "/open", {})
        self.assertEqual((status, body), (200, b"user=-"))

        auth = {"Authorization": f"Bearer {TOKEN}"}
        _, text, _ = yield deferToThread(get, self.admin, "/metrics", auth)
        counts = {
            (sample.labels["route"], sample.labels["outcome"]): sample.value
            for family in text_string_to_metric_families(text.decode())
            if family.name == "rproxy_forward_auth"
            for sample in family.samples
            if sample.name.endswith("_total")
        }
        self.assertEqual(
            counts,
            {
                ("/api/", "allowed"): 2,
                ("/api/", "cached"): 1,
                ("/api/", "denied"): 2,
                ("/api/", "errors"): 0,
                ("/down/", "allowed"): 0,
                ("/down/", "cached"): 0,
                ("/down/", "denied"): 0,
                ("/down/", "errors"): 1,
            },
        )
