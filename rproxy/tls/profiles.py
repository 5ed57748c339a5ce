"""TLS profiles: the versions, cipher suites and key-exchange groups a
listener accepts, after Mozilla's server-side TLS guidelines (5.7), and the
server contexts made from them.

Three profiles, chosen by name:

  - C{"intermediate"} (the default): TLS 1.2 and 1.3; in TLS 1.2 only
    ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305);
    the client's order of preference.
  - C{"modern"}: TLS 1.3 only.
  - C{"old"}: TLS 1.0 and up, with Mozilla's longer list (CBC suites,
    static RSA key exchange, 3DES where OpenSSL still has it) in the
    server's order of preference, at OpenSSL security level 0, which
    OpenSSL 3 needs to speak TLS 1.0 and 1.1 at all (their handshake
    signatures use SHA-1); level 0 also lets OpenSSL take what it would
    otherwise refuse, such as a 1024-bit RSA certificate.

Every profile offers the groups X25519, P-256 and P-384 only.  Mozilla's
lists also have DHE suites; they are left out, as rproxy configures no
finite-field Diffie-Hellman groups of its own.

L{server_context} makes the pyOpenSSL context of one certificate under a
profile; every server context rproxy builds comes from it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

from attrs import frozen
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

if TYPE_CHECKING:
    from rproxy.tls import ServerCertificate

__all__ = [
    "DEFAULT_PROFILE",
    "MIN_VERSIONS",
    "PROFILES",
    "TLSProfile",
    "min_version_problem",
    "server_context",
]

#: TLS versions as the config writes them, oldest first.
MIN_VERSIONS: Mapping[str, int] = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}

_TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
_ECDHE_AEAD = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
_OLD_EXTRA = (
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
)
_GROUPS = ("X25519", "P-256", "P-384")


@frozen
class TLSProfile:
    """
    What a listener accepts.

    @ivar name: the profile's name in the config.
    @ivar min_version: the oldest TLS version, a key of L{MIN_VERSIONS}.
    @ivar ciphers: the TLS 1.2 (and older) suites, OpenSSL names, in order;
        empty for a profile without TLS 1.2.
    @ivar tls13_ciphers: the TLS 1.3 suites, in order.
    @ivar groups: the key-exchange groups (OpenSSL names).
    @ivar server_preference: pick the suite by the server's order rather
        than the client's.
    @ivar security_level: the OpenSSL security level, or None for the
        library's default.
    """

    name: str
    min_version: str
    ciphers: tuple[str, ...]
    tls13_ciphers: tuple[str, ...] = _TLS13_SUITES
    groups: tuple[str, ...] = _GROUPS
    server_preference: bool = False
    security_level: int | None = None


#: The profiles by name.
PROFILES: Mapping[str, TLSProfile] = {
    "modern": TLSProfile("modern", "1.3", ()),
    "intermediate": TLSProfile("intermediate", "1.2", _ECDHE_AEAD),
    "old": TLSProfile(
        "old",
        "1.0",
        _ECDHE_AEAD + _OLD_EXTRA,
        server_preference=True,
        security_level=0,
    ),
}

#: The profile of a listener that names none.
DEFAULT_PROFILE = "intermediate"


def min_version_problem(profile: str, min_version: str | None) -> str | None:
    """
    What is wrong with C{min_version} under the profile named C{profile}
    (None: nothing, or no C{min_version} at all); a minimum may raise the
    profile's own, never lower it.
    """
    if min_version is None:
        return None
    floor = PROFILES[profile].min_version
    if MIN_VERSIONS[min_version] >= MIN_VERSIONS[floor]:
        return None
    fits = [
        name
        for name, p in PROFILES.items()
        if MIN_VERSIONS[p.min_version] <= MIN_VERSIONS[min_version]
    ]
    use = f", or use profile = {fits[0]!r} for TLS {min_version}" if fits else ""
    return (
        f"{min_version!r} is below what profile {profile!r} accepts "
        f"(TLS {floor} and up): remove min_version{use}"
    )


def server_context(
    certificate: ServerCertificate | None,
    profile: TLSProfile,
    *,
    min_version: str | None = None,
) -> SSL.Context:
    """
    A server context presenting C{certificate} (none if None: a handshake
    then fails) under C{profile}, accepting TLS from C{min_version} (the
    profile's own minimum if None) up to 1.3.

    @raise ValueError: if C{min_version} is below the profile's minimum.
    @raise OpenSSL.SSL.Error: if OpenSSL refuses the certificate or key.
    """
    floor = MIN_VERSIONS[profile.min_version]
    minimum = floor if min_version is None else MIN_VERSIONS[min_version]
    if minimum < floor:
        raise ValueError(
            f"min_version {min_version!r} is below what profile "
            f"{profile.name!r} accepts (TLS {profile.min_version} and up)"
        )
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(minimum)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    options = SSL.OP_NO_COMPRESSION
    if profile.server_preference:
        options |= SSL.OP_CIPHER_SERVER_PREFERENCE
    context.set_options(options)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    # A TLS 1.3-only profile lists no TLS 1.2 suites; OpenSSL wants some.
    suites = ":".join(profile.ciphers or _ECDHE_AEAD)
    if profile.security_level is not None:
        suites += f":@SECLEVEL={profile.security_level}"
    context.set_cipher_list(suites.encode("ascii"))
    context.set_tls13_ciphersuites(":".join(profile.tls13_ciphers).encode("ascii"))
    _set_groups(context, profile.groups)
    if certificate is not None:
        # pyOpenSSL takes cryptography's objects directly.
        context.use_certificate(certificate.certificate)
        context.use_privatekey(certificate.key)  # type: ignore[arg-type]
        for extra in certificate.chain:
            context.add_extra_chain_cert(extra)
        context.check_privatekey()
    # As Twisted's CertificateOptions does: a session ID context of its own
    # (client certificates need one), and no server-side session cache.
    context.set_session_id(secrets.token_hex(7).encode("ascii"))
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


def _set_groups(context: SSL.Context, groups: tuple[str, ...]) -> None:
    # pyOpenSSL (26.4) has no call for a list of groups (set_tmp_ecdh sets
    # exactly one), so this is OpenSSL's SSL_CTX_set1_curves_list through
    # the cryptography bindings pyOpenSSL itself is built on.
    lib = Binding.lib
    names = ":".join(groups).encode("ascii")
    if lib.SSL_CTX_set1_curves_list(context._context, names) != 1:
        raise SSL.Error(f"OpenSSL does not know every group in {names!r}")
