"""Tests for rproxy.tls: the names a certificate is for, loading PEM files,
picking a certificate by SNI, and real handshakes run in memory through
Twisted's TLS protocol and C{twisted.test.iosim}."""

from __future__ import annotations

import datetime
import ipaddress
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import attrs
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from rproxy.tls import (
    ServerCertificate,
    ServerTLS,
    backend_tls,
    certificate_names,
    load_certificate,
    name_matches,
)
from rproxy.tls.profiles import PROFILES, server_context

CA = trustme.CA()
OTHER_CA = trustme.CA()
KEY = ec.generate_private_key(ec.SECP256R1())


def server_certificate(*names: str, ca: trustme.CA = CA) -> ServerCertificate:
    """
    A certificate for C{names} issued by C{ca}, with its key.
    """
    leaf = ca.issue_cert(*names)
    pem = leaf.private_key_and_cert_chain_pem.bytes()
    return ServerCertificate.from_pem(pem, None, names[0])


A = server_certificate("a.example.com")
B = server_certificate("b.example.com")
WILD = server_certificate("*.example.com")
BACKEND = server_certificate("backend.internal")


def built(
    *, common_name: str | None = None, san: Sequence[x509.GeneralName] | None = None
) -> x509.Certificate:
    """
    A self-signed certificate with the subject C{CN=common_name} (an empty
    subject if None) and, unless None, a subjectAltName extension of C{san}.
    """
    attributes = (
        []
        if common_name is None
        else [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    name = x509.Name(attributes)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2100, 1, 1))
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(san), critical=False
        )
    return builder.sign(KEY, hashes.SHA256())


def served(context: SSL.Context | None) -> x509.Certificate:
    """
    The certificate a server using C{context} presents.
    """
    assert context is not None
    certificate = SSL.Connection(context, None).get_certificate()
    assert certificate is not None
    return certificate.to_cryptography()


# Handshakes in memory -------------------------------------------------------


@implementer(IHandshakeListener)
class Peer(Protocol):
    """
    Records what happens to one side of a TLS connection.
    """

    def __init__(self) -> None:
        self.handshake_done = False
        self.received = b""
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


@attrs.frozen
class Handshake:
    """
    Both sides of a TLS connection after the pump stopped moving bytes.
    """

    client: TLSMemoryBIOProtocol
    server: TLSMemoryBIOProtocol
    client_app: Peer
    server_app: Peer

    @property
    def completed(self) -> bool:
        return self.client_app.handshake_done and self.server_app.handshake_done

    def peer_certificate(self) -> x509.Certificate:
        """
        The certificate the client received.
        """
        certificate = self.client.getPeerCertificate()
        assert certificate is not None
        return certificate.to_cryptography()  # type: ignore[no-any-return]

    def server_name(self) -> bytes | None:
        """
        The SNI the server received.
        """
        return self.server.getHandle().get_servername()  # type: ignore[no-any-return]


def handshake(
    server_creator: IOpenSSLServerConnectionCreator,
    client_creator: IOpenSSLClientConnectionCreator,
) -> Handshake:
    """
    Run a handshake between a client and a server made by the two creators,
    in memory, until no more bytes move.
    """
    clock = Clock()
    client_app, server_app = Peer(), Peer()
    server = TLSMemoryBIOFactory(
        server_creator, False, Factory.forProtocol(lambda: server_app), clock=clock
    ).buildProtocol(None)
    client = TLSMemoryBIOFactory(
        client_creator, True, Factory.forProtocol(lambda: client_app), clock=clock
    ).buildProtocol(None)
    iosim.connect(
        server,
        iosim.makeFakeServer(server),
        client,
        iosim.makeFakeClient(client),
        clock=clock,
    )
    return Handshake(client, server, client_app, server_app)


@implementer(IOpenSSLClientConnectionCreator)
class PlainClient:
    """
    A client that verifies nothing: it sends C{server_name} as SNI (none if
    None), offers the ALPN protocols C{alpn}, and speaks TLS up to
    C{max_version}.
    """

    def __init__(
        self,
        server_name: bytes | None,
        *,
        alpn: Sequence[bytes] = (),
        max_version: int | None = None,
    ) -> None:
        self.server_name = server_name
        self.context = SSL.Context(SSL.TLS_METHOD)
        if alpn:
            self.context.set_alpn_protos(list(alpn))
        if max_version is not None:
            self.context.set_max_proto_version(max_version)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        connection.set_connect_state()
        return connection


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A directory holding C{ca.pem} (L{CA}'s certificate) and C{other-ca.pem}.
    """
    directory = tmp_path_factory.mktemp("certs")
    CA.cert_pem.write_to_path(str(directory / "ca.pem"))
    OTHER_CA.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return directory


# certificate_names ------------------------------------------------------------


def test_names_are_the_san_dns_names_lowercased_once_each_in_order() -> None:
    """The subjectAltName dNSNames, lowercased, duplicates dropped, in order;
    IP addresses and the common name left out."""
    certificate = built(
        common_name="cn.example.com",
        san=[
            x509.DNSName("B.Example.COM"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
            x509.DNSName("a.example.com"),
            x509.DNSName("b.example.com"),
        ],
    )
    assert certificate_names(certificate) == ("b.example.com", "a.example.com")


def test_names_fall_back_to_the_common_name_without_san() -> None:
    """Without a subjectAltName extension the common name is the name."""
    certificate = built(common_name="Only.Example.COM")
    assert certificate_names(certificate) == ("only.example.com",)


def test_names_ignore_the_common_name_when_san_has_no_dns_name() -> None:
    """A subjectAltName with only an IP address leaves no DNS name, even
    with a common name."""
    certificate = built(
        common_name="cn.example.com",
        san=[x509.IPAddress(ipaddress.ip_address("192.0.2.1"))],
    )
    assert certificate_names(certificate) == ()


def test_names_lose_their_trailing_dot() -> None:
    """C{a.example.com.} is C{a.example.com}, also in the common name."""
    assert certificate_names(built(san=[x509.DNSName("a.example.com.")])) == (
        "a.example.com",
    )
    assert certificate_names(built(common_name="c.example.com.")) == ("c.example.com",)


# name_matches -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "server_name", "matches"),
    [
        ("a.example.com", "a.example.com", True),
        ("a.example.com", "A.Example.COM", True),
        ("a.example.com", "a.example.com.", True),
        ("a.example.com", "b.example.com", False),
        ("a.example.com", "x.a.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.EXAMPLE.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "a.example.org", False),
        ("*.example.com", "aexample.com", False),
    ],
)
def test_name_matches_exact_or_one_leftmost_label(
    pattern: str, server_name: str, matches: bool
) -> None:
    """A name covers itself, case-insensitively; a wildcard exactly one
    leftmost non-empty label."""
    assert name_matches(pattern, server_name) is matches


# ServerCertificate.from_pem / load_certificate ----------------------------------


def test_key_in_the_same_pem(tmp_path: Path) -> None:
    """A PEM holding the certificate and its key loads, named by its file,
    for the certificate's names, with no chain under a root CA."""
    leaf = CA.issue_cert("one.example.com", "two.example.com")
    path = tmp_path / "both.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    loaded = load_certificate(str(path))
    assert loaded.names == ("one.example.com", "two.example.com")
    assert loaded.source == str(path)
    assert loaded.certificate == x509.load_pem_x509_certificate(
        leaf.cert_chain_pems[0].bytes()
    )
    assert loaded.chain == ()
    assert loaded.not_after == loaded.certificate.not_valid_after_utc


def test_key_in_a_separate_file(tmp_path: Path) -> None:
    """The key may come from its own file; both files name the source."""
    leaf = CA.issue_cert("one.example.com")
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    loaded = load_certificate(str(cert), str(key))
    assert loaded.names == ("one.example.com",)
    assert loaded.source == f"{cert} (key {key})"


def test_chain_is_kept() -> None:
    """Certificates after the first are the chain, in order."""
    intermediate = CA.create_child_ca()
    leaf = intermediate.issue_cert("chained.example.com")
    loaded = ServerCertificate.from_pem(
        leaf.private_key_and_cert_chain_pem.bytes(), None, "chained.pem"
    )
    assert loaded.chain == (
        x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()),
    )


def test_unreadable_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    """A certificate or key file that cannot be read is named first."""
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match="cannot read") as info:
        load_certificate(str(missing))
    assert str(info.value).startswith(f"{missing}: ")
    cert = tmp_path / "c.pem"
    CA.issue_cert("a.example.com").cert_chain_pems[0].write_to_path(str(cert))
    with pytest.raises(ValueError, match="cannot read") as info:
        load_certificate(str(cert), str(missing))
    assert str(info.value).startswith(f"{missing}: ")


def test_file_without_certificate_is_refused(tmp_path: Path) -> None:
    """A PEM with only a key has no certificate: said, naming the file."""
    path = tmp_path / "key-only.pem"
    CA.issue_cert("a.example.com").private_key_pem.write_to_path(str(path))
    with pytest.raises(ValueError) as info:
        load_certificate(str(path))
    assert str(info.value) == f"{path}: no PEM certificate in it"


def test_file_without_key_is_refused(tmp_path: Path) -> None:
    """A PEM with only a certificate, and no key file, has no key."""
    path = tmp_path / "cert-only.pem"
    CA.issue_cert("a.example.com").cert_chain_pems[0].write_to_path(str(path))
    with pytest.raises(ValueError) as info:
        load_certificate(str(path))
    assert str(info.value) == f"{path}: no PEM private key in it"


def test_unparsable_key_is_refused() -> None:
    """A private key block that does not parse is reported as such."""
    cert = CA.issue_cert("a.example.com").cert_chain_pems[0].bytes()
    bad = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match=r"^c\.pem: cannot read the private key: "):
        ServerCertificate.from_pem(cert, bad, "c.pem")


def test_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    """A key that is not the certificate's is refused, naming both files
    and the certificate's subject."""
    leaf, other = CA.issue_cert("a.example.com"), CA.issue_cert("a.example.com")
    cert, key = tmp_path / "a.pem", tmp_path / "other.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    with pytest.raises(ValueError) as info:
        load_certificate(str(cert), str(key))
    subject = x509.load_pem_x509_certificate(
        leaf.cert_chain_pems[0].bytes()
    ).subject.rfc4514_string()
    assert str(info.value) == (
        f"{cert} (key {key}): the private key does not match the certificate "
        f"({subject})"
    )


def test_certificate_without_dns_name_is_refused(tmp_path: Path) -> None:
    """A certificate for an IP address only names no DNS name to serve."""
    path = tmp_path / "ip.pem"
    CA.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    with pytest.raises(ValueError) as info:
        load_certificate(str(path))
    assert str(info.value) == f"{path}: the certificate names no DNS name"


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """
    Raise TimeoutError in the block if it runs longer than C{seconds}.
    """

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_truncated_key_after_the_certificate_is_refused() -> None:
    """A PEM whose private key lost its END line is a ValueError naming the
    file (not a hang of the config check or the reload)."""
    leaf = CA.issue_cert("a.example.com")
    key = leaf.private_key_pem.bytes()
    truncated = leaf.cert_chain_pems[0].bytes() + key[: key.find(b"-----END")]
    with deadline(0.25), pytest.raises(ValueError, match=r"^cut\.pem: "):
        ServerCertificate.from_pem(truncated, None, "cut.pem")


# ServerTLS.context_for ----------------------------------------------------------


def test_exact_name_wins_over_wildcard() -> None:
    """An exact certificate is picked over a wildcard listed before it."""
    tls = ServerTLS([A, WILD, B])
    assert served(tls.context_for("b.example.com")) == B.certificate
    assert served(tls.context_for("B.Example.COM.")) == B.certificate


def test_wildcard_covers_one_label_up_only() -> None:
    """A name no exact certificate has gets the wildcard one label up;
    two labels up or the bare domain get the default."""
    tls = ServerTLS([A, WILD])
    assert served(tls.context_for("c.example.com")) == WILD.certificate
    assert served(tls.context_for("x.c.example.com")) == A.certificate
    assert served(tls.context_for("example.com")) == A.certificate


def test_first_file_is_the_default() -> None:
    """No SNI, an empty one or an unknown name gets the first certificate."""
    tls = ServerTLS([B, A])
    for name in (None, "", "unknown.test"):
        assert served(tls.context_for(name)) == B.certificate, name


def test_installed_certificate_takes_precedence_for_its_names() -> None:
    """An installed certificate serves its names before the files; other
    names and the default still come from the files."""
    tls = ServerTLS([A, B])
    acme_b = server_certificate("b.example.com", ca=OTHER_CA)
    tls.install(acme_b)
    assert served(tls.context_for("b.example.com")) == acme_b.certificate
    assert served(tls.context_for("a.example.com")) == A.certificate
    assert served(tls.context_for(None)) == A.certificate
    assert tls.certificates == (acme_b, A, B)


def test_install_replaces_the_one_installed_for_the_same_names() -> None:
    """Installing for the same names again replaces the earlier one."""
    tls = ServerTLS([A])
    first = server_certificate("b.example.com", "c.example.com", ca=OTHER_CA)
    second = server_certificate("b.example.com", "c.example.com", ca=OTHER_CA)
    tls.install(first)
    tls.install(second)
    assert served(tls.context_for("c.example.com")) == second.certificate
    assert tls.certificates == (second, A)


def test_replace_files_changes_the_default_and_the_names() -> None:
    """After replace_files the new first file is the default and the old
    files' names are no longer served."""
    tls = ServerTLS([A, WILD])
    tls.replace_files([B])
    assert served(tls.context_for(None)) == B.certificate
    assert served(tls.context_for("a.example.com")) == B.certificate
    assert served(tls.context_for("c.example.com")) == B.certificate


def test_installed_certificate_is_the_default_without_files() -> None:
    """With no files, the installed certificate is served to everyone."""
    tls = ServerTLS([])
    tls.install(B)
    assert served(tls.context_for(None)) == B.certificate
    assert served(tls.context_for("unknown.test")) == B.certificate


def test_no_certificates_means_no_context() -> None:
    """With no certificate at all there is no context for any name."""
    tls = ServerTLS([])
    assert tls.context_for(None) is None
    assert tls.context_for("a.example.com") is None


def test_no_certificates_fails_the_handshake_not_the_accept() -> None:
    """A connection accepted before any certificate exists is made, and its
    handshake fails on both sides."""
    tls = ServerTLS([])
    assert isinstance(tls.serverConnectionForTLS(object()), SSL.Connection)
    result = handshake(tls, PlainClient(b"a.example.com"))
    assert not result.client_app.handshake_done
    assert not result.server_app.handshake_done
    assert result.client_app.lost is not None
    assert result.server_app.lost is not None
    assert result.server_app.lost.check(SSL.Error)


# Handshakes ---------------------------------------------------------------------


def test_handshake_serves_the_certificate_for_the_sni() -> None:
    """A client gets the certificate for the name it sends, and the default
    when it sends none."""
    tls = ServerTLS([A, B, WILD])
    for sni, expected in [
        (b"b.example.com", B),
        (b"other.example.com", WILD),
        (b"a.example.com", A),
        (None, A),
    ]:
        result = handshake(tls, PlainClient(sni))
        assert result.completed, sni
        assert result.peer_certificate() == expected.certificate, sni
        assert result.server_name() == sni


def test_handshake_sends_the_chain() -> None:
    """A client trusting only the root verifies a certificate issued by an
    intermediate: the intermediate is sent along."""
    intermediate = CA.create_child_ca()
    leaf = intermediate.issue_cert("chained.example.com")
    chained = ServerCertificate.from_pem(
        leaf.private_key_and_cert_chain_pem.bytes(), None, "chained.pem"
    )
    root = ssl.Certificate.loadPEM(CA.cert_pem.bytes())
    client = ssl.optionsForClientTLS("chained.example.com", trustRoot=root)
    result = handshake(ServerTLS([chained]), client)
    assert result.completed
    assert result.client_app.lost is None


def test_alpn_selects_http11() -> None:
    """A listener offering http/1.1 picks it from a client offering h2 and
    http/1.1, also for a certificate picked by SNI."""
    tls = ServerTLS([A, B], alpn=(b"http/1.1",))
    for sni in (b"a.example.com", b"b.example.com"):
        result = handshake(tls, PlainClient(sni, alpn=(b"h2", b"http/1.1")))
        assert result.completed
        assert result.client.negotiatedProtocol == b"http/1.1"
        assert result.server.negotiatedProtocol == b"http/1.1"


def test_no_alpn_protocols_still_serves_a_client_offering_alpn() -> None:
    """A listener given no ALPN protocols (a tcp one) completes the handshake
    with a client that offers some, selecting none."""
    result = handshake(ServerTLS([A]), PlainClient(None, alpn=(b"h2", b"http/1.1")))
    assert result.completed
    assert result.client.negotiatedProtocol is None


def test_no_alpn_protocols_serves_a_client_without_alpn() -> None:
    """A listener given no ALPN protocols serves a client offering none."""
    result = handshake(ServerTLS([A]), PlainClient(None))
    assert result.completed
    assert result.client.negotiatedProtocol is None


def test_min_version_13_refuses_a_tls12_client() -> None:
    """With min_version 1.3 a client limited to TLS 1.2 fails its
    handshake; a TLS 1.3 client is served."""
    tls = ServerTLS([A], min_version="1.3")
    refused = handshake(tls, PlainClient(None, max_version=SSL.TLS1_2_VERSION))
    assert not refused.client_app.handshake_done
    assert refused.client_app.lost is not None
    assert refused.client_app.lost.check(SSL.Error)
    served_13 = handshake(tls, PlainClient(None))
    assert served_13.completed
    assert served_13.client.getHandle().get_protocol_version_name() == "TLSv1.3"


def test_min_version_12_serves_a_tls12_client() -> None:
    """The default minimum, TLS 1.2, serves a client limited to TLS 1.2."""
    result = handshake(
        ServerTLS([A]), PlainClient(None, max_version=SSL.TLS1_2_VERSION)
    )
    assert result.completed
    assert result.client.getHandle().get_protocol_version_name() == "TLSv1.2"


def test_new_handshakes_use_replaced_certificates() -> None:
    """After replace_files a new handshake gets the new certificate."""
    tls = ServerTLS([A])
    assert handshake(tls, PlainClient(None)).peer_certificate() == A.certificate
    tls.replace_files([B])
    assert handshake(tls, PlainClient(None)).peer_certificate() == B.certificate


# backend_tls ----------------------------------------------------------------


def test_backend_tls_verifies_the_right_name(certs: Path) -> None:
    """Trusting the CA file, a certificate for the server name is accepted,
    and the name is sent as SNI."""
    client = backend_tls("backend.internal", ca=str(certs / "ca.pem"))
    result = handshake(ServerTLS([BACKEND]), client)
    assert result.completed
    assert result.client_app.lost is None
    assert result.server_name() == b"backend.internal"


def test_backend_tls_refuses_a_wrong_name(certs: Path) -> None:
    """A trusted certificate for another name fails verification."""
    client = backend_tls("other.internal", ca=str(certs / "ca.pem"))
    result = handshake(ServerTLS([BACKEND]), client)
    assert not result.client_app.handshake_done
    assert result.client_app.lost is not None
    assert result.client_app.lost.check(VerificationError)


def test_backend_tls_refuses_an_untrusted_ca(certs: Path) -> None:
    """A certificate for the right name from a CA not in the file fails."""
    client = backend_tls("backend.internal", ca=str(certs / "other-ca.pem"))
    result = handshake(ServerTLS([BACKEND]), client)
    assert not result.client_app.handshake_done
    assert result.client_app.lost is not None
    assert result.client_app.lost.check(SSL.Error)


def test_backend_tls_unverified_accepts_anything_and_sends_sni() -> None:
    """verify=False accepts a certificate from any CA for any name, and
    still sends the server name as SNI."""
    other = server_certificate("elsewhere.test", ca=OTHER_CA)
    result = handshake(ServerTLS([other]), backend_tls("api.internal", verify=False))
    assert result.completed
    assert result.peer_certificate() == other.certificate
    assert result.server_name() == b"api.internal"


def test_backend_tls_unverified_sends_no_sni_for_an_ip() -> None:
    """An IP address is not a server name: no SNI is sent for one."""
    result = handshake(ServerTLS([BACKEND]), backend_tls("10.0.0.5", verify=False))
    assert result.completed
    assert result.server_name() is None


@pytest.mark.parametrize("verify", [True, False])
def test_backend_tls_presents_the_client_certificate(certs: Path, verify: bool) -> None:
    """A client certificate is presented to a backend that asks for one."""
    client_cert = server_certificate("client.internal")
    server = ssl.CertificateOptions(
        privateKey=BACKEND.key,  # type: ignore[arg-type]
        certificate=BACKEND.certificate,  # type: ignore[arg-type]
        trustRoot=ssl.Certificate.loadPEM(CA.cert_pem.bytes()),
    )
    client = backend_tls(
        "backend.internal",
        verify=verify,
        ca=str(certs / "ca.pem") if verify else None,
        client_certificate=client_cert,
    )
    result = handshake(server, client)
    assert result.completed
    presented = result.server.getPeerCertificate()
    assert presented is not None
    assert presented.to_cryptography() == client_cert.certificate


def test_backend_tls_unreadable_ca_names_the_file(tmp_path: Path) -> None:
    """A CA file that cannot be read is a ValueError naming it."""
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ValueError, match="cannot read") as info:
        backend_tls("backend.internal", ca=str(missing))
    assert str(info.value).startswith(f"{missing}: ")


def test_backend_tls_ca_without_certificate_names_the_file(tmp_path: Path) -> None:
    """A CA file holding no certificate is a ValueError naming it."""
    path = tmp_path / "not-a-ca.pem"
    CA.issue_cert("a.example.com").private_key_pem.write_to_path(str(path))
    with pytest.raises(ValueError) as info:
        backend_tls("backend.internal", ca=str(path))
    assert str(info.value) == f"{path}: no PEM certificate in it"


# Profiles -------------------------------------------------------------------------


def offering(
    server_name: bytes | None,
    ciphers: str | None = None,
    *,
    groups: str | None = None,
    max_version: int = SSL.TLS1_2_VERSION,
) -> PlainClient:
    """
    A L{PlainClient} up to C{max_version} offering only the OpenSSL cipher
    list C{ciphers} and the groups C{groups} (its defaults if None), at
    security level 0 so that it offers what it is told to.
    """
    client = PlainClient(server_name, max_version=max_version)
    client.context.set_cipher_list(f"{ciphers or 'ALL'}:@SECLEVEL=0".encode())
    if groups is not None:
        lib = Binding.lib
        assert lib.SSL_CTX_set1_curves_list(client.context._context, groups.encode())
    return client


def cipher_of(result: Handshake) -> str | None:
    """
    The suite the client negotiated, None if the handshake failed.
    """
    if not result.completed:
        return None
    return result.client.getHandle().get_cipher_name()  # type: ignore[no-any-return]


def test_default_profile_is_intermediate_and_follows_the_clients_order() -> None:
    """Without a profile a listener uses "intermediate", and in TLS 1.2 it
    takes the first suite of the client's list that it accepts."""
    tls = ServerTLS([A])
    assert tls.profile == "intermediate"
    chacha, gcm = "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert cipher_of(handshake(tls, offering(None, f"{chacha}:{gcm}"))) == chacha
    assert cipher_of(handshake(tls, offering(None, f"{gcm}:{chacha}"))) == gcm


def test_modern_profile_follows_the_clients_order_in_tls13() -> None:
    """The modern profile takes the client's first TLS 1.3 suite."""
    tls = ServerTLS([A], profile="modern")
    chacha, gcm = "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"
    for order in ((chacha, gcm), (gcm, chacha)):
        client = PlainClient(None)
        client.context.set_tls13_ciphersuites(":".join(order).encode())
        assert cipher_of(handshake(tls, client)) == order[0]


def test_old_profile_follows_the_servers_order() -> None:
    """The old profile picks by its own order: GCM before CBC, whatever
    the client prefers."""
    tls = ServerTLS([A], profile="old")
    cbc, gcm = "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert cipher_of(handshake(tls, offering(None, f"{cbc}:{gcm}"))) == gcm
    assert cipher_of(handshake(tls, offering(None, cbc))) == cbc


@pytest.mark.parametrize("how", ["file", "installed"])
def test_sni_picked_and_installed_certificates_keep_the_profile(how: str) -> None:
    """A certificate chosen by SNI, from the files or installed (as ACME
    does), is served under the listener's profile: a CBC suite or a client
    offering only X448 is refused; an ECDHE + AEAD suite is served, and
    P-384 when the client lists it first."""
    if how == "file":
        tls = ServerTLS([A, B])
    else:
        tls = ServerTLS([])
        tls.install(B)
    name = b"b.example.com"
    served = handshake(tls, offering(name, "ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert served.peer_certificate() == B.certificate
    assert cipher_of(served) == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert cipher_of(handshake(tls, offering(name, "ECDHE-ECDSA-AES256-SHA"))) is None
    for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
        x448 = offering(name, groups="X448", max_version=version)
        assert cipher_of(handshake(tls, x448)) is None
        p384 = offering(name, groups="P-384:P-256", max_version=version)
        assert handshake(tls, p384).client.getHandle().get_group_name() == "secp384r1"


def test_modern_profile_refuses_tls12() -> None:
    """The modern profile serves TLS 1.3 only."""
    tls = ServerTLS([A], profile="modern")
    assert (
        cipher_of(handshake(tls, offering(None, "ECDHE-ECDSA-AES128-GCM-SHA256")))
        is None
    )
    tls13 = handshake(tls, PlainClient(None))
    assert tls13.client.getHandle().get_protocol_version_name() == "TLSv1.3"


def test_min_version_raises_the_old_profiles_floor() -> None:
    """min_version 1.2 on the old profile refuses TLS 1.1 and keeps its
    CBC suites in TLS 1.2."""
    tls = ServerTLS([A], profile="old", min_version="1.2")
    tls11 = offering(None, "ECDHE-ECDSA-AES128-SHA", max_version=SSL.TLS1_1_VERSION)
    tls11.context.set_min_proto_version(SSL.TLS1_VERSION)
    assert cipher_of(handshake(tls, tls11)) is None
    cbc = "ECDHE-ECDSA-AES128-SHA"
    assert cipher_of(handshake(tls, offering(None, cbc))) == cbc


def test_old_profile_lifts_openssls_key_size_minimum() -> None:
    """The old profile runs at OpenSSL security level 0: a 1024-bit RSA
    certificate, which OpenSSL refuses under the other profiles, is
    taken."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "small.example.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2100, 1, 1))
        .sign(key, hashes.SHA256())
    )
    small = ServerCertificate(("small.example.com",), certificate, (), key, "small")
    for profile in ("intermediate", "modern"):
        with pytest.raises(SSL.Error, match="key too small"):
            ServerTLS([small], profile=profile)
    tls = ServerTLS([small], profile="old")
    assert cipher_of(handshake(tls, offering(None, "AES128-SHA"))) == "AES128-SHA"


def test_unknown_profile_and_contradicting_minimum_are_refused() -> None:
    """An unknown profile, an unknown version or a minimum below the
    profile's is a ValueError saying so."""
    with pytest.raises(ValueError, match=r"^unknown TLS profile 'moderm'$"):
        ServerTLS([A], profile="moderm")
    with pytest.raises(ValueError, match=r"^unknown TLS version '1\.4'$"):
        ServerTLS([A], min_version="1.4")
    with pytest.raises(ValueError) as info:
        ServerTLS([A], profile="modern", min_version="1.2")
    assert str(info.value) == (
        "min_version '1.2' is below what profile 'modern' accepts (TLS 1.3 "
        "and up): remove min_version, or use profile = 'intermediate' for TLS 1.2"
    )


def test_server_context_refuses_a_minimum_below_its_profile() -> None:
    """server_context, given a profile object, refuses a min_version below
    that profile's own."""
    with pytest.raises(ValueError, match="below what profile 'modern' accepts"):
        server_context(A, PROFILES["modern"], min_version="1.2")
    context = server_context(A, PROFILES["modern"], min_version="1.3")
    assert SSL.Connection(context, None).get_certificate() is not None
