"""AcmeService against Pebble, the ACME test server, on 127.0.0.1.

The HTTP-01 validations are real: Pebble resolves the test domains through
an in-process twisted.names server to 127.0.0.1 and fetches
C{/.well-known/acme-challenge/TOKEN} from an HTTP server here that answers
from a L{Challenges}."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import stat
import tempfile
import tomllib
from typing import Any

import attrs
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rproxy.acme.challenges import Challenges
from rproxy.acme.service import AcmeService
from rproxy.config import AcmeConfig, parse_config
from rproxy.service import ProxyService
from rproxy.tls import ServerCertificate
from tests.integration.helpers import free_port
from tests.integration.pebble import PEBBLE, LoopbackZone, Pebble, listen_dns

if not os.path.exists(PEBBLE):
    pytest.skip(
        f"{PEBBLE} is missing (Debian package 'pebble'; .ci/run installs it)",
        allow_module_level=True,
    )

DOMAINS = ("rproxy-test.example", "www.rproxy-test.example")


class ChallengeAnswers(Resource):
    """Answers GET /.well-known/acme-challenge/TOKEN from a L{Challenges},
    404 otherwise; records what was asked."""

    isLeaf = True

    def __init__(self, challenges: Challenges) -> None:
        super().__init__()
        self.challenges = challenges
        self.asked: list[tuple[bytes, bytes | None]] = []

    def render_GET(self, request: Request) -> bytes:
        answer = self.challenges.answer(request.path)
        self.asked.append((request.path, request.getHeader(b"host")))
        if answer is None:
            request.setResponseCode(404)
            return b"no such challenge"
        return answer


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class PebbleTestCase(TestCase):
    """Runs Pebble and the DNS server for the test domains; collects the log
    events."""

    timeout = 60

    async def start_pebble(self, http_port: int) -> None:
        """Start Pebble validating HTTP-01 on 127.0.0.1:C{http_port}."""
        self.workdir = tempfile.mkdtemp(prefix="rproxy-acme-")
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.zone = LoopbackZone(DOMAINS)
        dns = listen_dns(reactor, self.zone)
        self.addCleanup(dns.stopListening)
        self.pebble = Pebble(self.workdir, http_port, dns.getHost().port)
        self.addCleanup(self.pebble.stop, reactor)
        await self.pebble.start(reactor)

    def log(self) -> str:
        """What rproxy and Pebble logged, for failure messages."""
        ours = [
            formatEvent(e)
            for e in self.events
            if e.get("log_namespace", "").startswith("rproxy")
        ]
        return "\n".join([*ours, "Pebble:", self.pebble.output])

    def pebble_root(self) -> Deferred[x509.Certificate]:
        """Pebble's root certificate, from its management interface."""

        def fetch() -> x509.Certificate:
            response = requests.get(
                self.pebble.roots, verify=self.pebble.ca, timeout=10
            )
            response.raise_for_status()
            return x509.load_pem_x509_certificate(response.content)

        return deferToThread(fetch)

    def assertIssuedByPebble(
        self, certificate: ServerCertificate, root: x509.Certificate
    ) -> None:
        """The certificate chains to Pebble's root and is valid for every
        domain."""
        for domain in DOMAINS:
            verifier = (
                PolicyBuilder()
                .store(Store([root]))
                .time(datetime.datetime.now(datetime.UTC))
                .build_server_verifier(x509.DNSName(domain))
            )
            verifier.verify(certificate.certificate, list(certificate.chain))


class AcmeServicePebbleTests(PebbleTestCase):
    """L{AcmeService} alone, its challenges answered by a twisted.web
    server."""

    async def setUp(self) -> None:
        self.challenges = Challenges()
        self.answers = ChallengeAnswers(self.challenges)
        site = Site(self.answers)
        site.noisy = False
        http = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(http.stopListening)
        await self.start_pebble(http.getHost().port)
        self.storage = os.path.join(self.workdir, "acme")
        self.config = AcmeConfig(
            directory=self.pebble.directory,
            storage=self.storage,
            domains=DOMAINS,
            email="admin@rproxy-test.example",
            ca=self.pebble.ca,
            renew_before=30.0,
        )

    def service(
        self, config: AcmeConfig
    ) -> tuple[AcmeService, list[ServerCertificate]]:
        installed: list[ServerCertificate] = []
        service = AcmeService(
            config, reactor, self.challenges, installed.append, poll_interval=0.05
        )

        def stop() -> None:
            if service.running:
                service.stopService()

        self.addCleanup(stop)
        return service, installed

    async def test_obtains_then_keeps_then_renews(self) -> None:
        """A first check obtains a certificate for every domain through real
        HTTP-01 validations, stores it and installs it; a second check leaves
        it; a restart with renew_before past its lifetime installs the
        stored one, then renews it with the same account."""
        service, installed = self.service(self.config)
        service.startService()
        await service.check()

        self.assertEqual(len(installed), 1, self.log())
        first = installed[0]
        self.assertEqual(set(first.names), set(DOMAINS))
        self.assertIs(service.certificate, first)
        self.assertEqual(service.failures, 0)
        root = await self.pebble_root()
        self.assertIssuedByPebble(first, root)
        # Pebble asked for each domain's challenge by its name, and got it.
        hosts = {
            host.split(b":")[0].decode()
            for path, host in self.answers.asked
            if path.startswith(b"/.well-known/acme-challenge/") and host
        }
        self.assertEqual(hosts, set(DOMAINS))
        self.assertIn(("rproxy-test.example", "A"), self.zone.queries)
        self.assertEqual(len(self.challenges), 0, "challenges left published")

        fullchain = os.path.join(
            self.storage, "certificates", DOMAINS[0], "fullchain.pem"
        )
        privkey = os.path.join(self.storage, "certificates", DOMAINS[0], "privkey.pem")
        account_key = os.path.join(self.storage, "account", "key.pem")
        registration = os.path.join(self.storage, "account", "registration.json")
        self.assertEqual(mode(self.storage), 0o700)
        self.assertEqual(mode(os.path.dirname(account_key)), 0o700)
        self.assertEqual(mode(os.path.dirname(fullchain)), 0o700)
        self.assertEqual(mode(account_key), 0o600)
        self.assertEqual(mode(privkey), 0o600)
        self.assertEqual(mode(registration), 0o600)
        with open(fullchain, "rb") as f, open(privkey, "rb") as k:
            stored = ServerCertificate.from_pem(f.read(), k.read(), fullchain)
        self.assertEqual(
            stored.certificate.serial_number, first.certificate.serial_number
        )
        with open(account_key, "rb") as f:
            account_key_pem = f.read()
        with open(registration, "rb") as f:
            account_uri = json.load(f)["uri"]

        asked = len(self.answers.asked)
        await service.check()
        self.assertEqual(len(installed), 1, "a valid certificate was replaced")
        self.assertEqual(len(self.answers.asked), asked)
        service.stopService()

        renewing, reinstalled = self.service(
            attrs.evolve(self.config, renew_before=100 * 365.0)
        )
        renewing.startService()
        # The stored certificate is served at once, before any ACME request.
        self.assertEqual(len(reinstalled), 1)
        self.assertEqual(
            reinstalled[0].certificate.serial_number,
            first.certificate.serial_number,
        )
        await renewing.check()

        self.assertEqual(len(reinstalled), 2, self.log())
        renewed = reinstalled[1]
        self.assertNotEqual(
            renewed.certificate.serial_number, first.certificate.serial_number
        )
        self.assertNotEqual(renewed.key.public_key(), first.key.public_key())
        self.assertIssuedByPebble(renewed, root)
        with open(fullchain, "rb") as f, open(privkey, "rb") as k:
            stored = ServerCertificate.from_pem(f.read(), k.read(), fullchain)
        self.assertEqual(
            stored.certificate.serial_number, renewed.certificate.serial_number
        )
        with open(account_key, "rb") as f:
            self.assertEqual(f.read(), account_key_pem, "a new account key was made")
        with open(registration, "rb") as f:
            self.assertEqual(json.load(f)["uri"], account_uri, "another account")
        self.assertEqual(len(self.challenges), 0, "challenges left published")

    async def test_failed_validation_is_logged_and_retried(self) -> None:
        """When Pebble cannot fetch the challenge (the domain does not
        resolve), the check fails softly: nothing is installed, the
        challenges are withdrawn, a retry is scheduled a minute later."""
        service, installed = self.service(
            attrs.evolve(self.config, domains=("unknown.rproxy-test.example",))
        )
        service.startService()
        await service.check()
        self.assertEqual(installed, [])
        self.assertEqual(service.failures, 1)
        assert service.next_retry is not None
        self.assertTrue(59.0 < service.next_retry - reactor.seconds() <= 60.0)
        [event] = [
            e
            for e in self.events
            if e.get("log_namespace") == "rproxy.acme"
            and e["log_level"] == LogLevel.error
        ]
        self.assertEqual(event["retry"], 60.0)
        self.assertIn(
            "validation of unknown.rproxy-test.example failed", event["reason"]
        )
        self.assertEqual(len(self.challenges), 0, "challenges left published")
        service.stopService()
        self.assertIsNone(service.next_retry)


def handshake(port: int, server_name: str, root: x509.Certificate) -> dict[str, Any]:
    """A TLS handshake with 127.0.0.1:C{port} sending C{server_name}, the
    server's certificate verified against C{root} for that name; its peer
    certificate as the ssl module describes it."""
    context = ssl.create_default_context(
        cadata=root.public_bytes(serialization.Encoding.PEM).decode()
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    return peer


class ProxyServicePebbleTests(PebbleTestCase):
    """The whole proxy with C{[acme]}: its plain HTTP listener answers
    Pebble's challenges and its TLS listener then serves the certificate."""

    async def setUp(self) -> None:
        self.http_port = free_port()
        await self.start_pebble(self.http_port)
        unused = free_port()
        text = f"""
[pools.web]
backends = ["127.0.0.1:{unused}"]
health.check = "none"

[[listeners]]
name = "https"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
[listeners.tls]

[[listeners]]
name = "http"
protocol = "http"
listen = "tcp:{self.http_port}:interface=127.0.0.1"
pool = "web"

[acme]
directory = "{self.pebble.directory}"
storage = "acme"
domains = {json.dumps(list(DOMAINS))}
ca = "{self.pebble.ca}"
"""
        path = os.path.join(self.workdir, "rproxy.toml")
        with open(path, "w") as f:
            f.write(text)
        self.config = parse_config(tomllib.loads(text), path)
        self.proxy = ProxyService(self.config, reactor)

    async def test_tls_listener_serves_the_obtained_certificate(self) -> None:
        """At start the proxy obtains a certificate over HTTP-01 answered by
        its plain listener, and its TLS listener serves it to clients asking
        for either domain."""
        acme = self.proxy.acme
        assert isinstance(acme, AcmeService)
        acme.poll_interval = 0.05
        self.proxy.startService()
        self.addCleanup(self.proxy.stopService)
        # Joins the check startService began; fires once it has installed.
        await acme.check()
        self.assertIsNotNone(acme.certificate, self.log())
        listening = self.proxy.listeners["https"].port
        assert listening is not None
        port = listening.getHost().port  # type: ignore[attr-defined]
        root = await self.pebble_root()
        for domain in DOMAINS:
            peer = await deferToThread(handshake, port, domain, root)
            names = {value for kind, value in peer["subjectAltName"] if kind == "DNS"}
            self.assertEqual(names, set(DOMAINS))
        self.assertEqual(
            os.path.dirname(acme.certificate.source),  # type: ignore[union-attr]
            os.path.join(self.workdir, "acme", "certificates", DOMAINS[0]),
        )
