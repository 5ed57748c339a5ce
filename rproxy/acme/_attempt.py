"""One attempt at obtaining a certificate: account, order, HTTP-01
challenges, finalization and storage.

The blocking ACME steps (L{rproxy.acme._protocol}) run in the reactor's
thread pool; publishing and withdrawing challenge answers and the waits
between polls happen on the reactor thread, timed by the reactor.
Cancelling the attempt stops it at its next step and withdraws its
challenges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from acme import messages
from acme.client import ClientV2
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool

from rproxy.acme import _protocol as steps
from rproxy.acme._storage import Storage, key_pem, new_certificate_key
from rproxy.acme.challenges import Challenges
from rproxy.config._tls import AcmeConfig
from rproxy.tls import ServerCertificate, name_matches

__all__ = ["Attempt", "uncovered"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def uncovered(certificate: ServerCertificate, domains: Sequence[str]) -> list[str]:
    """
    The names of C{domains} that C{certificate} is not for.
    """
    return [
        domain
        for domain in domains
        if not any(name_matches(name, domain) for name in certificate.names)
    ]


class Attempt:
    """
    Obtains one certificate for C{config.domains} and stores it.

    @ivar poll_interval: seconds between two polls of a pending validation
        or order.
    @ivar timeout: seconds the whole attempt may take; past it the next
        poll gives up.
    """

    def __init__(
        self,
        config: AcmeConfig,
        reactor: Any,
        storage: Storage,
        challenges: Challenges,
        *,
        poll_interval: float,
        timeout: float,
    ) -> None:
        self.config = config
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._reactor = reactor
        self._storage = storage
        self._challenges = challenges
        self._deadline = 0.0

    def _in_thread(
        self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        reactor = self._reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)

    async def run(self) -> ServerCertificate:
        """
        Obtain the certificate, store it and return it.

        @raise Exception: whatever went wrong; L{steps.describe} says what.
        """
        config = self.config
        self._deadline = self._reactor.seconds() + self.timeout
        client = await self._in_thread(
            steps.open_account,
            config.directory,
            config.ca,
            self._storage,
            config.email,
        )
        key = await self._in_thread(new_certificate_key, config.key_type)
        order = await self._in_thread(steps.new_order, client, config.domains, key)
        pending = steps.http01_challenges(order, steps.account_key(client))
        for challenge in pending:
            self._challenges.publish(challenge.token, challenge.key_authorization)
        try:
            for challenge in pending:
                await self._in_thread(steps.answer, client, challenge)
            for challenge in pending:
                await self._until_valid(client, challenge.authorization)
            fullchain = await self._finalize(client, order)
        finally:
            for challenge in pending:
                self._challenges.withdraw(challenge.token)
        private = key_pem(key)
        path = self._storage.certificate_files(config.domains[0])[0]
        certificate = ServerCertificate.from_pem(fullchain, private, path)
        missing = uncovered(certificate, config.domains)
        if missing:
            raise steps.AcmeError(
                f"the issued certificate does not cover {', '.join(missing)}"
            )
        await self._in_thread(
            self._storage.save_certificate, config.domains[0], fullchain, private
        )
        return certificate

    async def _pause(self, waiting_for: str) -> None:
        if self._reactor.seconds() + self.poll_interval > self._deadline:
            raise steps.AcmeError(
                f"gave up waiting for {waiting_for} after {self.timeout:.0f} s"
            )
        await deferLater(self._reactor, self.poll_interval)

    async def _until_valid(
        self, client: ClientV2, authorization: messages.AuthorizationResource
    ) -> None:
        domain = authorization.body.identifier.value
        while True:
            authorization = await self._in_thread(
                steps.poll_authorization, client, authorization
            )
            status = authorization.body.status
            if status == messages.STATUS_VALID:
                return
            if status != messages.STATUS_PENDING:
                raise steps.AcmeError(steps.validation_error(authorization))
            await self._pause(f"the validation of {domain}")

    async def _finalize(self, client: ClientV2, order: messages.OrderResource) -> bytes:
        order = await self._in_thread(steps.begin_finalization, client, order)
        body = order.body
        while True:
            if body.status == messages.STATUS_VALID and body.certificate:
                return await self._in_thread(
                    steps.download_certificate, client, body.certificate
                )
            if body.status == messages.STATUS_INVALID:
                detail = "" if body.error is None else f": {body.error.detail}"
                raise steps.AcmeError(f"the order failed{detail}")
            await self._pause("the certificate")
            if body.status == messages.STATUS_READY:
                # The server has not taken the CSR yet: send it again.
                order = await self._in_thread(steps.begin_finalization, client, order)
                body = order.body
            else:
                body = await self._in_thread(steps.order_status, client, order)
