"""The TLS parts of the config: listener certificates, TLS to backends, SNI
routes and C{[acme]}, as frozen models with their checks.

File paths are taken relative to the config file's directory.  Certificate
and key files are read while checking, so that an unreadable file, or a key
that is not its certificate's, is a config error naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from attrs import field, frozen, validators

from rproxy.config._validate import (
    Table,
    boolean,
    item,
    one_of,
    server_endpoint,
    show,
    string,
)
from rproxy.tls import (
    DEFAULT_PROFILE,
    MIN_VERSIONS,
    PROFILES,
    load_certificate,
    load_trust_root,
)
from rproxy.tls.profiles import min_version_problem

__all__ = [
    "AcmeConfig",
    "BackendTLSConfig",
    "CertificateConfig",
    "ListenerTLSConfig",
    "parse_acme",
    "parse_backend_tls",
    "parse_listener_tls",
    "parse_sni_routes",
]

#: Kinds of private key ACME certificates are made with.
ACME_KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")
_DNS_NAME = re.compile(
    r"(?:\*\.)?(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*", re.ASCII
)


@frozen
class CertificateConfig:
    """
    A PEM certificate file (leaf first, then its chain) and the PEM file of
    its private key; C{key} None means the key is in C{cert} too.
    """

    cert: str
    key: str | None = None


@frozen
class ListenerTLSConfig:
    """
    TLS termination on a listener.

    @ivar certificates: chosen by SNI from the names in each certificate;
        the first is the default.  May be empty when C{[acme]} provides them.
    @ivar min_version: the oldest TLS version accepted (C{"1.0"} to
        C{"1.3"}), at or above the profile's own; None for the profile's.
    @ivar hsts: the C{Strict-Transport-Security} value added to responses
        that lack one (http listeners).
    @ivar redirect_http_from: a server endpoint string on which plain HTTP
        requests are answered with a 308 to the same URL over https.
    @ivar profile: the versions, cipher suites and groups accepted: a
        Mozilla profile, C{"modern"}, C{"intermediate"} or C{"old"}
        (see L{rproxy.tls.profiles}).
    """

    certificates: tuple[CertificateConfig, ...] = ()
    min_version: str | None = field(
        default=None, validator=validators.optional(validators.in_(MIN_VERSIONS))
    )
    hsts: str | None = None
    redirect_http_from: str | None = None
    profile: str = field(default=DEFAULT_PROFILE, validator=validators.in_(PROFILES))

    def __attrs_post_init__(self) -> None:
        problem = min_version_problem(self.profile, self.min_version)
        if problem is not None:
            raise ValueError(f"min_version {problem}")


@frozen
class BackendTLSConfig:
    """
    TLS from rproxy to a pool's backends.

    @ivar verify: check the backend's certificate (always, unless false).
    @ivar server_name: the name sent as SNI and verified; each backend's host
        if None.
    @ivar ca: a PEM file of the CA certificates to trust; the system's if None.
    @ivar cert: a client certificate to present (with C{key}, or the key in
        the same file).
    """

    verify: bool = True
    server_name: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@frozen
class AcmeConfig:
    """
    Automatic certificates from an ACME (RFC 8555) server.

    @ivar directory: the server's directory URL.
    @ivar storage: a directory for the account key and the certificates.
    @ivar domains: the names of the one certificate to obtain; the first is
        its subject.
    @ivar email: the account's contact address.
    @ivar ca: a PEM file of CA certificates trusted for the ACME server's own
        HTTPS (for a private or test ACME server); the system's if None.
    @ivar renew_before: days before expiry to renew.
    @ivar key_type: the certificates' key: C{ec256}, C{ec384}, C{rsa2048}
        or C{rsa4096}.
    """

    directory: str
    storage: str
    domains: tuple[str, ...] = field(validator=validators.min_len(1))
    email: str | None = None
    ca: str | None = None
    renew_before: float = field(default=30.0, validator=validators.gt(0.0))
    key_type: str = field(default="ec256", validator=validators.in_(ACME_KEY_TYPES))


def _base(source: str) -> str:
    return os.path.dirname(source)


def _path(base: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = string(value)
        return os.path.normpath(os.path.join(base, os.path.expanduser(text)))

    return convert


def dns_name(value: object) -> str:
    """
    A DNS name as a certificate or SNI carries it (C{*.} allowed in front),
    lowercased.
    """
    if isinstance(value, str):
        name = value.lower().rstrip(".")
        if len(name) <= 253 and _DNS_NAME.fullmatch(name):
            return name
    raise ValueError(
        f"must be a DNS name ('example.com' or '*.example.com'), got {value!r}"
    )


_LISTENER_TLS_KEYS = (
    "certificates",
    "profile",
    "min_version",
    "hsts",
    "redirect_http_from",
)
_CERTIFICATE_KEYS = ("cert", "key")


def parse_listener_tls(
    table: Table, source: str, *, http: bool, acme: bool
) -> ListenerTLSConfig | None:
    """
    The C{tls} table of the listener C{table}, or None if it has none.
    C{http} is whether it is an http listener; C{acme} whether the file has
    an C{[acme]} section to provide certificates.
    """
    tls = table.table("tls", _LISTENER_TLS_KEYS)
    if tls is None:
        return None
    path = _path(_base(source))
    certificates = []
    raw = tls.data.get("certificates", [])
    if not isinstance(raw, list):
        tls.report("certificates", "must be an array of { cert = ..., key = ... }")
        raw = None
    for index, entry in enumerate(raw or ()):
        where = item(f"{tls.path}.certificates", index)
        one = Table.open(tls.problems, where, entry, _CERTIFICATE_KEYS)
        if one is None:
            continue
        cert = one.require("cert", path)
        key = one.get("key", path, None)
        if cert is None:
            continue
        try:
            load_certificate(cert, key)
        except ValueError as e:
            tls.problems.add(where, str(e))
            continue
        certificates.append(CertificateConfig(cert, key))
    if raw == [] and not acme:
        tls.report(
            "certificates",
            "missing: give at least one { cert = ..., key = ... }, "
            "or an [acme] section to obtain one",
        )
    profile = tls.get("profile", one_of(tuple(PROFILES)), DEFAULT_PROFILE)
    min_version = tls.get("min_version", one_of(tuple(MIN_VERSIONS)), None)
    # A misspelt profile is its own problem: no second one about a minimum
    # judged against the default.
    known = tls.data.get("profile", DEFAULT_PROFILE) in PROFILES
    problem = min_version_problem(profile, min_version)
    if problem is not None:
        if known:
            tls.report("min_version", problem)
        min_version = None
    hsts = tls.get("hsts", _header_value, None)
    redirect = tls.get("redirect_http_from", server_endpoint, None)
    if not http:
        for key in ("hsts", "redirect_http_from"):
            if key in tls:
                tls.report(key, 'only for protocol = "http" listeners')
    return ListenerTLSConfig(
        tuple(certificates), min_version, hsts, redirect, profile=profile
    )


def _header_value(value: object) -> str:
    text = string(value)
    if not all(" " <= c <= "~" or c == "\t" for c in text):
        raise ValueError(f"must be printable ASCII, got {text!r}")
    return text.strip()


_BACKEND_TLS_KEYS = ("verify", "server_name", "ca", "cert", "key")


def parse_backend_tls(table: Table, source: str) -> BackendTLSConfig | None:
    """
    The C{tls} table of the pool C{table}, or None if it has none.
    """
    tls = table.table("tls", _BACKEND_TLS_KEYS)
    if tls is None:
        return None
    path = _path(_base(source))
    verify = tls.get("verify", boolean, True)
    server_name = tls.get("server_name", dns_name, None)
    ca = tls.get("ca", path, None)
    cert = tls.get("cert", path, None)
    key = tls.get("key", path, None)
    if ca is not None:
        try:
            load_trust_root(ca)
        except ValueError as e:
            tls.report("ca", str(e))
    if key is not None and cert is None:
        tls.report("key", "needs cert: a client key without its certificate")
    elif cert is not None:
        try:
            load_certificate(cert, key)
        except ValueError as e:
            tls.report("cert", str(e))
    if ca is not None and not verify:
        tls.report("ca", "has no use with verify = false")
    return BackendTLSConfig(verify, server_name, ca, cert, key)


def parse_sni_routes(table: Table) -> tuple[tuple[str, str], ...]:
    """
    The C{sni_routes} table of a tcp listener: server name (exact or
    C{*.suffix}) to pool name, in file order.
    """
    sni = table.table("sni_routes", ())
    if sni is None:
        return ()
    # Table() reported every key as unknown; names are data here.
    del table.problems.lines[len(table.problems.lines) - len(sni.data) :]
    routes = []
    for name, pool in sni.data.items():
        try:
            routes.append((dns_name(name), string(pool)))
        except ValueError as e:
            sni.report(name, str(e))
    return tuple(routes)


_ACME_KEYS = (
    "directory",
    "storage",
    "domains",
    "email",
    "ca",
    "renew_before",
    "key_type",
)


def parse_acme(top: Table, source: str) -> AcmeConfig | None:
    """
    The C{[acme]} section, or None if there is none.
    """
    acme = top.table("acme", _ACME_KEYS)
    if acme is None:
        return None
    path = _path(_base(source))
    directory = acme.require("directory", _url)
    storage = acme.require("storage", path)
    domains = acme.array("domains", dns_name)
    if "domains" not in acme:
        acme.report("domains", "missing: name at least one domain")
    elif acme.data["domains"] == []:
        acme.report("domains", "is empty: name at least one domain")
    for domain in domains:
        if domain.startswith("*."):
            acme.report(
                "domains",
                f"{domain!r}: wildcard names need DNS-01, and rproxy answers "
                "HTTP-01 only",
            )
    email = acme.get("email", _email, None)
    ca = acme.get("ca", path, None)
    if ca is not None and not os.path.isfile(ca):
        acme.report("ca", f"{ca}: no such file")
    renew_before = acme.get("renew_before", _days, 30.0)
    key_type = acme.get("key_type", one_of(ACME_KEY_TYPES), "ec256")
    if directory is None or storage is None or not domains:
        return None
    return AcmeConfig(
        directory,
        storage,
        domains,
        email,
        ca,
        renew_before,
        key_type,
    )


def _url(value: object) -> str:
    text = string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, got {text!r}")
    return text


def _email(value: object) -> str:
    text = string(value)
    if "@" not in text or text.startswith("mailto:"):
        raise ValueError(f"must be an email address, got {text!r}")
    return text


def _days(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a positive number of days, got {show(value)}")
    return float(value)
