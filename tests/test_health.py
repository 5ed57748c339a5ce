"""Health monitoring: rise/fall, timeouts, jitter, back-off, and the probes."""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from rproxy.backends import Backend, BackendState, Pool
from rproxy.health import HealthCheckError, HealthMonitor, HTTPCheck, TCPCheck
from rproxy.interfaces import IHealthCheck
from rproxy.policy import PoolPolicy


@implementer(IHealthCheck)
class FakeCheck:
    """A check whose every probe is a Deferred the test fires."""

    name = "fake"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.probes: list[tuple[float, Backend, Deferred[None]]] = []

    def check(self, backend: Backend) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.probes.append((self.clock.seconds(), backend, d))
        return d

    def answer(self, ok: bool) -> None:
        """Fire every pending probe."""
        for _, _, d in self.probes:
            if not d.called:
                if ok:
                    d.callback(None)
                else:
                    d.errback(HealthCheckError("status 503, expected 200-399"))


class HealthMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 9001)
        self.pool = Pool("web", [self.backend], rise=2, fall=3, now=self.clock.seconds)
        self.check = FakeCheck(self.clock)
        self.monitor = HealthMonitor(
            self.pool,
            self.check,
            self.clock,
            interval=2.0,
            timeout=1.0,
            rng=random.Random(7),
        )

    def tearDown(self) -> None:
        if self.monitor.running:
            self.monitor.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def run_checks(self, ok: bool, count: int) -> None:
        """Let C{count} checks happen, each answered with C{ok}."""
        for _ in range(count):
            before = len(self.check.probes)
            while len(self.check.probes) == before:
                self.clock.advance(0.25)
            self.check.answer(ok)

    def test_checks_start_at_jittered_offsets_within_one_interval(self) -> None:
        """Each backend's first check comes at its own offset in [0, interval)."""
        backends = [Backend("127.0.0.1", 9100 + i) for i in range(20)]
        pool = Pool("many", backends, now=self.clock.seconds)
        monitor = HealthMonitor(pool, self.check, self.clock, interval=2.0)
        monitor.startService()
        self.clock.pump([0.01] * 200)
        firsts: dict[Backend, float] = {}
        for at, backend, _ in self.check.probes:
            firsts.setdefault(backend, at)
        self.assertEqual(set(firsts), set(backends))
        self.assertTrue(all(0 <= t < 2.0 + 0.01 for t in firsts.values()))
        self.assertGreater(len({round(t, 2) for t in firsts.values()}), 10)
        self.check.answer(True)
        monitor.stopService()

    def test_checks_repeat_every_interval(self) -> None:
        """After the first check, checks come every interval seconds."""
        self.monitor.startService()
        self.run_checks(True, 3)
        times = [at for at, _, _ in self.check.probes]
        self.assertAlmostEqual(times[1] - times[0], 2.0, delta=0.25)
        self.assertAlmostEqual(times[2] - times[1], 2.0, delta=0.25)

    def test_fall_failed_checks_mark_down(self) -> None:
        """A backend goes down after exactly `fall` failed checks in a row."""
        self.monitor.startService()
        self.run_checks(False, 2)
        self.assertTrue(self.backend.healthy)
        with capturedLogs() as events:
            self.run_checks(False, 1)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(self.backend.state, BackendState.DOWN)
        changes = [e for e in events if e.get("state") == "down"]
        self.assertEqual(len(changes), 1)
        self.assertEqual(changes[0]["backend"], "127.0.0.1:9001")
        self.assertEqual(changes[0]["pool"], "web")
        self.assertIn("503", changes[0]["reason"])

    def test_a_pass_resets_the_failure_run(self) -> None:
        """Failures must be consecutive to count towards fall."""
        self.monitor.startService()
        self.run_checks(False, 2)
        self.run_checks(True, 1)
        self.run_checks(False, 2)
        self.assertTrue(self.backend.healthy)

    def test_rise_passed_checks_mark_up(self) -> None:
        """A down backend comes back after exactly `rise` passed checks."""
        self.pool.mark_down(self.backend, "test")
        self.monitor.startService()
        self.run_checks(True, 1)
        self.assertFalse(self.backend.healthy)
        self.run_checks(True, 1)
        self.assertTrue(self.backend.healthy)
        self.assertEqual(self.backend.reason, "2 checks passed")

    def test_a_check_that_times_out_is_a_failure(self) -> None:
        """A probe with no answer within timeout counts as failed and is cancelled."""
        self.monitor.startService()
        for _ in range(3):
            before = len(self.check.probes)
            while len(self.check.probes) == before:
                self.clock.advance(0.25)
            self.clock.advance(1.0)
            self.assertTrue(self.check.probes[-1][2].called)
        self.assertFalse(self.backend.healthy)
        self.assertIn("timed out", self.backend.reason)

    def test_stopping_cancels_checks_in_flight(self) -> None:
        """Stopping the monitor cancels pending probes and leaves no timers."""
        self.monitor.startService()
        self.clock.advance(2.0)
        self.assertEqual(len(self.check.probes), 1)
        self.monitor.stopService()
        self.assertTrue(self.check.probes[0][2].called)
        self.assertIsNone(self.backend.last_check_ok)

    def test_sync_follows_membership(self) -> None:
        """Backends added to a running pool get checked; removed ones stop."""
        self.monitor.startService()
        newcomer = Backend("127.0.0.1", 9002)
        self.pool.add(newcomer)
        self.pool.remove(self.backend.name)
        self.monitor.sync()
        self.check.probes.clear()
        self.clock.pump([0.25] * 16)
        self.check.answer(True)
        self.assertEqual({b for _, b, _ in self.check.probes}, {newcomer})


class BackoffTests(SynchronousTestCase):
    """A pool with check = "none" retries a down backend after a back-off."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 9001)
        # No panic threshold: passive health may take the lone backend out.
        self.pool = Pool(
            "db",
            [self.backend],
            fall=3,
            now=self.clock.seconds,
            policy=PoolPolicy(panic_threshold=0.0),
        )
        self.monitor = HealthMonitor(self.pool, None, self.clock, interval=2.0)
        self.monitor.startService()

    def tearDown(self) -> None:
        self.monitor.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def fail_passively(self, times: int) -> None:
        for _ in range(times):
            self.pool.report_failure(self.backend, "connection refused")

    def test_down_backend_is_retried_after_interval(self) -> None:
        """Passive failures mark it down; after `interval` it gets traffic again."""
        self.fail_passively(3)
        self.assertFalse(self.backend.healthy)
        self.clock.advance(1.99)
        self.assertFalse(self.backend.healthy)
        self.clock.advance(0.01)
        self.assertTrue(self.backend.healthy)

    def test_a_failed_trial_doubles_the_back_off(self) -> None:
        """One failure after a trial marks it down again, for twice as long."""
        self.fail_passively(3)
        self.clock.advance(2.0)
        self.fail_passively(1)
        self.assertFalse(self.backend.healthy)
        self.clock.advance(3.99)
        self.assertFalse(self.backend.healthy)
        self.clock.advance(0.01)
        self.assertTrue(self.backend.healthy)

    def test_back_off_is_capped(self) -> None:
        """Failing at every trial doubles the back-off up to 32 intervals."""
        self.fail_passively(3)
        waits = []
        for _ in range(8):
            waited = 0.0
            while not self.backend.healthy:
                self.clock.advance(0.5)
                waited += 0.5
            waits.append(waited)
            self.fail_passively(1)
        self.assertEqual(waits, [2, 4, 8, 16, 32, 64, 64, 64])
        self.clock.advance(64)

    def test_a_restarted_monitor_retries_backends_already_down(self) -> None:
        """Stopping and starting the monitor keeps retrying a down backend."""
        self.fail_passively(3)
        self.monitor.stopService()
        self.monitor.startService()
        self.clock.advance(2.0)
        self.assertTrue(self.backend.healthy)

    def test_back_off_resets_after_a_good_spell(self) -> None:
        """A backend that stayed up a while starts again from the first back-off."""
        self.fail_passively(3)
        self.clock.advance(2.0)
        self.fail_passively(1)
        self.clock.advance(4.0)
        self.clock.advance(100.0)
        self.fail_passively(3)
        self.clock.advance(2.0)
        self.assertTrue(self.backend.healthy)


class PanicThresholdTests(SynchronousTestCase):
    """Passive health keeps the pool above its panic threshold (0.5 by
    default); active checks are not bound by it."""

    def setUp(self) -> None:
        self.clock = Clock()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lone_backend_of_a_pool_without_checks_keeps_serving(self) -> None:
        """Three bad responses do not take out the only backend: no back-off,
        it takes the next request."""
        backend = Backend("127.0.0.1", 9001)
        pool = Pool("db", [backend], fall=3, now=self.clock.seconds)
        monitor = HealthMonitor(pool, None, self.clock, interval=2.0)
        monitor.startService()
        with capturedLogs() as events:
            for _ in range(3):
                pool.report_failure(backend, "malformed response")
        self.assertTrue(backend.healthy)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(pool.pick(), backend)
        (kept,) = [e for e in events if e["log_namespace"] == "rproxy.backends"]
        self.assertEqual((kept["backend"], kept["pool"]), ("127.0.0.1:9001", "db"))
        self.assertEqual(kept["reason"], "malformed response")
        monitor.stopService()

    def test_of_two_one_goes_into_back_off_and_the_other_stays(self) -> None:
        """The first backend to fail goes down (and gets its back-off); the
        second, now alone, stays."""
        first, second = Backend("127.0.0.1", 9001), Backend("127.0.0.1", 9002)
        pool = Pool("db", [first, second], fall=3, now=self.clock.seconds)
        monitor = HealthMonitor(pool, None, self.clock, interval=2.0)
        monitor.startService()
        for backend in (first, second):
            for _ in range(3):
                pool.report_failure(backend, "malformed response")
        self.assertEqual((first.healthy, second.healthy), (False, True))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2.0)
        self.assertTrue(first.healthy)
        monitor.stopService()

    def test_active_checks_still_take_the_lone_backend_down(self) -> None:
        """Failed active checks mark the only backend down as before, after
        passive failures the guard had let pass."""
        backend = Backend("127.0.0.1", 9001)
        pool = Pool("web", [backend], fall=3, now=self.clock.seconds)
        check = FakeCheck(self.clock)
        monitor = HealthMonitor(
            pool, check, self.clock, interval=2.0, rng=random.Random(7)
        )
        monitor.startService()
        for _ in range(3):
            pool.report_failure(backend, "reset")
        self.assertTrue(backend.healthy)
        self.clock.advance(2.0)
        check.answer(False)
        self.assertFalse(backend.healthy)
        self.assertIn("failed", backend.reason)
        monitor.stopService()


class RealProbeMonitorTests(SynchronousTestCase):
    """A monitor driving the real TCP probe over a MemoryReactorClock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.backend = Backend("127.0.0.1", 8080)
        self.pool = Pool("p", [self.backend], fall=1, now=self.reactor.seconds)
        self.monitor = HealthMonitor(
            self.pool,
            TCPCheck(self.reactor),
            self.reactor,
            interval=2.0,
            timeout=1.0,
            rng=random.Random(3),
        )
        self.monitor.startService()
        self.reactor.advance(2.0)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_stopping_mid_connect_is_not_a_failed_check(self) -> None:
        """A check cancelled by stopService leaves the backend as it was."""
        self.monitor.stopService()
        self.assertTrue(self.backend.healthy)
        self.assertIsNone(self.backend.last_check_ok)

    def test_a_connect_that_times_out_reads_timed_out(self) -> None:
        """A probe stuck connecting fails as 'timed out'."""
        self.reactor.advance(1.0)
        self.assertFalse(self.backend.healthy)
        self.assertEqual(self.backend.reason, "1 check failed, last: timed out")
        self.monitor.stopService()


class ProbeTests(SynchronousTestCase):
    """The real probes, over a MemoryReactorClock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.backend = Backend("127.0.0.1", 8080)

    def connect_last(self) -> StringTransport:
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("127.0.0.1", 8080))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocol = protocol
        return transport

    def test_probes_provide_the_interface(self) -> None:
        """Both probes provide IHealthCheck."""
        verifyObject(IHealthCheck, TCPCheck(self.reactor))
        verifyObject(IHealthCheck, HTTPCheck(self.reactor))

    def test_tcp_check_passes_on_connect_and_hangs_up(self) -> None:
        """A TCP check passes once the connection opens, then closes it."""
        d = TCPCheck(self.reactor).check(self.backend)
        transport = self.connect_last()
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)

    def test_tcp_check_fails_when_refused(self) -> None:
        """A refused connection fails the TCP check."""
        d = TCPCheck(self.reactor).check(self.backend)
        connector = self.reactor.connectors[-1]
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(connector, ConnectionRefusedError())
        self.failureResultOf(d, ConnectionRefusedError)

    def test_tcp_check_uses_the_check_port(self) -> None:
        """A configured check port is probed instead of the traffic port."""
        TCPCheck(self.reactor, port=9999).check(self.backend)
        self.assertEqual(self.reactor.tcpClients[-1][1], 9999)

    def test_http_check_sends_get_with_host(self) -> None:
        """The HTTP check sends GET path with the configured Host header."""
        check = HTTPCheck(self.reactor, path="/healthz", host="app.internal")
        check.check(self.backend)
        transport = self.connect_last()
        self.assertEqual(
            transport.value(),
            b"GET /healthz HTTP/1.1\r\nHost: app.internal\r\n"
            b"User-Agent: rproxy-health\r\nConnection: close\r\n\r\n",
        )

    def test_http_check_passes_on_expected_status(self) -> None:
        """A status inside the expected range passes, even split across reads."""
        d = HTTPCheck(self.reactor, expect_status=(200, 204)).check(self.backend)
        transport = self.connect_last()
        self.protocol.dataReceived(b"HTTP/1.1 20")
        self.assertNoResult(d)
        self.protocol.dataReceived(b"4 No Content\r\n\r\n")
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)

    def test_http_check_fails_on_other_status(self) -> None:
        """A status outside the range fails with the status in the reason."""
        d = HTTPCheck(self.reactor).check(self.backend)
        self.connect_last()
        self.protocol.dataReceived(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        failure = self.failureResultOf(d, HealthCheckError)
        self.assertEqual(str(failure.value), "status 503, expected 200-399")

    def test_http_check_fails_on_garbage(self) -> None:
        """A reply that is not HTTP fails the check."""
        d = HTTPCheck(self.reactor).check(self.backend)
        self.connect_last()
        self.protocol.dataReceived(b"SSH-2.0-OpenSSH_9.2\r\n")
        self.failureResultOf(d, HealthCheckError)

    def test_http_check_fails_when_closed_before_status(self) -> None:
        """A connection closed before a status line fails the check."""
        d = HTTPCheck(self.reactor).check(self.backend)
        self.connect_last()
        self.protocol.connectionLost(None)
        self.failureResultOf(d, HealthCheckError)

    def test_cancelling_a_check_aborts_its_connection(self) -> None:
        """Cancelling (as the timeout does) drops the probe's connection."""
        d = HTTPCheck(self.reactor).check(self.backend)
        transport = self.connect_last()
        d.cancel()
        self.assertTrue(transport.disconnecting)
        self.failureResultOf(d)
