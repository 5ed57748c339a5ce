"""TLS: server certificates chosen by SNI, and verified client TLS to backends.

L{ServerTLS} is what a TLS-terminating listener hands to Twisted's
L{TLSMemoryBIOFactory}: it holds the listener's certificates, picks one per
handshake from the client's server name (exact name first, then a wildcard,
then the default), and can swap its certificates while running: new
handshakes use the new ones, connections already open keep theirs.

L{backend_tls} makes the client side: verified against a server name with
service-identity (Twisted's L{optionsForClientTLS}), trusting a CA file or the
system store, sending SNI.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import Logger
from zope.interface import implementer

from rproxy.tls.profiles import (
    DEFAULT_PROFILE,
    MIN_VERSIONS,
    PROFILES,
    min_version_problem,
    server_context,
)

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "DEFAULT_PROFILE",
    "MIN_VERSIONS",
    "PROFILES",
    "ServerCertificate",
    "ServerTLS",
    "backend_tls",
    "load_certificate",
    "load_trust_root",
    "name_matches",
]

log = Logger(namespace="rproxy.tls")

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


@frozen
class ServerCertificate:
    """
    A certificate, its chain and its private key, with the DNS names it is
    for (lowercase; C{*.example.com} for a wildcard).

    @ivar source: where it came from, for messages (a file name, C{"acme"}).
    """

    names: tuple[str, ...]
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes
    source: str

    @property
    def not_after(self) -> datetime.datetime:
        """
        When the certificate expires (UTC).
        """
        return self.certificate.not_valid_after_utc

    @classmethod
    def from_pem(
        cls, cert_pem: bytes, key_pem: bytes | None, source: str
    ) -> ServerCertificate:
        """
        Read a certificate (then its chain) from C{cert_pem} and its key from
        C{key_pem}, or from C{cert_pem} too if C{key_pem} is None.

        @raise ValueError: with a message naming C{source}, if either cannot
            be read or the key is not the certificate's.
        """
        try:
            certificates = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            raise ValueError(f"{source}: no PEM certificate in it") from None
        key_source = cert_pem if key_pem is None else key_pem
        key = _load_key(key_source, source)
        leaf = certificates[0]
        if _public_bytes(leaf.public_key()) != _public_bytes(key.public_key()):
            raise ValueError(
                f"{source}: the private key does not match the certificate "
                f"({_subject(leaf)})"
            )
        names = certificate_names(leaf)
        if not names:
            raise ValueError(f"{source}: the certificate names no DNS name")
        return cls(names, leaf, tuple(certificates[1:]), key, source)


def _load_key(pem: bytes, source: str) -> PrivateKeyTypes:
    for block in _PEM_BLOCK.finditer(pem):
        if block[1].endswith(b"PRIVATE KEY"):
            try:
                return serialization.load_pem_private_key(block[0], password=None)
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"{source}: cannot read the private key: {e}"
                ) from None
    raise ValueError(f"{source}: no PEM private key in it")


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "no subject"


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    The DNS names C{certificate} is for: its subjectAltName dNSNames, or its
    subject's common name if it has no such extension; lowercase, in order.
    """
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        names = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(
                NameOID.COMMON_NAME
            )
        ]
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names if name))


def load_certificate(cert: str, key: str | None = None) -> ServerCertificate:
    """
    Read a L{ServerCertificate} from the PEM file C{cert}, with the key in
    the PEM file C{key} or, if None, in C{cert} too.

    @raise ValueError: naming the file that cannot be read or does not fit.
    """
    cert_pem = _read(cert)
    key_pem = None if key is None else _read(key)
    source = cert if key is None else f"{cert} (key {key})"
    return ServerCertificate.from_pem(cert_pem, key_pem, source)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None


def name_matches(pattern: str, server_name: str) -> bool:
    """
    Whether the certificate name C{pattern} (C{example.com} or
    C{*.example.com}) covers C{server_name}; a wildcard stands for exactly one
    leftmost label.
    """
    server_name = server_name.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = server_name.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == server_name


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS side of one listener: its certificates, picked per handshake by
    the client's SNI, with a profile (a key of L{PROFILES}: versions,
    cipher suites, groups), a minimum TLS version that may raise the
    profile's (None: the profile's own) and the ALPN protocols to offer.

    Certificates come from two places: the listener's files
    (L{replace_files}, the first being the default for clients without SNI
    or with a name no certificate covers) and certificates obtained
    automatically (L{install}), which take precedence for their names.
    Swapping either affects new handshakes only.

    Pass it to L{twisted.protocols.tls.TLSMemoryBIOFactory} as the
    connection creator.
    """

    def __init__(
        self,
        certificates: Sequence[ServerCertificate],
        *,
        profile: str = DEFAULT_PROFILE,
        min_version: str | None = None,
        alpn: Sequence[bytes] = (),
    ):
        """
        @raise ValueError: for an unknown profile or TLS version, or a
            C{min_version} below the profile's.
        """
        if profile not in PROFILES:
            raise ValueError(f"unknown TLS profile {profile!r}")
        if min_version is not None and min_version not in MIN_VERSIONS:
            raise ValueError(f"unknown TLS version {min_version!r}")
        problem = min_version_problem(profile, min_version)
        if problem is not None:
            raise ValueError(f"min_version {problem}")
        self._profile = PROFILES[profile]
        self._minimum = min_version
        self._alpn = tuple(alpn)
        self._files: tuple[ServerCertificate, ...] = ()
        self._installed: dict[tuple[str, ...], ServerCertificate] = {}
        self._contexts: dict[int, tuple[ServerCertificate, SSL.Context]] = {}
        self._exact: dict[str, SSL.Context] = {}
        self._wildcard: dict[str, SSL.Context] = {}
        self._default: SSL.Context | None = None
        self.replace_files(certificates)

    @property
    def certificates(self) -> tuple[ServerCertificate, ...]:
        """
        Every certificate in use: installed ones first, then the files.
        """
        return (*self._installed.values(), *self._files)

    def replace_files(self, certificates: Sequence[ServerCertificate]) -> None:
        """
        Serve C{certificates} (the listener's files) from the next handshake on.
        """
        self._files = tuple(certificates)
        self._rebuild()

    def install(self, certificate: ServerCertificate) -> None:
        """
        Serve C{certificate} for its names, before any file certificate,
        replacing an earlier one installed for the same names.
        """
        self._installed[certificate.names] = certificate
        self._rebuild()

    def _rebuild(self) -> None:
        # Contexts are kept for certificates still in use (by identity: the
        # cache holds each certificate, so an id is never reused under it).
        previous = self._contexts
        contexts: dict[int, tuple[ServerCertificate, SSL.Context]] = {}
        exact: dict[str, SSL.Context] = {}
        wildcard: dict[str, SSL.Context] = {}
        for certificate in self.certificates:
            cached = previous.get(id(certificate))
            if cached is not None and cached[0] is certificate:
                context = cached[1]
            else:
                context = self._context(certificate)
            contexts[id(certificate)] = (certificate, context)
            for name in certificate.names:
                table, key = (
                    (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
                )
                table.setdefault(key, context)
        self._contexts = contexts
        self._exact, self._wildcard = exact, wildcard
        default = (
            self._files[0]
            if self._files
            else next(iter(self._installed.values()), None)
        )
        self._default = None if default is None else contexts[id(default)][1]

    @property
    def profile(self) -> str:
        """
        The name of the profile in use.
        """
        return self._profile.name

    def _context(self, certificate: ServerCertificate | None) -> SSL.Context:
        context = server_context(certificate, self._profile, min_version=self._minimum)
        context.set_tlsext_servername_callback(self._pick)
        context.set_alpn_select_callback(self._select_protocol)
        return context

    def _select_protocol(
        self, connection: SSL.Connection, offered: list[bytes]
    ) -> bytes | SSL._NoOverlappingProtocols:
        # Ours in our order of preference (h2 before http/1.1, whatever the
        # client's order); with none in common the handshake goes on without
        # ALPN (a tcp listener offers none).
        for protocol in self._alpn:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def context_for(self, server_name: str | None) -> SSL.Context | None:
        """
        The context for a client asking for C{server_name}: an exact name,
        then a wildcard one label up, then the default.  None if there are
        no certificates at all.
        """
        if server_name:
            name = server_name.lower().rstrip(".")
            context = self._exact.get(name)
            if context is None:
                _, dot, parent = name.partition(".")
                context = self._wildcard.get(parent) if dot else None
            if context is not None:
                return context
        return self._default

    def _pick(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        context = self.context_for(name)
        if context is not None and context is not connection.get_context():
            connection.set_context(context)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = self._default
        if context is None:
            # Nothing to serve yet (certificates still being obtained): a
            # bare context fails the handshake rather than the listener.
            context = self._context(None)
        connection = SSL.Connection(context, None)
        connection.set_app_data(tlsProtocol)
        return connection


def backend_tls(
    server_name: str,
    *,
    verify: bool = True,
    ca: str | None = None,
    client_certificate: ServerCertificate | None = None,
) -> IOpenSSLClientConnectionCreator:
    """
    Client TLS to a backend: SNI C{server_name} (unless it is an IP address)
    and, if C{verify}, its certificate checked against C{server_name} by
    service-identity, trusting the CA certificates in the PEM file C{ca}, or
    the system's if None.

    @param client_certificate: presented to backends that ask for one.
    @raise ValueError: if C{ca} cannot be read or holds no certificate.
    """
    client = None
    if client_certificate is not None:
        client = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            ssl.Certificate(
                crypto.X509.from_cryptography(client_certificate.certificate)
            ),
            ssl.KeyPair(crypto.PKey.from_cryptography_key(client_certificate.key)),  # type: ignore[arg-type]
        )
    if not verify:
        return _UnverifiedClientTLS(server_name, client)
    trust = ssl.platformTrust() if ca is None else load_trust_root(ca)
    return ssl.optionsForClientTLS(
        server_name, trustRoot=trust, clientCertificate=client
    )


def load_trust_root(path: str) -> IOpenSSLTrustRoot:
    """
    The CA certificates of the PEM file C{path}, to verify peers against.

    @raise ValueError: naming the file, if it cannot be read or holds no
        certificate.
    """
    try:
        certificates = x509.load_pem_x509_certificates(_read(path))
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: no PEM certificate in it") from None
    trust: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in certificates]
    )
    return trust


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """
    Client TLS that sends SNI but accepts any certificate (C{verify = false}).
    """

    def __init__(self, server_name: str, client: ssl.PrivateCertificate | None):
        self._server_name = None if _is_ip(server_name) else server_name.encode("idna")
        kwargs = {}
        if client is not None:
            kwargs = {
                "privateKey": client.privateKey.original,
                "certificate": client.original,
            }
        self._context = ssl.CertificateOptions(verify=False, **kwargs).getContext()

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        connection.set_connect_state()
        return connection


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
