"""Automatic certificates over ACME (RFC 8555): obtains the configured
certificate with HTTP-01 challenges, stores it, installs it and renews it
before it expires.

The ACME requests are made by certbot's C{acme} library, which blocks: each
step runs in the reactor's thread pool, and everything that changes state
(publishing challenge answers, installing certificates, scheduling) happens
on the reactor thread, timed by the injected reactor.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.acme._attempt import Attempt, uncovered
from rproxy.acme._protocol import describe
from rproxy.acme._storage import Storage
from rproxy.acme.challenges import Challenges
from rproxy.config._tls import AcmeConfig
from rproxy.tls import ServerCertificate

__all__ = ["AcmeService", "renewal_reason", "retry_delay"]

log = Logger(namespace="rproxy.acme")

#: Seconds between two checks of the certificate's expiry.
CHECK_INTERVAL = 12 * 3600.0
#: Seconds before the first retry after a failure; doubled after each one.
FIRST_RETRY = 60.0
#: The longest wait between two retries, in seconds.
LONGEST_RETRY = 6 * 3600.0


def renewal_reason(
    certificate: ServerCertificate | None,
    domains: Sequence[str],
    now: datetime.datetime,
    renew_before: float,
) -> str | None:
    """
    Why a certificate for C{domains} must be obtained at C{now}, given the
    one there is (C{certificate}), or None if it can stay: it covers every
    domain and expires more than C{renew_before} days from C{now}.
    """
    if certificate is None:
        return "no certificate yet"
    missing = uncovered(certificate, domains)
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    left = certificate.not_after - now
    if left <= datetime.timedelta(0):
        return f"the certificate expired on {certificate.not_after.isoformat()}"
    if left < datetime.timedelta(days=renew_before):
        days = left / datetime.timedelta(days=1)
        return f"the certificate expires in {days:.1f} days"
    return None


def retry_delay(
    failures: int, first: float = FIRST_RETRY, longest: float = LONGEST_RETRY
) -> float:
    """
    Seconds to wait after the C{failures}th failure in a row: C{first},
    doubling each time, at most C{longest}.
    """
    doublings = min(max(failures - 1, 0), 64)
    return float(min(first * 2.0**doublings, longest))


class AcmeService(Service):
    """
    Keeps a certificate for C{config.domains} from the ACME server at
    C{config.directory}, stored under C{config.storage}, and passes each one
    it obtains (and the stored one at start) to C{install}.

    HTTP-01 only: the key authorizations are published to C{challenges},
    which the plain HTTP listeners on port 80 serve.  Configuring it agrees
    to the ACME server's terms of service on the account's behalf.

    Failures are logged and retried after L{retry_delay}; nothing raises out
    of the service.

    @ivar certificate: the certificate in use, if any.
    @ivar failures: how many attempts in a row have failed.
    @ivar check_interval: seconds between two checks of the expiry.
    @ivar poll_interval: seconds between two polls of a pending validation
        or order.
    @ivar order_timeout: seconds one attempt may take from the order to the
        certificate.
    """

    def __init__(
        self,
        config: AcmeConfig,
        reactor: Any,
        challenges: Challenges,
        install: Callable[[ServerCertificate], None],
        *,
        check_interval: float = CHECK_INTERVAL,
        poll_interval: float = 1.0,
        order_timeout: float = 300.0,
    ) -> None:
        self.config = config
        self.check_interval = check_interval
        self.poll_interval = poll_interval
        self.order_timeout = order_timeout
        self.certificate: ServerCertificate | None = None
        self.failures = 0
        self._reactor = reactor
        self._challenges = challenges
        self._install = install
        self._storage = Storage(config.storage)
        self._loop: LoopingCall | None = None
        self._retry: IDelayedCall | None = None
        self._attempt: Deferred[None] | None = None
        self._waiting: list[Deferred[None]] = []

    @property
    def next_retry(self) -> float | None:
        """
        When (in the reactor's seconds) the next attempt after a failure is
        due, or None if none is scheduled.
        """
        return None if self._retry is None else self._retry.getTime()

    def startService(self) -> None:
        """
        Install the stored certificate if it is usable, then check now and
        every L{check_interval} seconds.
        """
        super().startService()
        self._load()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._loop.start(self.check_interval, now=True).addErrback(
            lambda failure: log.failure("certificate checks stopped", failure)
        )

    def stopService(self) -> None:
        """
        Stop checking, cancel a retry and give up an attempt in progress
        (its challenges are withdrawn).
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._cancel_retry()
        if self._attempt is not None:
            self._attempt.cancel()

    def check(self) -> Deferred[None]:
        """
        Obtain the certificate if missing, renew it if within renew_before of
        expiry; never fails (errors are logged and retried with back-off).

        @return: fires when done, or when the attempt already in progress is.
        """
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if self._attempt is None:
            self._cancel_retry()
            self._attempt = Deferred.fromCoroutine(self._check())
            self._attempt.addErrback(self._unexpected)
            self._attempt.addBoth(self._finished)
        return done

    def _load(self) -> None:
        domains = self.config.domains
        try:
            stored = self._storage.load_certificate(domains[0])
        except ValueError as e:
            log.warn("stored certificate unusable: {reason}", reason=str(e))
            return
        if stored is None:
            return
        reason = renewal_reason(stored, domains, self._now(), 0.0)
        if reason is not None:
            log.info(
                "stored certificate {source} not used: {reason}",
                source=stored.source,
                reason=reason,
            )
            return
        log.info(
            "stored certificate for {domains} valid until {not_after}",
            domains=_names(domains),
            not_after=stored.not_after.isoformat(),
        )
        self.certificate = stored
        self._install_certificate(stored)

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._reactor.seconds(), datetime.UTC)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _retry_now(self) -> None:
        self._retry = None
        self.check()

    def _unexpected(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("certificate check failed", failure)

    def _finished(self, _: object) -> None:
        self._attempt = None
        waiting, self._waiting = self._waiting, []
        for done in waiting:
            done.callback(None)

    async def _check(self) -> None:
        domains = self.config.domains
        reason = renewal_reason(
            self.certificate, domains, self._now(), self.config.renew_before
        )
        if reason is None:
            return
        log.info(
            "requesting a certificate for {domains}: {reason}",
            domains=_names(domains),
            reason=reason,
        )
        try:
            certificate = await Attempt(
                self.config,
                self._reactor,
                self._storage,
                self._challenges,
                poll_interval=self.poll_interval,
                timeout=self.order_timeout,
            ).run()
        except CancelledError:
            raise
        except Exception as e:
            self.failures += 1
            delay = retry_delay(self.failures)
            log.error(
                "could not obtain a certificate for {domains}: {reason}; "
                "next attempt in {retry:.0f} s",
                domains=_names(domains),
                reason=describe(e),
                retry=delay,
                failures=self.failures,
            )
            if self.running:
                self._retry = self._reactor.callLater(delay, self._retry_now)
            return
        action = "obtained" if self.certificate is None else "renewed"
        self.failures = 0
        self.certificate = certificate
        log.info(
            "{action} certificate for {domains}, valid until {not_after}",
            action=action,
            domains=_names(domains),
            not_after=certificate.not_after.isoformat(),
            serial=f"{certificate.certificate.serial_number:x}",
        )
        self._install_certificate(certificate)

    def _install_certificate(self, certificate: ServerCertificate) -> None:
        try:
            self._install(certificate)
        except Exception:
            log.failure(
                "installing the certificate for {domains} failed",
                domains=_names(certificate.names),
            )


def _names(domains: Sequence[str]) -> str:
    return ", ".join(domains)
