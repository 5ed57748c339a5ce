"""Automatic certificates without an ACME server: storage, the renewal
decision, the stored certificate at start, back-off on failure, and one
attempt's steps (challenges, polling, finalization) on a Clock with the
ACME steps faked."""

from __future__ import annotations

import datetime
import itertools
import os
import shutil
import socket
import stat
import tempfile
from typing import Any

import trustme
from acme import challenges as acme_challenges
from acme import messages
from cryptography.hazmat.primitives import serialization
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rproxy.acme import _attempt as _acme_attempt
from rproxy.acme import _protocol as _acme_protocol
from rproxy.acme._protocol import HTTP01
from rproxy.acme._storage import Storage, write_atomically
from rproxy.acme.challenges import CHALLENGE_PREFIX, Challenges
from rproxy.acme.service import AcmeService, renewal_reason, retry_delay
from rproxy.config import AcmeConfig
from rproxy.tls import ServerCertificate

DOMAINS = ("example.test", "www.example.test")
DAY = 86400.0
HOUR = 3600.0


def temporary_directory(test: SynchronousTestCase) -> str:
    """A new directory, removed after C{test}."""
    path = tempfile.mkdtemp(prefix="rproxy-acme-")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class SynchronousThreadPool:
    """Runs what is given to a thread at once, and remembers what it was."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def callInThreadWithCallback(
        self, on_result: Any, f: Any, *args: Any, **kwargs: Any
    ) -> None:
        self.calls.append(f.__name__)
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class ThreadedClock(Clock):
    """A Clock with a thread pool that runs its work synchronously."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = SynchronousThreadPool()

    def getThreadPool(self) -> SynchronousThreadPool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def issue(
    authority: trustme.CA, *names: str, lifetime: float
) -> tuple[bytes, bytes, ServerCertificate]:
    """A certificate for C{names} valid from an hour ago for C{lifetime}
    seconds from now: its PEM, its key's PEM, and it loaded."""
    now = datetime.datetime.now(datetime.UTC)
    leaf = authority.issue_cert(
        *names,
        not_before=now - datetime.timedelta(hours=1),
        not_after=now + datetime.timedelta(seconds=lifetime),
    )
    cert_pem = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    key_pem = leaf.private_key_pem.bytes()
    return cert_pem, key_pem, ServerCertificate.from_pem(cert_pem, key_pem, "test")


class StorageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.join(temporary_directory(self), "acme")
        self.storage = Storage(self.root)

    def test_account_key_is_made_once_and_kept_private(self) -> None:
        """The first call makes the account key in a 0700 directory as a 0600
        file; later calls read the same key back."""
        key = self.storage.account_key()
        path = os.path.join(self.root, "account", "key.pem")
        self.assertEqual(mode(self.root), 0o700)
        self.assertEqual(mode(os.path.dirname(path)), 0o700)
        self.assertEqual(mode(path), 0o600)
        with open(path, "rb") as f:
            pem = f.read()
        self.assertEqual(self.storage.account_key().thumbprint(), key.thumbprint())
        with open(path, "rb") as f:
            self.assertEqual(f.read(), pem)

    def test_certificate_is_stored_and_loaded(self) -> None:
        """A stored certificate loads back with its names; its key is 0600."""
        cert_pem, key_pem, _ = issue(trustme.CA(), *DOMAINS, lifetime=90 * DAY)
        self.assertIsNone(self.storage.load_certificate(DOMAINS[0]))
        self.storage.save_certificate(DOMAINS[0], cert_pem, key_pem)
        fullchain, privkey = self.storage.certificate_files(DOMAINS[0])
        self.assertEqual(
            fullchain,
            os.path.join(self.root, "certificates", DOMAINS[0], "fullchain.pem"),
        )
        self.assertEqual(mode(privkey), 0o600)
        self.assertEqual(mode(fullchain), 0o644)
        self.assertEqual(mode(os.path.dirname(privkey)), 0o700)
        loaded = self.storage.load_certificate(DOMAINS[0])
        assert loaded is not None
        self.assertEqual(loaded.names, DOMAINS)

    def test_certificate_with_another_key_is_unusable(self) -> None:
        """A certificate stored beside a key that is not its own (a crash
        between the two writes) does not load."""
        authority = trustme.CA()
        cert_pem, _, _ = issue(authority, *DOMAINS, lifetime=90 * DAY)
        _, other_key, _ = issue(authority, *DOMAINS, lifetime=90 * DAY)
        self.storage.save_certificate(DOMAINS[0], cert_pem, other_key)
        self.assertRaises(ValueError, self.storage.load_certificate, DOMAINS[0])

    def test_write_atomically_replaces_whole_files(self) -> None:
        """A file is replaced by a new one with the given mode; a write that
        fails leaves the old content and no temporary file behind."""
        directory = temporary_directory(self)
        path = os.path.join(directory, "file")
        write_atomically(path, b"first", 0o644)
        before = os.stat(path).st_ino
        write_atomically(path, b"second", 0o600)
        self.assertEqual(mode(path), 0o600)
        self.assertNotEqual(os.stat(path).st_ino, before)
        self.assertRaises(TypeError, write_atomically, path, "not bytes", 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"second")
        self.assertEqual(os.listdir(directory), ["file"])


class DecisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.authority = trustme.CA()
        self.now = datetime.datetime.now(datetime.UTC)

    def test_missing_certificate_is_obtained(self) -> None:
        self.assertEqual(
            renewal_reason(None, DOMAINS, self.now, 30.0), "no certificate yet"
        )

    def test_valid_certificate_stays(self) -> None:
        """A certificate for every domain expiring after renew_before stays."""
        _, _, certificate = issue(self.authority, *DOMAINS, lifetime=31 * DAY)
        self.assertIsNone(renewal_reason(certificate, DOMAINS, self.now, 30.0))

    def test_wildcard_certificate_covers_a_subdomain(self) -> None:
        _, _, certificate = issue(
            self.authority, "example.test", "*.example.test", lifetime=90 * DAY
        )
        self.assertIsNone(renewal_reason(certificate, DOMAINS, self.now, 30.0))

    def test_certificate_within_renew_before_is_renewed(self) -> None:
        _, _, certificate = issue(self.authority, *DOMAINS, lifetime=29 * DAY)
        reason = renewal_reason(certificate, DOMAINS, self.now, 30.0)
        self.assertEqual(reason, "the certificate expires in 29.0 days")

    def test_expired_certificate_is_renewed(self) -> None:
        _, _, certificate = issue(self.authority, *DOMAINS, lifetime=DAY)
        later = self.now + datetime.timedelta(days=2)
        reason = renewal_reason(certificate, DOMAINS, later, 30.0)
        assert reason is not None
        self.assertTrue(reason.startswith("the certificate expired on "), reason)

    def test_certificate_missing_a_domain_is_replaced(self) -> None:
        _, _, certificate = issue(self.authority, DOMAINS[0], lifetime=90 * DAY)
        reason = renewal_reason(certificate, DOMAINS, self.now, 30.0)
        self.assertEqual(reason, "the certificate does not cover www.example.test")

    def test_retry_delays_double_up_to_six_hours(self) -> None:
        delays = [retry_delay(n) for n in range(1, 12)]
        self.assertEqual(
            delays,
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600],
        )
        self.assertEqual(retry_delay(10_000), 21600)


class ServiceTestCase(SynchronousTestCase):
    """A service over a fresh storage directory on a L{ThreadedClock} set to
    now, with a directory URL on a port that refuses connections."""

    def setUp(self) -> None:
        self.clock = ThreadedClock()
        self.clock.advance(datetime.datetime.now(datetime.UTC).timestamp())
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        self.addCleanup(closed.close)
        self.storage = os.path.join(temporary_directory(self), "acme")
        self.config = AcmeConfig(
            directory=f"http://127.0.0.1:{closed.getsockname()[1]}/dir",
            storage=self.storage,
            domains=DOMAINS,
            renew_before=30.0,
        )
        self.challenges = Challenges()
        self.installed: list[ServerCertificate] = []
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        self.authority = trustme.CA()

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "rproxy.acme":
            self.events.append(event)

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["log_level"] == LogLevel.error]

    def service(self, **kwargs: Any) -> AcmeService:
        service = AcmeService(
            self.config, self.clock, self.challenges, self.installed.append, **kwargs
        )
        self.addCleanup(self.assertStoppedCleanly, service)
        return service

    def assertStoppedCleanly(self, service: AcmeService) -> None:
        if service.running:
            service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def store(self, lifetime: float) -> ServerCertificate:
        cert_pem, key_pem, certificate = issue(
            self.authority, *DOMAINS, lifetime=lifetime
        )
        Storage(self.storage).save_certificate(DOMAINS[0], cert_pem, key_pem)
        return certificate


class StartTests(ServiceTestCase):
    def test_installs_stored_certificate_without_contacting_the_server(self) -> None:
        """A stored certificate far from expiry is installed at start, and no
        ACME request is made; the next check is 12 hours later."""
        stored = self.store(90 * DAY)
        service = self.service()
        service.startService()
        self.assertEqual(len(self.installed), 1)
        self.assertEqual(
            self.installed[0].certificate.serial_number,
            stored.certificate.serial_number,
        )
        self.assertEqual(self.clock.pool.calls, [])
        [loop] = self.clock.getDelayedCalls()
        self.assertEqual(loop.getTime() - self.clock.seconds(), 12 * HOUR)
        self.assertEqual(self.errors(), [])
        service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stored_certificate_due_for_renewal_is_served_and_renewed(self) -> None:
        """A stored certificate within renew_before of expiry is installed,
        then renewed at once: here the server cannot be reached, so the
        failure is logged and a retry scheduled a minute later."""
        self.store(10 * DAY)
        service = self.service()
        service.startService()
        self.assertEqual(len(self.installed), 1)
        self.assertEqual(self.clock.pool.calls, ["open_account"])
        [event] = self.errors()
        self.assertIn("Connection refused", event["reason"])
        self.assertEqual(event["retry"], 60.0)
        self.assertEqual(service.failures, 1)
        self.assertEqual(service.next_retry, self.clock.seconds() + 60)

    def test_stored_certificate_missing_a_domain_is_replaced(self) -> None:
        """A stored certificate that does not cover every configured domain
        is not installed; a new one is requested at once."""
        cert_pem, key_pem, _ = issue(self.authority, DOMAINS[0], lifetime=90 * DAY)
        Storage(self.storage).save_certificate(DOMAINS[0], cert_pem, key_pem)
        service = self.service()
        service.startService()
        self.assertEqual(self.installed, [])
        self.assertEqual(self.clock.pool.calls, ["open_account"])
        self.assertIn("does not cover www.example.test", self.events[0]["reason"])

    def test_mismatched_stored_files_are_not_installed(self) -> None:
        """A stored certificate beside a key that is not its own is reported
        and not installed; a new one is requested at once."""
        cert_pem, _, _ = issue(self.authority, *DOMAINS, lifetime=90 * DAY)
        _, other_key, _ = issue(self.authority, *DOMAINS, lifetime=90 * DAY)
        Storage(self.storage).save_certificate(DOMAINS[0], cert_pem, other_key)
        service = self.service()
        service.startService()
        self.assertEqual(self.installed, [])
        self.assertEqual(self.events[0]["log_level"], LogLevel.warn)
        self.assertIn("does not match", self.events[0]["reason"])
        self.assertEqual(self.clock.pool.calls, ["open_account"])

    def test_periodic_check_renews_when_due(self) -> None:
        """With a certificate valid for 40 more days, the 12-hourly checks
        start renewing it at the first check within 30 days of expiry."""
        stored = self.store(40 * DAY)
        service = self.service()
        service.startService()
        due = stored.not_after.timestamp() - 30 * DAY
        while not self.clock.pool.calls:
            self.assertLess(self.clock.seconds(), due + 12 * HOUR)
            self.clock.advance(12 * HOUR)
        self.assertGreaterEqual(self.clock.seconds(), due)


class BackOffTests(ServiceTestCase):
    def test_failures_are_retried_with_doubling_delays(self) -> None:
        """Each failed attempt is logged with its reason and the next attempt
        comes after 60 s, doubling up to six hours."""
        service = self.service()
        service.startService()
        attempts = [self.clock.seconds()]
        for _ in range(10):
            assert service.next_retry is not None
            self.clock.advance(service.next_retry - self.clock.seconds())
            attempts.append(self.clock.seconds())
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        self.assertEqual(gaps, [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600])
        self.assertEqual(len(self.clock.pool.calls), 11)
        self.assertEqual([e["retry"] for e in self.errors()], [*gaps, 21600])
        self.assertEqual(service.failures, 11)

    def test_check_during_back_off_replaces_the_retry(self) -> None:
        """A check called while a retry waits runs now, and schedules the
        next retry from its own failure."""
        service = self.service()
        service.startService()
        self.clock.advance(10)
        d = service.check()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.clock.pool.calls), 2)
        self.assertEqual(service.next_retry, self.clock.seconds() + 120)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # loop and retry

    def test_stop_leaves_nothing_scheduled(self) -> None:
        """Stopping during back-off cancels the retry and the periodic check;
        nothing runs afterwards."""
        service = self.service()
        service.startService()
        service.stopService()
        self.assertIsNone(service.next_retry)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(7 * DAY)
        self.assertEqual(self.clock.pool.calls, ["open_account"])


class FakeAcme:
    """Stands in for the ACME steps of L{rproxy.acme._protocol}: one order
    whose authorizations turn valid (or C{outcome}) after C{pending_polls}
    polls, then a certificate issued by C{authority} after one more poll."""

    def __init__(
        self,
        clock: Clock,
        challenges: Challenges,
        authority: trustme.CA,
        *,
        pending_polls: int = 2,
        outcome: messages.Status = messages.STATUS_VALID,
    ) -> None:
        self.clock = clock
        self.challenges = challenges
        self.pending_polls = pending_polls
        self.outcome = outcome
        self.steps: list[tuple[float, str]] = []
        self.answered_with: list[bytes | None] = []
        self.polls: dict[str, int] = {}
        self.cert_pem, key_pem, _ = issue(authority, *DOMAINS, lifetime=90 * DAY)
        self.key = serialization.load_pem_private_key(key_pem, None)

    def install(self, test: SynchronousTestCase) -> None:
        for name in (
            "open_account",
            "account_key",
            "new_order",
            "http01_challenges",
            "answer",
            "poll_authorization",
            "begin_finalization",
            "order_status",
            "download_certificate",
        ):
            test.patch(_acme_protocol, name, getattr(self, name))
        test.patch(_acme_attempt, "new_certificate_key", self.new_certificate_key)

    def _step(self, name: str) -> None:
        self.steps.append((self.clock.seconds(), name))

    def open_account(self, *args: Any) -> str:
        self._step("open_account")
        return "client"

    def account_key(self, client: str) -> str:
        return "account key"

    def new_certificate_key(self, key_type: str) -> Any:
        return self.key

    def new_order(self, client: str, domains: Any, key: Any) -> Any:
        self._step("new_order")
        authorizations = [
            messages.AuthorizationResource(
                uri=f"https://acme.test/authz/{domain}",
                body=messages.Authorization(
                    identifier=messages.Identifier(
                        typ=messages.IDENTIFIER_FQDN, value=domain
                    ),
                    status=messages.STATUS_PENDING,
                    challenges=[],
                ),
            )
            for domain in domains
        ]
        return messages.OrderResource(
            uri="https://acme.test/order/1",
            body=messages.Order(status=messages.STATUS_PENDING),
            authorizations=authorizations,
        )

    def http01_challenges(self, order: Any, account_key: str) -> list[HTTP01]:
        return [
            HTTP01(
                a.body.identifier.value,
                f"token-{a.body.identifier.value}",
                f"token-{a.body.identifier.value}.thumbprint",
                a,
                None,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
            )
            for a in order.authorizations
        ]

    def answer(self, client: str, challenge: HTTP01) -> None:
        self._step(f"answer {challenge.domain}")
        self.answered_with.append(
            self.challenges.answer(CHALLENGE_PREFIX + challenge.token.encode())
        )

    def poll_authorization(self, client: str, authorization: Any) -> Any:
        domain = authorization.body.identifier.value
        self._step(f"poll {domain}")
        polls = self.polls[domain] = self.polls.get(domain, 0) + 1
        if polls <= self.pending_polls:
            return authorization
        error = None
        if self.outcome != messages.STATUS_VALID:
            error = messages.Error(
                typ="urn:ietf:params:acme:error:connection", detail="connection refused"
            )
        challenge = messages.ChallengeBody(
            chall=acme_challenges.HTTP01(token=b"t" * 16),
            status=self.outcome,
            error=error,
        )
        return authorization.update(
            body=authorization.body.update(status=self.outcome, challenges=[challenge])
        )

    def begin_finalization(self, client: str, order: Any) -> Any:
        self._step("finalize")
        return order.update(body=messages.Order(status=messages.STATUS_PROCESSING))

    def order_status(self, client: str, order: Any) -> Any:
        self._step("order status")
        return messages.Order(
            status=messages.STATUS_VALID, certificate="https://acme.test/cert/1"
        )

    def download_certificate(self, client: str, url: str) -> bytes:
        self._step("download")
        return self.cert_pem


class AttemptTests(ServiceTestCase):
    """One attempt's steps and waits, with the ACME steps faked."""

    def fake(self, **kwargs: Any) -> FakeAcme:
        fake = FakeAcme(self.clock, self.challenges, self.authority, **kwargs)
        fake.install(self)
        return fake

    def test_obtains_publishing_challenges_only_while_needed(self) -> None:
        """The challenges are published before the server is told to
        validate, polled every poll_interval on the reactor, withdrawn once
        the order is done; the certificate is stored, installed and logged."""
        fake = self.fake(pending_polls=2)
        service = self.service(poll_interval=2.0)
        start = self.clock.seconds()
        service.startService()
        self.assertEqual(
            fake.answered_with,
            [
                b"token-example.test.thumbprint",
                b"token-www.example.test.thumbprint",
            ],
        )
        self.assertEqual(len(self.challenges), 2)
        self.assertEqual(self.installed, [])
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        # example.test is valid now; both stay published until the order ends.
        self.assertEqual(len(self.challenges), 2)
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertEqual(
            [(t - start, step) for t, step in fake.steps],
            [
                (0, "open_account"),
                (0, "new_order"),
                (0, "answer example.test"),
                (0, "answer www.example.test"),
                (0, "poll example.test"),
                (2, "poll example.test"),
                (4, "poll example.test"),
                (4, "poll www.example.test"),
                (6, "poll www.example.test"),
                (8, "poll www.example.test"),
                (8, "finalize"),
                (10, "order status"),
                (10, "download"),
            ],
        )
        self.assertEqual(len(self.challenges), 0)
        [certificate] = self.installed
        self.assertEqual(certificate.names, DOMAINS)
        self.assertIs(service.certificate, certificate)
        stored = Storage(self.storage).load_certificate(DOMAINS[0])
        assert stored is not None
        self.assertEqual(
            stored.certificate.serial_number, certificate.certificate.serial_number
        )
        [event] = [e for e in self.events if e.get("action") == "obtained"]
        self.assertEqual(event["not_after"], certificate.not_after.isoformat())
        self.assertEqual(event["domains"], "example.test, www.example.test")
        self.assertEqual(self.errors(), [])
        self.assertIsNone(service.next_retry)

    def test_invalid_authorization_fails_the_attempt(self) -> None:
        """A challenge the server found invalid ends the attempt: the reason
        is logged, the challenges withdrawn and a retry scheduled."""
        self.fake(pending_polls=0, outcome=messages.STATUS_INVALID)
        service = self.service()
        service.startService()
        [event] = self.errors()
        self.assertEqual(
            event["reason"],
            "validation of example.test failed: http-01: connection refused",
        )
        self.assertEqual(len(self.challenges), 0)
        self.assertEqual(self.installed, [])
        self.assertEqual(service.next_retry, self.clock.seconds() + 60)

    def test_validation_that_never_ends_times_out(self) -> None:
        """Polling stops after order_timeout: the attempt fails and is
        retried."""
        fake = self.fake(pending_polls=10**6)
        service = self.service(poll_interval=1.0, order_timeout=30.0)
        service.startService()
        self.clock.pump([1.0] * 40)
        [event] = self.errors()
        self.assertEqual(
            event["reason"],
            "gave up waiting for the validation of example.test after 30 s",
        )
        self.assertEqual(fake.polls["example.test"], 31)  # at 0, 1, ... 30 s
        self.assertEqual(len(self.challenges), 0)

    def test_stop_during_validation_withdraws_and_schedules_nothing(self) -> None:
        """Stopping while polling gives the attempt up: challenges withdrawn,
        no timer left, nothing installed, the check's Deferred fired."""
        fake = self.fake(pending_polls=5)
        service = self.service()
        service.startService()
        checked = service.check()
        self.assertNoResult(checked)
        self.assertEqual(len(self.challenges), 2)
        service.stopService()
        self.assertIsNone(self.successResultOf(checked))
        self.assertEqual(len(self.challenges), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.errors(), [])
        steps = len(fake.steps)
        self.clock.advance(DAY)
        self.assertEqual(len(fake.steps), steps)
        self.assertEqual(self.installed, [])

    def test_check_during_an_attempt_joins_it(self) -> None:
        """A check while an attempt runs starts no second order; it fires
        when the attempt ends."""
        fake = self.fake(pending_polls=1)
        service = self.service()
        service.startService()
        checked = service.check()
        self.assertNoResult(checked)
        self.clock.pump([1.0] * 5)
        self.assertIsNone(self.successResultOf(checked))
        self.assertEqual([s for _, s in fake.steps].count("new_order"), 1)
        self.assertEqual(len(self.installed), 1)

    def test_success_after_failures_ends_the_back_off(self) -> None:
        """After failures, a successful attempt resets the count and leaves
        only the periodic check scheduled."""
        service = self.service()
        service.startService()
        self.assertEqual(service.failures, 1)
        self.fake(pending_polls=0)
        self.clock.advance(60)
        self.clock.pump([1.0] * 3)
        self.assertEqual(len(self.installed), 1)
        self.assertEqual(service.failures, 0)
        self.assertIsNone(service.next_retry)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
