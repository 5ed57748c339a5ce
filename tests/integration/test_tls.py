"""TLS termination and TLS to backends over real sockets on 127.0.0.1.

The proxy is a L{ProxyService} built from a TOML config in this process;
certificates come from C{trustme} CAs written to a temporary directory;
clients are the stdlib's C{ssl} in threads; backends are twisted.web sites,
plain or behind TLS.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rproxy.backends import Backend
from rproxy.config import HealthConfig, parse_config
from rproxy.health import describe_failure
from rproxy.service import ProxyService, build_check
from rproxy.tls import backend_tls

MAIN_NAMES = {"example.com", "www.example.com", "secure.example.com"}


class Echoes(Resource):
    """Answers with the backend's name and the forwarding headers it got."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        if request.path == b"/big":
            return bytes(range(256)) * 8192
        proto = request.getHeader(b"x-forwarded-proto") or b"-"
        return b"%s proto=%s" % (self.name.encode(), proto)


class Upper(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]


def write_pair(directory: Path, name: str, cert: trustme.LeafCert) -> tuple[str, str]:
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return str(cert_path), str(key_path)


def client_context(ca: trustme.CA, **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


def handshake(
    port: int, context: ssl.SSLContext, server_name: str | None
) -> tuple[dict[str, Any], str | None, str | None]:
    """The peer certificate, ALPN protocol and TLS version of one handshake."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw, context.wrap_socket(raw, server_hostname=server_name) as tls:
        return (
            tls.getpeercert() or {},
            tls.selected_alpn_protocol(),
            tls.version(),
        )


def names_of(peer: dict[str, Any]) -> set[str]:
    return {value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"}


def https_get(
    port: int, ca: trustme.CA, host: str, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    context = client_context(ca)
    context.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    # SNI and certificate checks against host, the TCP connection to 127.0.0.1.
    conn._tunnel_host = None  # type: ignore[attr-defined]
    conn.host = host
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sock = context.wrap_socket(sock, server_hostname=host)
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class TLSProxyTests(TestCase):
    """
    A proxy with an https listener holding three certificates, a plain
    listener that redirects to it, a TLS-terminating tcp listener, and pools
    reached over plain HTTP and over verified TLS.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.dir = Path(temporary.name)
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.main = self.ca.issue_cert(*sorted(MAIN_NAMES))
        self.api = self.ca.issue_cert("api.example.com")
        self.wild = self.ca.issue_cert("*.apps.example.com")
        self.files = {
            "main": write_pair(self.dir, "main", self.main),
            "api": write_pair(self.dir, "api", self.api),
            "wild": write_pair(self.dir, "wild", self.wild),
        }
        (self.dir / "ca.pem").write_bytes(self.ca.cert_pem.bytes())
        (self.dir / "other-ca.pem").write_bytes(self.other_ca.cert_pem.bytes())
        # Backends: plain HTTP, HTTPS (certificate for backend.internal),
        # and a plain upper-casing TCP server.
        self.ports = []
        plain = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(Echoes("plain"))
        )
        backend_cert = self.ca.issue_cert("backend.internal")
        options = CertificateOptions(
            privateKey=_pkey(backend_cert), certificate=_x509(backend_cert)
        )
        secure = yield SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(Site(Echoes("secure")))
        upper = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Upper)
        )
        for port in (plain, secure, upper):
            self.addCleanup(port.stopListening)
        self.plain_port = plain.getHost().port
        self.secure_port = secure.getHost().port
        self.upper_port = upper.getHost().port
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.service = self.start(self.config())

    def config(self, **pool_tls: str) -> str:
        main, api, wild = self.files["main"], self.files["api"], self.files["wild"]
        secure_tls = pool_tls.get(
            "secure", 'server_name = "backend.internal", ca = "ca.pem"'
        )
        return f"""
[pools.web]
backends = ["127.0.0.1:{self.plain_port}"]
health.check = "none"

[pools.secure]
backends = ["127.0.0.1:{self.secure_port}"]
health.check = "none"
connect_tries = 1
tls = {{ {secure_tls} }}

[pools.upper]
backends = ["127.0.0.1:{self.upper_port}"]
health.check = "none"

[[listeners]]
name = "https"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
[listeners.tls]
certificates = [
  {{ cert = "{main[0]}", key = "{main[1]}" }},
  {{ cert = "{api[0]}", key = "{api[1]}" }},
  {{ cert = "{wild[0]}", key = "{wild[1]}" }},
]
hsts = "max-age=31536000"
redirect_http_from = "tcp:0:interface=127.0.0.1"
[[listeners.routes]]
host = "secure.example.com"
pool = "secure"

[[listeners]]
name = "strict"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
[listeners.tls]
certificates = [{{ cert = "{main[0]}", key = "{main[1]}" }}]
min_version = "1.3"

[[listeners]]
name = "tcp-tls"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "upper"
tls = {{ certificates = [{{ cert = "{main[0]}", key = "{main[1]}" }}] }}
"""

    def start(self, text: str) -> ProxyService:
        path = self.dir / "rproxy.toml"
        path.write_text(text)
        config = parse_config(tomllib.loads(text), str(path))
        service = ProxyService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def port(self, name: str) -> int:
        port = self.service.listeners[name].port
        assert port is not None
        return port.getHost().port  # type: ignore[no-any-return]

    @inlineCallbacks
    def test_sni_picks_the_certificate_and_the_first_is_the_default(self) -> Any:
        """
        Each server name gets the certificate naming it, exactly or by
        wildcard; a client without SNI, or with a name no certificate has,
        gets the first certificate.
        """
        port = self.port("https")
        plain = client_context(self.ca, check_hostname=False)
        seen = {}
        for name in ("api.example.com", "x.apps.example.com", "www.example.com"):
            peer, _, _ = yield deferToThread(
                handshake, port, client_context(self.ca), name
            )
            seen[name] = names_of(peer)
        no_sni, _, _ = yield deferToThread(handshake, port, plain, None)
        unknown, _, _ = yield deferToThread(handshake, port, plain, "other.test")
        self.assertEqual(
            seen,
            {
                "api.example.com": {"api.example.com"},
                "x.apps.example.com": {"*.apps.example.com"},
                "www.example.com": MAIN_NAMES,
            },
        )
        self.assertEqual(names_of(no_sni), MAIN_NAMES)
        self.assertEqual(names_of(unknown), MAIN_NAMES)

    @inlineCallbacks
    def test_alpn_prefers_h2_and_tls_below_12_is_refused(self) -> Any:
        """
        The http listener negotiates ALPN C{h2} with a client that offers it
        and C{http/1.1}; a client that speaks
        at most TLS 1.1 is refused with a protocol-version alert, and a
        listener with C{min_version = "1.3"} refuses a TLS 1.2 client that
        the default listener accepts.
        """
        port = self.port("https")
        modern = client_context(self.ca)
        modern.set_alpn_protocols(["h2", "http/1.1"])
        _, alpn, version = yield deferToThread(handshake, port, modern, "example.com")
        self.assertEqual((alpn, version), ("h2", "TLSv1.3"))
        modern.set_alpn_protocols(["http/1.1"])
        _, alpn, _ = yield deferToThread(handshake, port, modern, "example.com")
        self.assertEqual(alpn, "http/1.1")

        old = client_context(self.ca, maximum_version=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        failure = yield self.assertFailure(
            deferToThread(handshake, port, old, "example.com"), ssl.SSLError
        )
        self.assertIn("VERSION", str(failure).upper())

        tls12 = client_context(self.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        _, _, version = yield deferToThread(handshake, port, tls12, "example.com")
        self.assertEqual(version, "TLSv1.2")
        yield self.assertFailure(
            deferToThread(handshake, self.port("strict"), tls12, "example.com"),
            ssl.SSLError,
        )

    @inlineCallbacks
    def test_https_request_says_https_and_gets_hsts(self) -> Any:
        """
        A request over TLS reaches the backend with C{X-Forwarded-Proto:
        https}, and the response carries the listener's HSTS field.
        """
        status, headers, body = yield deferToThread(
            https_get, self.port("https"), self.ca, "www.example.com"
        )
        self.assertEqual((status, body), (200, b"plain proto=https"))
        self.assertEqual(headers.get("Strict-Transport-Security"), "max-age=31536000")

    @inlineCallbacks
    def test_large_response_over_tls_on_both_sides(self) -> Any:
        """
        A 2 MiB response from a TLS backend reaches the TLS client intact.
        """
        status, _, body = yield deferToThread(
            https_get, self.port("https"), self.ca, "secure.example.com", "/big"
        )
        self.assertEqual(status, 200)
        self.assertEqual(body, bytes(range(256)) * 8192)

    @inlineCallbacks
    def test_plain_listener_redirects_to_https(self) -> Any:
        """
        The redirect listener answers 308 with the same host and target on
        the https listener's port, and proxies nothing.
        """
        port = self.port("https:redirect")

        def get() -> tuple[int, str | None, str | None]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/a/b?c=d", headers={"Host": "www.example.com:80"})
            response = conn.getresponse()
            response.read()
            conn.close()
            return (
                response.status,
                response.getheader("Location"),
                response.getheader("Strict-Transport-Security"),
            )

        status, location, hsts = yield deferToThread(get)
        self.assertEqual(status, 308)
        self.assertEqual(
            location, f"https://www.example.com:{self.port('https')}/a/b?c=d"
        )
        self.assertIsNone(hsts)

    @inlineCallbacks
    def test_tcp_listener_terminates_tls(self) -> Any:
        """
        A tcp listener with tls decrypts and relays the plain stream to its
        backend.
        """

        def exchange() -> bytes:
            context = client_context(self.ca)
            with (
                socket.create_connection(
                    ("127.0.0.1", self.port("tcp-tls")), timeout=10
                ) as raw,
                context.wrap_socket(raw, server_hostname="example.com") as tls,
            ):
                tls.sendall(b"hello over tls")
                got = b""
                while len(got) < 14:
                    got += tls.recv(100)
                return got

        self.assertEqual((yield deferToThread(exchange)), b"HELLO OVER TLS")

    @inlineCallbacks
    def test_backend_tls_verified_against_server_name(self) -> Any:
        """
        A pool with tls reaches its backend over TLS verified against
        C{server_name} and the pool's CA.
        """
        status, _, body = yield deferToThread(
            https_get, self.port("https"), self.ca, "secure.example.com"
        )
        self.assertEqual((status, body), (200, b"secure proto=https"))

    @inlineCallbacks
    def test_backend_with_wrong_name_or_untrusted_ca_gets_502(self) -> Any:
        """
        A backend whose certificate does not match C{server_name}, or is not
        signed by the trusted CA, is not talked to: the client gets a 502,
        a log event names the backend and the reason, and the pool counts
        the failure.
        """
        for secure_tls, reason in (
            ('server_name = "wrong.internal", ca = "ca.pem"', "wrong.internal"),
            ('server_name = "backend.internal", ca = "other-ca.pem"', "verify"),
        ):
            yield self.service.stopService()
            self.events.clear()
            self.service = self.start(self.config(secure=secure_tls))
            status, _, _ = yield deferToThread(
                https_get, self.port("https"), self.ca, "secure.example.com"
            )
            self.assertEqual(status, 502)
            failures = [
                e
                for e in self.events
                if e.get("log_format", "").startswith("connect to {backend}")
            ]
            self.assertEqual(len(failures), 1, self.events)
            self.assertEqual(failures[0]["backend"], f"127.0.0.1:{self.secure_port}")
            self.assertIn(reason, failures[0]["reason"])
            pool = self.service.registry.get("secure")
            self.assertEqual(pool.backends[0].failures_total, 1)

    @inlineCallbacks
    def test_reload_applies_new_backend_tls_settings(self) -> Any:
        """
        A pool whose backend TLS settings change on reload verifies its
        backends with the new ones from the next connection on.
        """
        yield self.service.stopService()
        self.service = self.start(
            self.config(secure='server_name = "wrong.internal", ca = "ca.pem"')
        )
        status, _, _ = yield deferToThread(
            https_get, self.port("https"), self.ca, "secure.example.com"
        )
        self.assertEqual(status, 502)
        (self.dir / "rproxy.toml").write_text(self.config())
        self.assertEqual(self.service.reload(), [])
        status, _, _ = yield deferToThread(
            https_get, self.port("https"), self.ca, "secure.example.com"
        )
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_reload_serves_new_certificates_to_new_handshakes_only(self) -> Any:
        """
        After the files change and the config is reloaded, a new
        handshake gets the new certificate while an open connection goes on;
        a broken file is refused and the old certificate stays.
        """
        port = self.port("https")
        context = client_context(self.ca)

        def connect() -> ssl.SSLSocket:
            raw = socket.create_connection(("127.0.0.1", port), 10)
            return context.wrap_socket(raw, server_hostname="api.example.com")

        held = yield deferToThread(connect)
        self.addCleanup(held.close)
        old = held.getpeercert()
        renewed = self.ca.issue_cert("api.example.com", "api2.example.com")
        write_pair(self.dir, "api", renewed)
        self.assertEqual(self.service.reload(), [])
        peer, _, _ = yield deferToThread(
            handshake, port, client_context(self.ca), "api.example.com"
        )
        self.assertEqual(names_of(peer), {"api.example.com", "api2.example.com"})
        self.assertNotEqual(peer["serialNumber"], old["serialNumber"])

        def use_held() -> bytes:
            held.sendall(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
            return held.recv(4096)

        self.assertIn(b"200 OK", (yield deferToThread(use_held)))

        (self.dir / "api.key").write_bytes(
            self.other_ca.issue_cert("x.y").private_key_pem.bytes()
        )
        self.assertNotEqual(self.service.reload(), [])
        peer, _, _ = yield deferToThread(
            handshake, port, client_context(self.ca), "api.example.com"
        )
        self.assertEqual(names_of(peer), {"api.example.com", "api2.example.com"})


def _pkey(cert: trustme.LeafCert) -> Any:
    from OpenSSL import crypto

    return crypto.load_privatekey(crypto.FILETYPE_PEM, cert.private_key_pem.bytes())


def _x509(cert: trustme.LeafCert) -> Any:
    from OpenSSL import crypto

    return crypto.load_certificate(crypto.FILETYPE_PEM, cert.cert_chain_pems[0].bytes())


class HealthOverTLSTests(TestCase):
    """
    Active health checks reach a TLS backend with the pool's TLS settings.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("backend.internal")
        options = CertificateOptions(privateKey=_pkey(cert), certificate=_x509(cert))
        port = yield SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(Site(Echoes("secure")))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.ca_file = str(Path(temporary.name) / "ca.pem")
        Path(self.ca_file).write_bytes(self.ca.cert_pem.bytes())

    def backend(self, server_name: str) -> Backend:
        return Backend(
            "127.0.0.1",
            self.port,
            tls=backend_tls(server_name, ca=self.ca_file),
        )

    @inlineCallbacks
    def test_checks_pass_for_the_right_name_and_fail_for_a_wrong_one(self) -> Any:
        """
        TCP and HTTP checks pass against the backend verified as
        C{backend.internal} and fail, naming the verification problem, as
        C{wrong.internal}.
        """
        for kind in ("tcp", "http"):
            check = build_check(reactor, HealthConfig(check=kind, timeout=5.0))
            assert check is not None
            yield check.check(self.backend("backend.internal"))
            failure = yield self.assertFailure(
                check.check(self.backend("wrong.internal")), Exception
            )
            self.assertIn("wrong.internal", describe_failure(Failure(failure)))
