"""The retry budget: retries to another backend after a failure are at most
a share of the pool's requests in flight, with a minimum always allowed."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.attempts import BAD_GATEWAY, RETRY_BUDGET, AttemptState, BackendAttempt
from rproxy.backends import Backend, Pool
from rproxy.policy import PoolPolicy
from rproxy.protection import retries_allowed
from rproxy.testing import FakeEndpoints, HTTPHarness


@pytest.mark.parametrize(
    ("in_flight", "budget", "minimum", "allowed"),
    [
        (100, 0.2, 3, 20),
        (10, 0.2, 3, 3),
        (19, 0.2, 3, 3),
        (24, 0.2, 3, 4),
        (0, 0.2, 0, 0),
        (100, 0.0, 3, 3),
        (50, 1.0, 3, 50),
        (100, None, 3, None),
    ],
)
def test_retries_allowed_is_the_share_with_a_floor(
    in_flight: int, budget: float | None, minimum: int, allowed: int | None
) -> None:
    """budget x in flight, rounded down, never below the minimum; no budget
    means no limit."""
    assert retries_allowed(in_flight, budget, minimum) == allowed


class RetryBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = [Backend("127.0.0.1", 9001 + i) for i in range(3)]
        self.pool = Pool(
            "db",
            self.backends,
            fall=100,
            now=self.clock.seconds,
            policy=PoolPolicy(retry_budget=0.5, min_retries=1),
        )
        self.endpoints = FakeEndpoints()
        self.gave_up: list[int] = []

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def attempt(self) -> BackendAttempt:
        attempt = BackendAttempt(
            self.pool,
            self.clock,
            self.endpoints,
            lambda backend: Factory.forProtocol(Protocol),
            connected=lambda backend, protocol: None,
            gave_up=self.gave_up.append,
        )
        attempt.start()
        return attempt

    def test_retry_within_the_budget_goes_on(self) -> None:
        """The minimum always allows a retry; it is counted while under way
        and no longer once the attempt is done."""
        attempt = self.attempt()
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertIs(attempt.state, AttemptState.CONNECTING)
        self.assertEqual((self.pool.retries_active, self.pool.retries_total), (1, 1))
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(self.pool.retries_active, 1)  # the same retry goes on
        self.endpoints.last.succeed()
        attempt.release()
        self.assertEqual(self.pool.retries_active, 0)

    def test_retry_past_the_budget_gives_the_failure_to_the_client(self) -> None:
        """With the retries the budget allows under way, the next failure
        is not retried: the attempt gives up with its failure's status and
        says the budget refused it."""
        retrying = self.attempt()
        self.endpoints.last.fail(ConnectionRefusedError())
        failing = self.attempt()
        # In flight: the retry and the one asking; half of 2 is 1, under way.
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertEqual(self.gave_up, [BAD_GATEWAY])
        self.assertEqual(failing.refused, RETRY_BUDGET)
        self.assertEqual(self.pool.retries_refused, 1)
        self.assertEqual(sum(b.active for b in self.backends), 1)
        retrying.cancel()

    def test_budget_grows_with_the_requests_in_flight(self) -> None:
        """More requests in flight allow more retries at once: with six
        more holding a backend, a second retry goes on."""
        busy = [self.attempt() for _ in range(6)]
        first = self.attempt()
        first_connect = self.endpoints.last
        second = self.attempt()
        second_connect = self.endpoints.last
        first_connect.fail(ConnectionRefusedError())
        second_connect.fail(ConnectionRefusedError())
        # 8 holding a backend, +1 asking: half of 9 is 4 retries allowed.
        self.assertEqual((self.pool.retries_active, self.gave_up), (2, []))
        for attempt in (*busy, first, second):
            attempt.cancel()
        self.assertEqual(self.pool.retries_active, 0)

    def test_a_reset_before_any_answer_takes_from_the_budget(self) -> None:
        """retry() after a connection failed counts as a retry too."""
        self.pool.policy = PoolPolicy(retry_budget=0.0, min_retries=0)
        attempt = self.attempt()
        self.endpoints.last.succeed()
        attempt.retry("reset before any answer")
        self.assertEqual((attempt.refused, self.gave_up), (RETRY_BUDGET, [BAD_GATEWAY]))

    def test_refused_after_a_connect_timeout_gives_504(self) -> None:
        """The failure the client gets is the last one's: 504 for a timeout."""
        self.pool.policy = PoolPolicy(
            retry_budget=0.0, min_retries=0, connect_timeout=1.0
        )
        attempt = self.attempt()
        self.clock.advance(1.0)
        self.assertEqual((attempt.refused, self.gave_up), (RETRY_BUDGET, [504]))

    def test_no_budget_retries_every_try(self) -> None:
        """Without retry_budget every attempt has its connect_tries."""
        self.pool.policy = PoolPolicy()
        attempts = [self.attempt() for _ in range(5)]
        for connect in list(self.endpoints.attempts):
            connect.fail(ConnectionRefusedError())
        self.assertEqual(self.pool.retries_active, 5)
        self.assertEqual(self.gave_up, [])
        for attempt in attempts:
            attempt.cancel()
        self.assertEqual(self.pool.retries_active, 0)


def test_stale_kept_connection_retries_are_free() -> None:
    """A reused connection the backend had closed is tried again without
    taking from the budget (it was not the backend's failure)."""
    clock = Clock()
    pool = Pool(
        "web",
        [Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)],
        now=clock.seconds,
        policy=PoolPolicy(retry_budget=0.0, min_retries=0),
    )
    harness = HTTPHarness(pools=[pool], clock=clock)
    try:
        client = harness.request("GET", "/")
        harness.backend_responds(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert client.response().status == 200
        stale = harness.endpoints.last
        client.request("GET", "/again")
        assert stale.transport is not None
        stale.transport.loseConnection()  # closed under the request
        harness.backend_responds(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert [r.status for r in client.responses()] == [200, 200]
        assert (pool.retries_total, pool.retries_refused) == (0, 0)
    finally:
        harness.close()


def test_refused_retry_names_the_budget_in_the_access_event() -> None:
    """Over HTTP the client gets the failure (502) and the access event
    says the retry budget refused the retry."""
    clock = Clock()
    pool = Pool(
        "web",
        [Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)],
        fall=100,
        now=clock.seconds,
        policy=PoolPolicy(retry_budget=0.0, min_retries=0),
    )
    harness = HTTPHarness(pools=[pool], clock=clock)
    try:
        client = harness.request("GET", "/")
        harness.endpoints.last.fail(ConnectionRefusedError())
        assert client.response().status == 502
        event: dict[str, Any] = harness.access[-1]
        assert (event["status"], event["refused_by"]) == (502, RETRY_BUDGET)
        assert len(harness.endpoints.attempts) == 1
    finally:
        harness.close()
