"""The files of automatic certificates: the ACME account key and
registration, and each certificate with its private key.

Layout under the configured storage directory (directories mode 0700,
private keys 0600, every file replaced atomically)::

    account/key.pem                     the account's private key (EC P-256)
    account/registration.json           the server and account URL
    certificates/<first domain>/fullchain.pem
    certificates/<first domain>/privkey.pem

Everything here blocks on the file system; L{rproxy.acme} calls it from
threads, except for the small reads at start.
"""

from __future__ import annotations

import json
import os
import tempfile

from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from josepy.jwk import JWKEC

from rproxy.tls import ServerCertificate, load_certificate

__all__ = ["Storage", "key_pem", "new_certificate_key"]

_PRIVATE = 0o600
_PUBLIC = 0o644
_DIRECTORY = 0o700


def new_certificate_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    """
    A new private key of the kind C{key_type} names (see
    L{rproxy.config.AcmeConfig.key_type}).
    """
    if key_type == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa4096"):
        return rsa.generate_private_key(65537, int(key_type[3:]))
    raise ValueError(f"unknown key type {key_type!r}")


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """
    C{key} as unencrypted PKCS#8 PEM.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """
    Replace the file C{path} with one holding C{data}, with permissions
    C{mode} from its creation on: written to a temporary file in the same
    directory, flushed to disk, then renamed over C{path}.
    """
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _make_directory(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=_DIRECTORY, exist_ok=True)
        os.chmod(path, _DIRECTORY)


class Storage:
    """
    The account and certificate files under one storage directory.

    @ivar root: the storage directory; it and the directories below it are
        created (mode 0700) when first written to.
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _ensure(self, *parts: str) -> str:
        _make_directory(self.root)
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            _make_directory(path)
        return path

    def account_key(self) -> JWKEC:
        """
        The account key, made and stored first if there is none.

        @raise ValueError: if the stored key cannot be read.
        """
        path = self._path("account", "key.pem")
        try:
            with open(path, "rb") as f:
                pem = f.read()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            write_atomically(
                os.path.join(self._ensure("account"), "key.pem"),
                key_pem(key),
                _PRIVATE,
            )
            return JWKEC(key=key)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an EC private key")
        return JWKEC(key=loaded)

    def save_registration(
        self, directory: str, registration: messages.RegistrationResource
    ) -> None:
        """
        Record the account URL C{registration} has at the server whose
        directory URL is C{directory}.
        """
        document = {
            "directory": directory,
            "uri": registration.uri,
            "registration": json.loads(registration.body.json_dumps()),
        }
        write_atomically(
            os.path.join(self._ensure("account"), "registration.json"),
            json.dumps(document, indent=2, sort_keys=True).encode() + b"\n",
            _PRIVATE,
        )

    def certificate_files(self, domain: str) -> tuple[str, str]:
        """
        The paths of the full chain and the private key of the certificate
        whose first name is C{domain}.
        """
        return (
            self._path("certificates", domain, "fullchain.pem"),
            self._path("certificates", domain, "privkey.pem"),
        )

    def load_certificate(self, domain: str) -> ServerCertificate | None:
        """
        The stored certificate whose first name is C{domain}, or None if
        there is none.

        @raise ValueError: if the files are there but cannot be used
            (unreadable, or a key that is not the certificate's).
        """
        fullchain, privkey = self.certificate_files(domain)
        if not (os.path.exists(fullchain) and os.path.exists(privkey)):
            return None
        return load_certificate(fullchain, privkey)

    def save_certificate(self, domain: str, fullchain_pem: bytes, key: bytes) -> None:
        """
        Store a certificate (C{fullchain_pem}, leaf first) and its private
        key (PEM) under C{domain}.  The key is written first: a crash in
        between leaves a pair that does not match, which loads as unusable
        and is obtained again, never a certificate served with a wrong key.
        """
        directory = self._ensure("certificates", domain)
        write_atomically(os.path.join(directory, "privkey.pem"), key, _PRIVATE)
        write_atomically(
            os.path.join(directory, "fullchain.pem"), fullchain_pem, _PUBLIC
        )
