"""The steps of obtaining a certificate over ACME (RFC 8555) with certbot's
C{acme} library: each step is one or a few blocking HTTPS requests, made in
a thread by L{rproxy.acme.AcmeService}, which does the waiting between
them on the reactor.

No step sleeps or polls: the service decides when to ask again.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests
from acme import challenges, errors, messages
from acme.client import ClientNetwork, ClientV2
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import NameOID
from josepy.jwa import ES256
from josepy.jwk import JWK

from rproxy.acme._storage import Storage

__all__ = [
    "HTTP01",
    "AcmeError",
    "account_key",
    "answer",
    "begin_finalization",
    "describe",
    "download_certificate",
    "http01_challenges",
    "new_order",
    "open_account",
    "order_status",
    "poll_authorization",
]

_USER_AGENT = "rproxy"
#: Seconds any one request to the ACME server may take.
_REQUEST_TIMEOUT = 30


class AcmeError(Exception):
    """
    The ACME server refused or failed something; the message says what.
    """


@frozen
class HTTP01:
    """
    An HTTP-01 challenge to answer: serve C{key_authorization} at
    C{/.well-known/acme-challenge/<token>} for C{domain}.
    """

    domain: str
    token: str
    key_authorization: str
    authorization: messages.AuthorizationResource
    challenge: messages.ChallengeBody
    response: challenges.ChallengeResponse


def describe(error: BaseException) -> str:
    """
    A one-line account of C{error} for a log event.
    """
    if isinstance(error, AcmeError):
        return str(error)
    if isinstance(error, messages.Error):
        return f"ACME error {error.typ}: {error.detail or error.title or ''}".strip()
    if isinstance(error, requests.RequestException):
        return f"cannot reach the ACME server: {error}"
    return f"{type(error).__name__}: {error}"


def open_account(
    directory_url: str, ca: str | None, storage: Storage, email: str | None
) -> ClientV2:
    """
    A client for the server at C{directory_url} signed in with the stored
    account key (made first if there is none): registers the account, or
    finds the one the key already has, and stores its URL.

    @param ca: a PEM file of CA certificates for the server's HTTPS, or None
        for the system's.
    """
    key = storage.account_key()
    network = ClientNetwork(
        key, alg=ES256, user_agent=_USER_AGENT, timeout=_REQUEST_TIMEOUT
    )
    if ca is not None:
        # Passed on to requests as its verify=, which takes a CA bundle path.
        network.verify_ssl = ca  # type: ignore[assignment]
    client = ClientV2(ClientV2.get_directory(directory_url, network), network)
    if client.external_account_required():
        raise AcmeError(
            "the ACME server requires external account binding, "
            "which rproxy does not support"
        )
    registration = messages.NewRegistration.from_data(
        email=email, terms_of_service_agreed=True
    )
    try:
        account = client.new_account(registration)
    except errors.ConflictError as existing:
        # The key has an account already: the server said where.
        account = client.query_registration(
            messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
        )
    storage.save_registration(directory_url, account)
    return client


def account_key(client: ClientV2) -> JWK:
    """
    The key C{client} signs its requests with.
    """
    key: JWK | None = client.net.key
    if key is None:
        raise AcmeError("the ACME client has no account key")
    return key


def certificate_request(
    domains: Sequence[str], key: CertificateIssuerPrivateKeyTypes
) -> bytes:
    """
    A PEM CSR for C{domains} (all as subjectAltNames, the first also as the
    common name when it fits in one) signed with C{key}.
    """
    subject = (
        [x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]
        if len(domains[0]) <= 64
        else []
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def new_order(
    client: ClientV2, domains: Sequence[str], key: CertificateIssuerPrivateKeyTypes
) -> messages.OrderResource:
    """
    Order a certificate for C{domains} with the private key C{key}.
    """
    return client.new_order(certificate_request(domains, key))


def http01_challenges(order: messages.OrderResource, account_key: JWK) -> list[HTTP01]:
    """
    The HTTP-01 challenges to answer for C{order}'s authorizations that are
    still pending (one the server already holds valid needs none).

    @raise AcmeError: if an authorization is neither pending nor valid, or
        offers no HTTP-01 challenge.
    """
    found = []
    for authorization in order.authorizations:
        body = authorization.body
        domain = body.identifier.value
        if body.status == messages.STATUS_VALID:
            continue
        if body.status != messages.STATUS_PENDING:
            raise AcmeError(f"authorization for {domain} is {body.status.name}")
        for challenge in body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                response, validation = challenge.response_and_validation(account_key)
                found.append(
                    HTTP01(
                        domain,
                        challenge.chall.encode("token"),
                        validation,
                        authorization,
                        challenge,
                        response,
                    )
                )
                break
        else:
            offered = ", ".join(c.chall.typ for c in body.challenges) or "none"
            raise AcmeError(
                f"no http-01 challenge offered for {domain} (offered: {offered})"
            )
    return found


def answer(client: ClientV2, challenge: HTTP01) -> None:
    """
    Tell the server that C{challenge} is ready to be validated.
    """
    client.answer_challenge(challenge.challenge, challenge.response)


def poll_authorization(
    client: ClientV2, authorization: messages.AuthorizationResource
) -> messages.AuthorizationResource:
    """
    C{authorization} as the server has it now.
    """
    return client.poll(authorization)[0]


def validation_error(authorization: messages.AuthorizationResource) -> str:
    """
    Why the server found C{authorization} invalid, as its challenges say.
    """
    body = authorization.body
    reasons = [
        f"{c.chall.typ}: {c.error.detail or c.error.typ}"
        for c in body.challenges
        if c.error is not None
    ]
    return f"validation of {body.identifier.value} failed: " + (
        "; ".join(reasons) or "no reason given"
    )


def begin_finalization(
    client: ClientV2, order: messages.OrderResource
) -> messages.OrderResource:
    """
    Send C{order}'s CSR once its authorizations are valid.
    """
    return client.begin_finalization(order)


def _post_as_get(client: ClientV2, url: str) -> requests.Response:
    return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])


def order_status(client: ClientV2, order: messages.OrderResource) -> messages.Order:
    """
    C{order} as the server has it now.
    """
    body: messages.Order = messages.Order.from_json(
        _post_as_get(client, order.uri).json()
    )
    return body


def download_certificate(client: ClientV2, url: str) -> bytes:
    """
    The certificate at C{url}, leaf first then its chain, as PEM.
    """
    return _post_as_get(client, url).text.encode("ascii")
