"""PROXY protocol over real sockets on 127.0.0.1: rproxy built from configs
in this process, accepting headers from raw-socket clients and sending them
to in-process Twisted backends and to a real nginx (C{listen ...
proxy_protocol}); clients run in threads."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import trustme
from OpenSSL import crypto
from twisted.internet import reactor, tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from rproxy._tracking import ConnectionTracker
from rproxy.backends import Backend
from rproxy.config import parse_config
from rproxy.health import HTTPCheck, TCPCheck
from rproxy.proxyprotocol import NeedMore, ProxyHeaderError, encode, parse
from rproxy.proxyprotocol.accept import ProxyHeaderFactory
from rproxy.service import ProxyService
from tests.integration.helpers import drain, free_port, read_head, wait_for_port


@implementer(IHalfCloseableProtocol)
class HeaderEcho(Protocol):
    """A backend that reads a PROXY header with rproxy's parser, answers
    with what it carried (C{source destination}, or C{LOCAL}), then echoes;
    it closes once the client has sent everything."""

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def __init__(self) -> None:
        self.buffer = b""
        self.done = False

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        self.buffer += data
        try:
            header = parse(self.buffer)
        except ProxyHeaderError as error:
            self.transport.write(f"bad: {error}\n".encode())  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if isinstance(header, NeedMore):
            return
        self.done = True
        if header.source is None or header.destination is None:
            line = header.command
        else:
            line = "v{} {}:{} {}:{}".format(
                header.version, *header.source, *header.destination
            )
        self.transport.write(line.encode() + b"\n" + self.buffer[header.length :])  # type: ignore[union-attr]


class WhoResource(Resource):
    """Answers with the client address twisted.web sees, the id of the
    connection, and the X-Forwarded-For it got."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        client = request.getClientAddress()
        forwarded = request.getHeader(b"x-forwarded-for") or b"-"
        return b"%s:%d conn=%d xff=%s" % (
            str(getattr(client, "host", "")).encode(),
            getattr(client, "port", 0),
            id(request.channel),
            forwarded,
        )


def exchange(
    port: int, data: bytes, source: str = "127.0.0.1", half_close: bool = True
) -> bytes:
    """Send C{data} from C{source} to 127.0.0.1:C{port}, shut the write side
    and read until the peer closes; C{b""} if it closed or reset first."""
    with socket.socket() as sock:
        sock.settimeout(20)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return drain(sock)
        except OSError:
            # Closed by the proxy first: nothing came back.
            return b""


def http_get(sock: socket.socket, path: str = "/") -> bytes:
    """One keep-alive GET on C{sock}; the body (Content-Length framed)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    head, rest = read_head(sock)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        rest += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return rest[:length]


class _ProxyCase(TestCase):
    timeout = 60

    def start(self, text: str) -> ProxyService:
        config = parse_config(tomllib.loads(text), "test.toml")
        service = ProxyService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def port_of(self, service: ProxyService, listener: str = "front") -> int:
        bound = service.listeners[listener].bound
        port: int = getattr(bound, "port", 0)
        return port

    def web_backend(self, accept_proxy: bool = False) -> tuple[int, Any]:
        """A twisted.web backend; with C{accept_proxy}, behind rproxy's own
        PROXY header reader (trusting 127.0.0.1)."""
        site = Site(WhoResource())
        site.noisy = False
        factory: Any = site
        if accept_proxy:
            factory = ProxyHeaderFactory(
                site, ["127.0.0.1"], reactor, connections=ConnectionTracker()
            )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    def echo_backend(self) -> int:
        factory = Factory.forProtocol(HeaderEcho)
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)


HTTP_ACCEPT = """
[pools.web]
backends = ["127.0.0.1:{backend}"]
[pools.web.health]
check = "none"
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
accept_proxy = true
trusted_proxies = [{trusted}]
"""


class AcceptTests(_ProxyCase):
    def setUp(self) -> None:
        self.backend, self.site = self.web_backend()
        self.connections = 0
        original = self.site.buildProtocol

        def counting(addr: Any) -> Any:
            self.connections += 1
            return original(addr)

        self.site.buildProtocol = counting

    def listener(self, trusted: str = '"127.0.0.1"') -> int:
        service = self.start(HTTP_ACCEPT.format(backend=self.backend, trusted=trusted))
        return self.port_of(service)

    @inlineCallbacks
    def test_v1_and_v2_headers_set_x_forwarded_for(self) -> Any:
        """The address a v1 or v2 header carries is the client's in the
        X-Forwarded-For the backend gets."""
        port = self.listener()
        request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        v1 = encode("v1", ("203.0.113.9", 51000), ("198.51.100.1", 80))
        v2 = encode("v2", ("2001:db8::9", 51000), ("2001:db8::1", 80))
        one = yield deferToThread(exchange, port, v1 + request)
        two = yield deferToThread(exchange, port, v2 + request)
        self.assertTrue(one.startswith(b"HTTP/1.1 200"), one)
        self.assertTrue(one.endswith(b"xff=203.0.113.9"), one)
        self.assertTrue(two.endswith(b"xff=2001:db8::9"), two)

    @inlineCallbacks
    def test_untrusted_sender_is_closed_without_a_backend(self) -> Any:
        """With 127.0.0.1 not trusted, a client's header and request get no
        answer and no backend connection."""
        port = self.listener('"10.0.0.0/8"')
        header = encode("v1", ("203.0.113.9", 51000), ("198.51.100.1", 80))
        answer = yield deferToThread(
            exchange, port, header + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(answer, b"")
        self.assertEqual(self.connections, 0)

    @inlineCallbacks
    def test_missing_header_is_closed_without_a_backend(self) -> Any:
        """A trusted client that sends a plain request is closed unanswered."""
        port = self.listener()
        answer = yield deferToThread(
            exchange, port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(answer, b"")
        self.assertEqual(self.connections, 0)


TCP_SEND = """
[pools.p]
backends = ["127.0.0.1:{backend}"]
send_proxy = "{version}"
[pools.p.health]
check = "{check}"
interval = 0.2
[[listeners]]
name = "front"
protocol = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "p"
"""


class SendTCPTests(_ProxyCase):
    @inlineCallbacks
    def test_twisted_backend_parses_v1_and_v2(self) -> Any:
        """A TCP pool's backend reads a header naming the client's address
        and port and the listener's, then the client's bytes."""
        backend = self.echo_backend()
        for version in ("v1", "v2"):
            service = self.start(
                TCP_SEND.format(backend=backend, version=version, check="tcp")
            )
            port = self.port_of(service)

            def run(port: int = port) -> tuple[bytes, int]:
                with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                    sock.sendall(b"ping")
                    sock.shutdown(socket.SHUT_WR)
                    return drain(sock), sock.getsockname()[1]

            answer, client_port = yield deferToThread(run)
            self.assertEqual(
                answer,
                f"{version} 127.0.0.1:{client_port} 127.0.0.1:{port}\nping".encode(),
            )
            yield service.stopService()


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{
            return 200 "$proxy_protocol_addr:$proxy_protocol_port";
        }}
    }}
}}
"""


class NginxTests(_ProxyCase):
    """rproxy in front of nginx listening with C{proxy_protocol}."""

    def setUp(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise SkipTest("nginx is not installed (.ci/run installs it)")
        root = Path(tempfile.mkdtemp(prefix="rproxy-nginx-pp-"))
        self.addCleanup(shutil.rmtree, root, True)
        self.nginx_port = free_port()
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=self.nginx_port))
        process = subprocess.Popen(
            [nginx, "-p", str(root), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(process.wait, 30)
        self.addCleanup(process.terminate)
        wait_for_port(self.nginx_port)

    @inlineCallbacks
    def test_tcp_pool_sends_v1_and_v2_to_nginx(self) -> Any:
        """nginx reads the client's address and port from rproxy's v1 and v2
        headers."""
        for version in ("v1", "v2"):
            service = self.start(
                TCP_SEND.format(backend=self.nginx_port, version=version, check="tcp")
            )
            port = self.port_of(service)

            def run(port: int = port) -> tuple[bytes, int]:
                with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
                    return drain(sock), sock.getsockname()[1]

            answer, client_port = yield deferToThread(run)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), (version, answer))
            self.assertTrue(
                answer.endswith(f"\r\n\r\n127.0.0.1:{client_port}".encode()),
                (version, answer),
            )
            yield service.stopService()

    @inlineCallbacks
    def test_health_checks_send_the_local_form(self) -> Any:
        """TCP and HTTP checks of a send_proxy pool pass against nginx; an
        HTTP check without the header does not."""
        backend = Backend("127.0.0.1", self.nginx_port)
        for version in ("v1", "v2"):
            yield TCPCheck(reactor, send_proxy=version, timeout=5).check(backend)
            yield HTTPCheck(reactor, send_proxy=version, timeout=5).check(backend)
        plain = HTTPCheck(reactor, timeout=5).check(backend)
        yield self.assertFailure(plain, Exception)


HTTP_SEND = """
[pools.web]
backends = ["127.0.0.1:{backend}"]
send_proxy = "v2"
[pools.web.health]
check = "none"
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
"""


class SendHTTPTests(_ProxyCase):
    @inlineCallbacks
    def test_clients_never_share_a_backend_connection(self) -> Any:
        """Two clients (127.0.0.1 and 127.0.0.2), each making requests on
        one keep-alive connection: each client's requests share one backend
        connection announcing that client, and the two never mix."""
        backend, _ = self.web_backend(accept_proxy=True)
        port = self.port_of(self.start(HTTP_SEND.format(backend=backend)))

        def run() -> list[tuple[str, bytes]]:
            socks = {}
            for source in ("127.0.0.1", "127.0.0.2"):
                sock = socket.socket()
                sock.settimeout(20)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", port))
                socks[source] = sock
            seen = []
            try:
                for _ in range(3):
                    for source, sock in socks.items():
                        seen.append((source, http_get(sock)))
            finally:
                for sock in socks.values():
                    sock.close()
            return seen

        seen = yield deferToThread(run)
        connections: dict[str, set[bytes]] = {}
        for source, body in seen:
            client, conn, _ = body.split(b" ", 2)
            self.assertEqual(client.rsplit(b":", 1)[0], source.encode())
            connections.setdefault(source, set()).add(conn)
        self.assertEqual(len(connections["127.0.0.1"]), 1)
        self.assertEqual(len(connections["127.0.0.2"]), 1)
        self.assertNotEqual(connections["127.0.0.1"], connections["127.0.0.2"])


CHAIN_FRONT = """
[pools.next]
backends = ["127.0.0.1:{next}"]
send_proxy = "{version}"
[pools.next.health]
check = "none"
[[listeners]]
name = "front"
protocol = "{protocol}"
listen = "tcp:0:interface=127.0.0.1"
pool = "next"
"""

CHAIN_BACK = """
[pools.last]
backends = ["127.0.0.1:{backend}"]
{send}
[pools.last.health]
check = "none"
[[listeners]]
name = "front"
protocol = "{protocol}"
listen = "tcp:0:interface=127.0.0.1"
pool = "last"
accept_proxy = true
trusted_proxies = ["127.0.0.1"]
"""


class ChainTests(_ProxyCase):
    @inlineCallbacks
    def test_http_chain_keeps_the_original_client(self) -> Any:
        """client (127.0.0.2) -> rproxy (send_proxy) -> rproxy (accept_proxy)
        -> backend: the backend's X-Forwarded-For is the original client,
        though the second rproxy's peer is 127.0.0.1."""
        backend, _ = self.web_backend()
        second = self.start(
            CHAIN_BACK.format(backend=backend, send="", protocol="http")
        )
        text = CHAIN_FRONT.format(
            next=self.port_of(second), version="v1", protocol="http"
        )
        first = self.start(text + "x_forwarded = false\n")
        answer = yield deferToThread(
            exchange,
            self.port_of(first),
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "127.0.0.2",
        )
        self.assertTrue(answer.endswith(b"xff=127.0.0.2"), answer)

    @inlineCallbacks
    def test_tcp_chain_passes_the_client_on(self) -> Any:
        """client (127.0.0.2) -> tcp rproxy (send v2) -> tcp rproxy (accept,
        send v1) -> backend: the last header still names the client and the
        address it connected to."""
        backend = self.echo_backend()
        second = self.start(
            CHAIN_BACK.format(backend=backend, send='send_proxy = "v1"', protocol="tcp")
        )
        first = self.start(
            CHAIN_FRONT.format(next=self.port_of(second), version="v2", protocol="tcp")
        )
        port = self.port_of(first)

        def run() -> tuple[bytes, int]:
            with socket.socket() as sock:
                sock.settimeout(20)
                sock.bind(("127.0.0.2", 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"ping")
                sock.shutdown(socket.SHUT_WR)
                return drain(sock), sock.getsockname()[1]

        answer, client_port = yield deferToThread(run)
        self.assertEqual(
            answer, f"v1 127.0.0.2:{client_port} 127.0.0.1:{port}\nping".encode()
        )


TLS_CONFIG = """
[pools.secure]
backends = ["127.0.0.1:{backend}"]
send_proxy = "v2"
health.check = "none"
tls = {{ server_name = "backend.internal", ca = "{ca}" }}

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "secure"
accept_proxy = true
trusted_proxies = ["127.0.0.1"]
tls = {{ certificates = [{{ cert = "{cert}", key = "{key}" }}] }}
"""


class TLSTests(_ProxyCase):
    """PROXY headers come before TLS on both sides."""

    def setUp(self) -> None:
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.dir = Path(temporary.name)
        self.ca = trustme.CA()

    def tls_backend(self) -> int:
        """An HTTPS backend behind rproxy's PROXY header reader: the header,
        then the handshake."""
        cert = self.ca.issue_cert("backend.internal")
        options = CertificateOptions(
            privateKey=crypto.load_privatekey(
                crypto.FILETYPE_PEM, cert.private_key_pem.bytes()
            ),
            certificate=crypto.load_certificate(
                crypto.FILETYPE_PEM, cert.cert_chain_pems[0].bytes()
            ),
        )
        site = Site(WhoResource())
        site.noisy = False
        factory = ProxyHeaderFactory(
            TLSMemoryBIOFactory(options, False, site),
            ["127.0.0.1"],
            reactor,
            connections=ConnectionTracker(),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    @inlineCallbacks
    def test_header_before_tls_on_both_sides(self) -> Any:
        """A client sends a v1 header, then TLS; the HTTPS backend reads
        rproxy's v2 header before its handshake and sees the carried client
        as its peer (and in X-Forwarded-For)."""
        front = self.ca.issue_cert("front.example.com")
        cert, key = self.dir / "front.pem", self.dir / "front.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in front.cert_chain_pems))
        key.write_bytes(front.private_key_pem.bytes())
        ca = self.dir / "ca.pem"
        ca.write_bytes(self.ca.cert_pem.bytes())
        service = self.start(
            TLS_CONFIG.format(backend=self.tls_backend(), ca=ca, cert=cert, key=key)
        )
        port = self.port_of(service)
        context = ssl.create_default_context()
        self.ca.configure_trust(context)

        def run() -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=20)
            raw.sendall(encode("v1", ("203.0.113.9", 51000), ("198.51.100.1", 443)))
            with context.wrap_socket(raw, server_hostname="front.example.com") as tls:
                tls.sendall(
                    b"GET / HTTP/1.1\r\nHost: front.example.com\r\n"
                    b"Connection: close\r\n\r\n"
                )
                return drain(tls)

        answer = yield deferToThread(run)
        # The backend connection, kept for that client only, was closed when
        # the client went: its TLS close takes a few reactor turns.
        for _ in range(10000):
            if not any(isinstance(s, tcp.Client) for s in reactor.getReaders()):
                break
            yield deferLater(reactor, 0, lambda: None)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        body = answer.split(b"\r\n\r\n", 1)[1]
        self.assertTrue(body.startswith(b"203.0.113.9:51000 "), body)
        self.assertTrue(body.endswith(b"xff=203.0.113.9"), body)
