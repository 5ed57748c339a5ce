"""The file descriptor budget's decisions (no I/O: listeners are counters,
the clock a Clock, the recount a function), raising the soft limit with a
fake getrlimit/setrlimit, and the listener service refusing at accept."""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rproxy._fds import (
    CONNECTION_FDS,
    PIPE_FDS,
    FdBudget,
    FdLimit,
    kept_alive_most,
    raise_fd_limit,
)
from rproxy.backends import Backend, Pool
from rproxy.config import load_config
from rproxy.service._listeners import ListenerService
from rproxy.tcp import TCPProxyFactory

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class Listener:
    """A listener's open connections, as the budget reads them."""

    def __init__(self, budget: FdBudget, name: str) -> None:
        self.name = name
        self.open = 0
        self.budget = budget
        budget.add_listener(self, name, lambda: self.open)

    def take_all(self) -> int:
        """Take connections while the budget admits them; how many."""
        taken = 0
        while self.budget.admit(self):
            self.open += 1
            taken += 1
        return taken


def budget(limit: int = 256, in_use: int = 10, **kwargs: Any) -> FdBudget:
    kwargs.setdefault("count_open", lambda: None)
    return FdBudget(limit, in_use=in_use, now=Clock().seconds, **kwargs)


class FdBudgetTests(SynchronousTestCase):
    def test_floor_reserve_and_splice_floor_follow_the_limit(self) -> None:
        """A small limit keeps 8 free, 16 in reserve and pipes out of the
        last half; larger limits keep proportionally more, capped."""
        small, common, large = budget(256), budget(1024), budget(1 << 20)
        self.assertEqual((small.floor, small.reserve, small.splice_floor), (8, 16, 128))
        self.assertEqual(
            (common.floor, common.reserve, common.splice_floor), (16, 64, 512)
        )
        self.assertEqual((large.floor, large.reserve), (256, 4096))
        self.assertEqual(large.splice_floor, 1 << 19)

    def test_a_lone_listener_takes_all_but_the_floor(self) -> None:
        """With one listener, its share is everything above the floor, so
        it may use the reserve too."""
        fds = budget(256, in_use=10)
        front = Listener(fds, "front")
        self.assertEqual(front.take_all(), (256 - 10 - fds.floor) // CONNECTION_FDS)
        self.assertEqual(fds.free(), fds.floor)

    def test_a_flooded_listener_leaves_the_reserve_to_the_others(self) -> None:
        """A listener over its share stops with floor + reserve free; the
        other listener may then still take connections from the reserve."""
        fds = budget(256, in_use=10)
        flooded, web = Listener(fds, "flooded"), Listener(fds, "web")
        flooded.take_all()
        self.assertGreater(fds.held(flooded), fds.share())
        self.assertLess(fds.free(), fds.floor + fds.reserve + CONNECTION_FDS)
        self.assertGreaterEqual(fds.free(), fds.floor + fds.reserve)
        self.assertFalse(fds.admit(flooded))
        self.assertEqual(web.take_all(), fds.reserve // CONNECTION_FDS)
        self.assertEqual(fds.free(), fds.floor)
        self.assertFalse(fds.admit(flooded))

    def test_a_closed_connection_lets_the_flooded_listener_in_again(self) -> None:
        """Admission follows the listeners' counts as they change."""
        fds = budget(256, in_use=10)
        flooded, _ = Listener(fds, "flooded"), Listener(fds, "web")
        flooded.take_all()
        self.assertFalse(fds.admit(flooded))
        flooded.open -= 1
        self.assertTrue(fds.admit(flooded))

    def test_pipes_stop_above_the_splice_floor_and_come_back(self) -> None:
        """Pipes are given while taking them leaves the splice floor free;
        given-back pipes count no more."""
        fds = budget(256, in_use=10)
        front = Listener(fds, "front")
        given = 0
        while fds.admit(front):
            front.open += 1
            if not fds.take_pipes("front"):
                break
            given += 1
        self.assertEqual(given, (256 - 10 - fds.splice_floor) // 6)
        self.assertGreaterEqual(fds.free(), fds.splice_floor)
        self.assertEqual(fds.held(front), given * 6 + CONNECTION_FDS)
        # Relayed pairs still fit below the splice floor.
        self.assertTrue(fds.admit(front))
        before = fds.free()
        fds.return_pipes("front")
        self.assertEqual(fds.free(), before + PIPE_FDS)
        self.assertTrue(fds.take_pipes("front"))

    def test_pipes_count_towards_the_listeners_share(self) -> None:
        """A listener whose pairs hold pipes is over its share sooner."""
        fds = budget(256, in_use=10)
        front = Listener(fds, "front")
        Listener(fds, "other")
        Listener(fds, "third")
        front.open = 15
        self.assertLess(fds.held(front), fds.share())
        for _ in range(15):
            self.assertTrue(fds.take_pipes("front"))
        self.assertEqual(fds.held(front), 15 * CONNECTION_FDS + 15 * PIPE_FDS)
        self.assertGreater(fds.held(front), fds.share())

    def test_a_removed_listener_frees_its_share(self) -> None:
        """A drained listener counts no more, and the share grows."""
        fds = budget(256, in_use=10)
        front, gone = Listener(fds, "front"), Listener(fds, "gone")
        gone.open = 50
        share = fds.share()
        free = fds.free()
        fds.remove_listener(gone)
        self.assertEqual(fds.free(), free + 50 * CONNECTION_FDS)
        self.assertEqual(fds.share(), 2 * share)
        self.assertTrue(fds.admit(front))

    def test_near_the_edge_a_recount_corrects_the_estimate(self) -> None:
        """Descriptors opened out of sight are found by a recount once the
        count comes near the edge, at most once per recount_every."""
        truth = {"open": 10}
        clock = Clock()
        fds = FdBudget(
            256, in_use=10, now=clock.seconds, count_open=lambda: truth["open"]
        )
        front = Listener(fds, "front")
        front.open = 100
        truth["open"] = 10 + 200 + 30  # 30 opened unseen
        self.assertTrue(fds.admit(front))  # far from the edge: no recount
        self.assertEqual(fds.in_use(), 210)
        front.open = 115
        truth["open"] = 10 + 230 + 30
        self.assertFalse(fds.admit(front))  # near the edge: recounted
        self.assertEqual(fds.in_use(), 270)
        # Those 30 close; the next recount waits for its time.
        truth["open"] = 10 + 230
        self.assertFalse(fds.admit(front))
        clock.advance(1.0)
        self.assertTrue(fds.admit(front))
        self.assertEqual(fds.in_use(), 240)

    def test_a_failed_pipe_makes_the_next_decision_recount(self) -> None:
        """pipes_failed: the count is wrong, so the next decision recounts
        without waiting for recount_every."""
        truth = {"open": 10 + 180}
        fds = FdBudget(
            256, in_use=10, now=Clock().seconds, count_open=lambda: truth["open"]
        )
        front = Listener(fds, "front")
        front.open = 90
        self.assertFalse(fds.take_pipes("front"))  # recounted: all seen
        truth["open"] = 250
        fds.admit(front)
        self.assertEqual(fds.in_use(), 190)
        fds.pipes_failed()
        self.assertFalse(fds.admit(front))
        self.assertEqual(fds.in_use(), 250)

    def test_resize_keeps_tracked_connections_apart_from_the_rest(self) -> None:
        """After resize, in_use is what was counted, connections included."""
        fds = budget(256, in_use=10)
        front = Listener(fds, "front")
        front.open = 5
        fds.resize(1024, 40)
        self.assertEqual(fds.in_use(), 40)
        self.assertEqual(fds.base, 40 - 5 * CONNECTION_FDS)
        self.assertEqual(fds.limit, 1024)

    def test_room_figures_for_the_start_log(self) -> None:
        """tcp_room: spliced pairs down to the splice floor, then relayed
        ones down to floor + reserve; http_room: 2 each down to the same."""
        fds = budget(256, in_use=9)
        spliced, relayed = fds.tcp_room()
        self.assertEqual(spliced, (247 - 128) // 6)
        self.assertEqual(relayed, (247 - spliced * 6 - 8 - 16) // 2)
        self.assertEqual(fds.http_room(), (247 - 8 - 16) // 2)
        self.assertEqual(budget(16, in_use=15).tcp_room(), (0, 0))


class RaiseLimitTests(SynchronousTestCase):
    def fake(
        self, soft: int, hard: int, fail: Exception | None = None
    ) -> tuple[Any, Any, list[tuple[int, int]]]:
        calls: list[tuple[int, int]] = []

        def getrlimit(which: int) -> tuple[int, int]:
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            return soft, hard

        def setrlimit(which: int, limits: tuple[int, int]) -> None:
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            calls.append(limits)
            if fail is not None:
                raise fail

        return getrlimit, setrlimit, calls

    def test_the_soft_limit_is_raised_to_the_hard_limit(self) -> None:
        """soft < hard: setrlimit(hard, hard), and one info event naming
        both limits and the room they make."""
        getrlimit, setrlimit, calls = self.fake(1024, 4096)
        with capturedLogs() as events:
            limit = raise_fd_limit(
                kept_alive=3,
                getrlimit=getrlimit,
                setrlimit=setrlimit,
                count_open=lambda: 12,
            )
        self.assertEqual(calls, [(4096, 4096)])
        self.assertEqual(limit, FdLimit(4096, 4096, 1024, 12, None))
        (event,) = [e for e in events if e["log_namespace"] == "rproxy.fds"]
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual((event["limit"], event["before"]), (4096, 1024))
        self.assertEqual(event["kept_alive"], 3)
        expected = FdBudget(4096, in_use=12, now=lambda: 0.0)
        self.assertEqual(event["tcp"], sum(expected.tcp_room()))
        self.assertEqual(event["http"], expected.http_room())

    def test_a_soft_limit_at_the_hard_limit_is_left(self) -> None:
        """Nothing to raise: no setrlimit call."""
        getrlimit, setrlimit, calls = self.fake(256, 256)
        with capturedLogs():
            limit = raise_fd_limit(getrlimit=getrlimit, setrlimit=setrlimit)
        self.assertEqual(calls, [])
        self.assertEqual((limit.soft, limit.before, limit.error), (256, 256, None))

    def test_a_failure_to_raise_is_logged_not_raised(self) -> None:
        """setrlimit refusing leaves the old limit, with a warning saying why."""
        getrlimit, setrlimit, _ = self.fake(
            256, 4096, OSError(1, "Operation not permitted")
        )
        with capturedLogs() as events:
            limit = raise_fd_limit(
                getrlimit=getrlimit, setrlimit=setrlimit, count_open=lambda: 9
            )
        self.assertEqual(limit.soft, 256)
        self.assertIn("Operation not permitted", limit.error or "")
        (event,) = [e for e in events if e["log_namespace"] == "rproxy.fds"]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["limit"], 256)
        self.assertIn("Operation not permitted", event["error"])

    def test_an_unlimited_hard_limit_raises_to_what_the_system_allows(self) -> None:
        """RLIM_INFINITY cannot be the soft limit: the system's most is."""
        getrlimit, setrlimit, calls = self.fake(1024, resource.RLIM_INFINITY)
        with capturedLogs():
            limit = raise_fd_limit(getrlimit=getrlimit, setrlimit=setrlimit)
        ((soft, hard),) = calls
        self.assertEqual(hard, resource.RLIM_INFINITY)
        self.assertGreater(soft, 1024)
        self.assertNotEqual(soft, resource.RLIM_INFINITY)
        self.assertEqual(limit.soft, soft)

    def test_kept_alive_most_counts_http_listeners_pools_and_backends(self) -> None:
        """Each HTTP listener may keep max_idle per backend of each pool."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "rproxy.toml"
            path.write_text(
                """
[pools.a]
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
keep_alive = { max_idle = 10 }
[pools.b]
backends = ["127.0.0.1:9003"]
[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:8080"
pool = "a"
[[listeners]]
name = "raw"
listen = "tcp:9000"
pool = "b"
"""
            )
            config = load_config(path)
        self.assertEqual(kept_alive_most(config), 2 * 10 + 1 * 256)


class ListenerRefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.fds = FdBudget(
            256, in_use=10, now=self.reactor.seconds, count_open=lambda: None
        )
        self.factory = TCPProxyFactory(
            Pool("p", [Backend("127.0.0.1", 9001)]), self.reactor, fds=self.fds
        )
        self.service = ListenerService(
            "front", "tcp:0", self.factory, self.reactor, 1.0, fds=self.fds
        )
        self.service.privilegedStartService()
        self.accept = self.reactor.tcpServers[0][1]

    def test_a_listener_without_room_closes_the_client_at_accept(self) -> None:
        """buildProtocol returns None (the port closes the socket) once the
        budget refuses, with one warning for the run of refusals, and an
        info line when the listener accepts again."""
        self.assertIsNotNone(self.accept.buildProtocol(ADDRESS))
        held = [object() for _ in range(200)]
        for connection in held:
            self.factory.connections.add(connection)  # type: ignore[arg-type]
        with capturedLogs() as events:
            refused = [self.accept.buildProtocol(ADDRESS) for _ in range(3)]
        self.assertEqual(refused, [None, None, None])
        self.assertEqual(self.service.refused, 3)
        (warning,) = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["listener"], "front")
        self.assertEqual(warning["held"], 400)
        for connection in held:
            self.factory.connections.discard(connection)  # type: ignore[arg-type]
        with capturedLogs() as events:
            self.assertIsNotNone(self.accept.buildProtocol(ADDRESS))
        (again,) = [e for e in events if "accepting again" in e["log_format"]]
        self.assertEqual(again["count"], 3)

    def test_a_drained_listener_leaves_the_budget(self) -> None:
        """After stopping and draining, the listener holds nothing."""
        self.factory.connections.add(object())  # type: ignore[arg-type]
        in_use = self.fds.in_use()
        self.factory.connections.discard(next(iter(self.factory.connections._open)))
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.fds.in_use(), in_use - CONNECTION_FDS)
        self.assertEqual(self.fds.share(), 256 - 10 - self.fds.floor)
