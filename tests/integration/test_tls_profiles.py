"""TLS profiles over real sockets on 127.0.0.1: which versions, cipher
suites and groups a listener accepts, tried one at a time by a real client.

The proxy is a L{ProxyService} built from a TOML config in this process, an
http listener per profile holding an RSA and an ECDSA certificate (by SNI:
C{rsa.example.com}, C{ecdsa.example.com}), so that both kinds of ECDHE
suites and static RSA key exchange can be offered.  The client is
pyOpenSSL on a blocking socket in a thread, at OpenSSL security level 0 so
that it offers whatever it is told to: what fails is the server refusing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import trustme
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from rproxy.config import parse_config
from rproxy.service import ProxyService

#: What the default ("intermediate") profile negotiates in TLS 1.2, by the
#: certificate's key: ECDHE key exchange with an AEAD cipher, nothing else.
INTERMEDIATE_TLS12 = {
    "rsa": {
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    },
    "ecdsa": {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    },
}

#: What the old profile negotiates in TLS 1.2 (where the local OpenSSL
#: knows the suite: Debian's lacks DES-CBC3-SHA), by the certificate's key.
OLD_TLS12 = {
    "rsa": INTERMEDIATE_TLS12["rsa"]
    | {
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA256",
        "AES256-SHA256",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    },
    "ecdsa": INTERMEDIATE_TLS12["ecdsa"]
    | {
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-ECDSA-AES256-SHA",
    },
}

#: Suites the default profile must refuse, which must be among those tried
#: (so that the test shows them refused rather than never offered): CBC
#: with ECDHE, static RSA key exchange (GCM and CBC), CCM, DHE.
MUST_BE_REFUSED = (
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-CCM",
    "AES128-CCM",
    "DHE-RSA-AES128-GCM-SHA256",
)

_LIB = Binding.lib
_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}


@frozen
class Outcome:
    """
    One handshake: what was negotiated, or the error if it failed.
    """

    version: str | None = None
    cipher: str | None = None
    group: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.error is None


def client_context(
    version: str,
    *,
    ciphers: str = "ALL",
    tls13: str | None = None,
    groups: str | None = None,
) -> SSL.Context:
    """
    A client context speaking exactly TLS C{version}, offering the OpenSSL
    cipher list C{ciphers} (TLS 1.2 and older), and if given only the TLS
    1.3 suites C{tls13} and only the key-exchange C{groups}; it verifies
    nothing.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(_VERSIONS[version])
    context.set_max_proto_version(_VERSIONS[version])
    context.set_cipher_list(f"{ciphers}:@SECLEVEL=0".encode("ascii"))
    if tls13 is not None:
        context.set_tls13_ciphersuites(tls13.encode("ascii"))
    if groups is not None:
        # pyOpenSSL has no call for a client's list of groups.
        assert _LIB.SSL_CTX_set1_curves_list(context._context, groups.encode()) == 1
    return context


def attempt(port: int, server_name: str, context: SSL.Context) -> Outcome:
    """
    One handshake with the listener on C{port}, sending SNI C{server_name}.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # Blocking, so that pyOpenSSL never sees a would-block, but bounded.
    raw.settimeout(None)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    connection = SSL.Connection(context, raw)
    connection.set_tlsext_host_name(server_name.encode("ascii"))
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except (SSL.Error, OSError) as error:
        return Outcome(error=f"{type(error).__name__}: {error}")
    else:
        return Outcome(
            connection.get_protocol_version_name(),
            connection.get_cipher_name(),
            connection.get_group_name(),
        )
    finally:
        raw.close()


def tls12_suites() -> list[str]:
    """
    Every cipher suite the local OpenSSL knows that TLS 1.2 can use (all but
    the TLS 1.3 ones), at any security level.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    names = SSL.Connection(context, None).get_cipher_list()
    return [name for name in names if not name.startswith("TLS_")]


def sweep(port: int, suites: list[str]) -> dict[str, set[str]]:
    """
    The suites of C{suites} that the listener on C{port} negotiates in TLS
    1.2, each offered alone, against its RSA and its ECDSA certificate.
    """
    agreed: dict[str, set[str]] = {"rsa": set(), "ecdsa": set()}
    for kind, found in agreed.items():
        for suite in suites:
            context = client_context("1.2", ciphers=suite)
            outcome = attempt(port, f"{kind}.example.com", context)
            if outcome.done:
                assert outcome.cipher == suite, (suite, outcome)
                found.add(suite)
    return agreed


def tls10_possible() -> str | None:
    """
    Why the local OpenSSL cannot complete a TLS 1.0 handshake with itself
    at security level 0 (in memory, without rproxy), or None if it can.
    """
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("tls10.test", key_type=trustme.KeyType.RSA)
    server_context = SSL.Context(SSL.TLS_SERVER_METHOD)
    server_context.set_min_proto_version(SSL.TLS1_VERSION)
    server_context.set_cipher_list(b"ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    server_context.use_certificate(
        x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    )
    server_context.use_privatekey(
        serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)  # type: ignore[arg-type]
    )
    return _memory_handshake(server_context, client_context("1.0"))


def _memory_handshake(
    server_context: SSL.Context, client_context: SSL.Context
) -> str | None:
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        waiting = False
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                waiting = True
            except SSL.Error as error:
                return str(error)
        if not waiting:
            return None
        for source, sink in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                sink.bio_write(source.bio_read(65536))
    return "the in-memory handshake did not finish"


class ProfileTests(TestCase):
    """
    One http listener per profile (default, modern, old), each with an RSA
    and an ECDSA certificate.
    """

    timeout = 120

    def setUp(self) -> None:
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.dir = Path(temporary.name)
        ca = trustme.CA()
        for kind, key_type in (
            ("rsa", trustme.KeyType.RSA),
            ("ecdsa", trustme.KeyType.ECDSA),
        ):
            leaf = ca.issue_cert(f"{kind}.example.com", key_type=key_type)
            (self.dir / f"{kind}.pem").write_bytes(
                leaf.private_key_and_cert_chain_pem.bytes()
            )
        self.service = self.start(self.config())

    def config(self, **profiles: str) -> str:
        """
        Listeners C{default} (no profile key unless given), C{modern} and
        C{old}; C{profiles} maps a listener to the C{profile} line to use.
        """
        text = """
[pools.web]
backends = ["127.0.0.1:1"]
health.check = "none"
"""
        lines = {
            "default": "",
            "modern": 'profile = "modern"',
            "old": 'profile = "old"',
        }
        lines.update(profiles)
        for name, line in lines.items():
            text += f"""
[[listeners]]
name = "{name}"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "web"
[listeners.tls]
certificates = [{{ cert = "rsa.pem" }}, {{ cert = "ecdsa.pem" }}]
{line}
"""
        return text

    def start(self, text: str) -> ProxyService:
        path = self.dir / "rproxy.toml"
        path.write_text(text)
        service = ProxyService(parse_config(tomllib.loads(text), str(path)), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def port(self, name: str) -> int:
        port = self.service.listeners[name].port
        assert port is not None
        return port.getHost().port  # type: ignore[no-any-return]

    @inlineCallbacks
    def test_default_profile_negotiates_only_ecdhe_aead_in_tls12(self) -> Any:
        """
        Every TLS 1.2 suite the local OpenSSL knows, offered alone against
        the RSA and then the ECDSA certificate: exactly the ECDHE + AEAD
        suites of the intermediate profile succeed; CBC, static RSA, CCM
        and DHE suites are among those refused.
        """
        suites = tls12_suites()
        for name in MUST_BE_REFUSED:
            self.assertIn(name, suites)
        agreed = yield deferToThread(sweep, self.port("default"), suites)
        self.assertEqual(agreed, INTERMEDIATE_TLS12)

    @inlineCallbacks
    def test_tls13_suites_are_the_three_aead_ones(self) -> Any:
        """
        In TLS 1.3 each of AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305,
        offered alone, is served (by every profile); the CCM suites, which
        OpenSSL has but does not enable, are refused.
        """
        served = (
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        )
        refused = ("TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")

        def run() -> dict[tuple[str, str], Outcome]:
            return {
                (listener, suite): attempt(
                    self.port(listener),
                    "ecdsa.example.com",
                    client_context("1.3", tls13=suite),
                )
                for listener in ("default", "modern", "old")
                for suite in (*served, *refused)
            }

        outcomes = yield deferToThread(run)
        for (listener, suite), outcome in outcomes.items():
            if suite in served:
                self.assertEqual(outcome.cipher, suite, (listener, outcome))
            else:
                self.assertFalse(outcome.done, (listener, suite, outcome))

    @inlineCallbacks
    def test_old_profile_negotiates_mozillas_old_list_in_tls12(self) -> Any:
        """
        The same sweep against the old profile: exactly Mozilla's old TLS
        1.2 list without its DHE suites (CBC, static RSA key exchange), as
        far as the local OpenSSL knows them.
        """
        suites = tls12_suites()
        agreed = yield deferToThread(sweep, self.port("old"), suites)
        known = set(suites)
        self.assertEqual(
            agreed, {kind: names & known for kind, names in OLD_TLS12.items()}
        )

    @inlineCallbacks
    def test_every_profile_offers_x25519_p256_p384_only(self) -> Any:
        """
        In TLS 1.2 (default and old) and 1.3 (all three), a client offering
        only X25519, P-256 or P-384 is served with that group; one offering
        only X448, P-521 or (in TLS 1.3) ffdhe2048 fails its handshake, but
        for the old profile in TLS 1.2, which falls back to static RSA key
        exchange without a group.  (The RSA certificate: in TLS 1.2 the
        client's groups also limit the curve of an ECDSA one.)
        """
        accepted = {"X25519": "x25519", "P-256": "secp256r1", "P-384": "secp384r1"}
        refused = {"1.2": ("X448", "P-521"), "1.3": ("X448", "P-521", "ffdhe2048")}
        cases = [
            (listener, version)
            for listener in ("default", "modern", "old")
            for version in ("1.2", "1.3")
            if (listener, version) != ("modern", "1.2")
        ]

        def run() -> dict[tuple[str, str, str], Outcome]:
            return {
                (listener, version, group): attempt(
                    self.port(listener),
                    "rsa.example.com",
                    client_context(version, groups=group),
                )
                for listener, version in cases
                for group in (*accepted, *refused[version])
            }

        outcomes = yield deferToThread(run)
        for listener, version in cases:
            for group, negotiated in accepted.items():
                outcome = outcomes[listener, version, group]
                self.assertEqual(
                    (outcome.version, outcome.group),
                    (f"TLSv{version}", negotiated),
                    (listener, version, group, outcome),
                )
            for group in refused[version]:
                outcome = outcomes[listener, version, group]
                if (listener, version) == ("old", "1.2"):
                    # No group in common: static RSA key exchange instead.
                    self.assertEqual(
                        (outcome.group, outcome.cipher), (None, "AES128-GCM-SHA256")
                    )
                else:
                    self.assertFalse(outcome.done, (listener, version, group, outcome))
                    self.assertIn("Error", str(outcome.error))

    @inlineCallbacks
    def test_modern_refuses_tls12_and_serves_tls13(self) -> Any:
        """
        The modern profile refuses a TLS 1.2 client (even with an ECDHE +
        AEAD suite) and serves TLS 1.3; the default listener serves the same
        TLS 1.2 client.
        """
        suite = "ECDHE-ECDSA-AES128-GCM-SHA256"

        def run() -> tuple[Outcome, Outcome, Outcome]:
            modern, default = self.port("modern"), self.port("default")
            name = "ecdsa.example.com"
            return (
                attempt(modern, name, client_context("1.2", ciphers=suite)),
                attempt(modern, name, client_context("1.3")),
                attempt(default, name, client_context("1.2", ciphers=suite)),
            )

        tls12, tls13, default12 = yield deferToThread(run)
        self.assertFalse(tls12.done, tls12)
        self.assertEqual(tls13.version, "TLSv1.3")
        self.assertEqual(default12.cipher, suite)

    @inlineCallbacks
    def test_old_accepts_cbc_in_tls12(self) -> Any:
        """
        The old profile negotiates a CBC suite with ECDHE and one with static
        RSA key exchange in TLS 1.2, which the default profile refuses.
        """

        def run() -> dict[tuple[str, str], Outcome]:
            return {
                (listener, suite): attempt(
                    self.port(listener),
                    "rsa.example.com",
                    client_context("1.2", ciphers=suite),
                )
                for listener in ("old", "default")
                for suite in ("ECDHE-RSA-AES128-SHA", "AES128-SHA")
            }

        outcomes = yield deferToThread(run)
        for suite in ("ECDHE-RSA-AES128-SHA", "AES128-SHA"):
            old = outcomes["old", suite]
            self.assertEqual((old.version, old.cipher), ("TLSv1.2", suite))
            self.assertFalse(outcomes["default", suite].done)

    @inlineCallbacks
    def test_old_accepts_tls10_and_tls11(self) -> Any:
        """
        The old profile serves a TLS 1.0 and a TLS 1.1 client with a CBC
        suite (when the local OpenSSL can speak TLS 1.0 at all); the default
        one refuses them.
        """
        reason = tls10_possible()
        if reason is not None:
            raise SkipTest(f"this OpenSSL cannot do TLS 1.0 at any level: {reason}")
        suite = "ECDHE-RSA-AES128-SHA"

        def run() -> dict[tuple[str, str], Outcome]:
            return {
                (listener, version): attempt(
                    self.port(listener),
                    "rsa.example.com",
                    client_context(version, ciphers=suite),
                )
                for listener in ("old", "default")
                for version in ("1.0", "1.1")
            }

        outcomes = yield deferToThread(run)
        for version, name in (("1.0", "TLSv1"), ("1.1", "TLSv1.1")):
            old = outcomes["old", version]
            self.assertEqual((old.version, old.cipher), (name, suite))
            self.assertFalse(outcomes["default", version].done)

    @inlineCallbacks
    def test_reload_applies_a_changed_profile(self) -> Any:
        """
        After the default listener's profile becomes "modern" and the config
        is reloaded, a new TLS 1.2 handshake on it is refused; setting it
        back to "old" makes it accept a CBC suite.
        """
        port = self.port("default")
        cbc = "ECDHE-RSA-AES128-SHA"

        def run() -> tuple[Outcome, Outcome]:
            return (
                attempt(port, "rsa.example.com", client_context("1.2")),
                attempt(port, "rsa.example.com", client_context("1.2", ciphers=cbc)),
            )

        before, before_cbc = yield deferToThread(run)
        self.assertTrue(before.done, before)
        self.assertFalse(before_cbc.done, before_cbc)

        (self.dir / "rproxy.toml").write_text(self.config(default='profile = "modern"'))
        self.assertEqual(self.service.reload(), [])
        self.assertEqual(self.port("default"), port)
        modern, _ = yield deferToThread(run)
        self.assertFalse(modern.done, modern)

        (self.dir / "rproxy.toml").write_text(self.config(default='profile = "old"'))
        self.assertEqual(self.service.reload(), [])
        old, old_cbc = yield deferToThread(run)
        self.assertTrue(old.done, old)
        self.assertEqual(old_cbc.cipher, cbc)
