"""DNSDiscovery on a Clock with a fake resolver: when it asks, what it
applies, what it keeps through failures and for how long."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.names import error

from rproxy.config import BackendConfig
from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery import AnswerChange, DNSDiscovery, close_resolver, make_resolver
from tests.discovery.fakes import FakeResolver, a, aaaa, srv

DNS = DiscoveryConfig("dns", "api.test", 80, min_ttl=5.0, max_ttl=60.0, hold=30.0)
SRV = DiscoveryConfig("srv", "_http._tcp.api.test", min_ttl=5.0, max_ttl=60.0)


class Applied:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], AnswerChange]] = []

    def __call__(
        self, backends: tuple[BackendConfig, ...], change: AnswerChange
    ) -> None:
        self.calls.append(([b.name for b in backends], change))


def started(
    config: DiscoveryConfig = DNS,
) -> tuple[DNSDiscovery, FakeResolver, Clock, Applied]:
    resolver, clock, applied = FakeResolver(), Clock(), Applied()
    service = DNSDiscovery("api", config, lambda: resolver, clock, applied)
    return service, resolver, clock, applied


def test_asks_at_start_and_applies_the_answer() -> None:
    """Started, it asks A and AAAA at once and hands every address over."""
    service, resolver, clock, applied = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1"), aaaa("api.test", "::1")])
    service.startService()
    assert resolver.asked == [("api.test", 1), ("api.test", 28)]
    assert applied.calls[0][0] == ["10.0.0.1:80", "[::1]:80"]
    assert applied.calls[0][1].added == ("10.0.0.1:80", "[::1]:80")
    assert service.state.last_answer_at == 0.0
    assert service.state.next_query_at == 30.0
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_ttl_zero_is_floored() -> None:
    """A TTL of 0 is asked again after the floor, not at once: 12 a minute."""
    service, resolver, clock, applied = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1", ttl=0)])
    service.startService()
    for _ in range(60):
        clock.advance(1)
    assert service.state.queries == 1 + 60 // 5
    assert len(applied.calls) == 1  # the same answer is no change
    service.stopService()


def test_long_ttl_is_capped() -> None:
    """A TTL above the ceiling is asked again at the ceiling."""
    service, resolver, clock, _ = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1", ttl=86400)])
    service.startService()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [60.0]
    service.stopService()


def test_changed_answer_is_applied_with_its_difference() -> None:
    """An answer with other addresses is applied, naming added and removed."""
    service, resolver, clock, applied = started()
    resolver.set(
        "api.test", [a("api.test", "10.0.0.1", 10), a("api.test", "10.0.0.2", 10)]
    )
    service.startService()
    resolver.set(
        "api.test", [a("api.test", "10.0.0.2", 10), a("api.test", "10.0.0.3", 10)]
    )
    clock.advance(10)
    names, change = applied.calls[-1]
    assert names == ["10.0.0.2:80", "10.0.0.3:80"]
    assert (change.added, change.removed) == (("10.0.0.3:80",), ("10.0.0.1:80",))
    assert service.state.changes == 2
    service.stopService()


def test_failures_keep_the_last_answer_for_the_hold_period() -> None:
    """NXDOMAIN, SERVFAIL and timeouts keep the backends until hold expires."""
    service, resolver, clock, applied = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1", 5)])
    service.startService()
    resolver.errors["api.test"] = error.DNSServerError("api.test")
    clock.advance(5)  # t=5: SERVFAIL
    assert service.state.last_error == "SERVFAIL"
    resolver.errors["api.test"] = error.DNSQueryTimeoutError("api.test")
    clock.advance(5)  # t=10: timed out, next in 10
    assert service.state.last_error == "timed out"
    del resolver.errors["api.test"]
    del resolver.records["api.test"]
    clock.advance(10)  # t=20: NXDOMAIN, next in 20
    assert service.state.last_error == "NXDOMAIN"
    assert len(applied.calls) == 1
    assert service.state.backends != ()
    clock.advance(20)  # t=40: hold (30 s after t=0) expired
    assert applied.calls[-1][0] == []
    assert applied.calls[-1][1].removed == ("10.0.0.1:80",)
    assert (service.state.queries, service.state.failures) == (5, 4)
    service.stopService()


def test_answer_after_failures_resets_the_retry_delay() -> None:
    """A good answer after failures is used, and timing follows its TTL."""
    service, resolver, clock, applied = started()
    resolver.errors["api.test"] = error.DNSServerError("api.test")
    service.startService()
    assert applied.calls == []
    assert service.state.next_query_at == 5.0
    resolver.set("api.test", [a("api.test", "10.0.0.7", 20)])
    clock.advance(5)
    assert applied.calls[0][0] == ["10.0.0.7:80"]
    assert service.state.last_error is None
    assert service.state.next_query_at == 25.0
    service.stopService()


def test_no_records_is_a_failure() -> None:
    """An answer without addresses is held like NXDOMAIN, not applied."""
    service, resolver, _, applied = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1")])
    service.startService()
    resolver.set("api.test", [])
    service.query()
    assert service.state.last_error == "no A or AAAA records"
    assert len(applied.calls) == 1
    service.stopService()


def test_srv_weights_ports_and_target_lookups() -> None:
    """SRV gives ports and weights; targets missing from additional are asked."""
    service, resolver, _, applied = started(SRV)
    name = "_http._tcp.api.test"
    resolver.set(
        name,
        [
            srv(name, 1, 10, 8080, "a.test"),
            srv(name, 1, 30, 8081, "b.test"),
            srv(name, 2, 1, 9000, "gone.test"),
        ],
    )
    resolver.additional[name] = [a("a.test", "10.0.0.1")]
    resolver.set("b.test", [a("b.test", "10.0.0.2")])
    service.startService()
    assert ("b.test", 1) in resolver.asked and ("a.test", 1) not in resolver.asked
    backends = service.state.backends
    assert [(b.name, b.weight, b.backup) for b in backends] == [
        ("10.0.0.1:8080", 10, False),
        ("10.0.0.2:8081", 30, False),
    ]
    assert applied.calls[0][0] == ["10.0.0.1:8080", "10.0.0.2:8081"]
    service.stopService()


def test_srv_target_servfail_fails_the_round() -> None:
    """A target that cannot be resolved now keeps the last answer whole."""
    service, resolver, _, applied = started(SRV)
    name = "_http._tcp.api.test"
    resolver.set(name, [srv(name, 1, 1, 80, "a.test"), srv(name, 1, 1, 80, "b.test")])
    resolver.set("a.test", [a("a.test", "10.0.0.1")])
    resolver.set("b.test", [a("b.test", "10.0.0.2")])
    service.startService()
    resolver.errors["b.test"] = error.DNSServerError("b.test")
    service.query()
    assert service.state.last_error == "SERVFAIL"
    assert len(applied.calls) == 1
    service.stopService()


def test_stop_cancels_the_query_under_way() -> None:
    """Stopping cancels a query waiting for an answer and the next one."""
    service, resolver, clock, applied = started()
    resolver.hold = True
    service.startService()
    (waiting, _) = resolver.held
    service.stopService()
    assert waiting.called  # cancelled
    assert applied.calls == [] and service.state.failures == 0
    assert clock.getDelayedCalls() == []
    assert service.state.next_query_at is None


def test_carried_over_backends_count_as_good_from_creation() -> None:
    """Backends kept across a reload are held from when discovery began."""
    resolver, clock, applied = FakeResolver(), Clock(), Applied()
    kept = (BackendConfig("10.0.0.9:80", "10.0.0.9", 80, "10.0.0.9:80"),)
    service = DNSDiscovery("api", DNS, lambda: resolver, clock, applied, current=kept)
    resolver.errors["api.test"] = error.DNSServerError("api.test")
    service.startService()
    assert applied.calls == []
    for _ in range(40):
        clock.advance(1)
    assert applied.calls[-1][0] == []
    service.stopService()


def test_every_change_is_logged_with_its_fields() -> None:
    """A change is logged naming the pool, source and addresses."""
    service, resolver, clock, _ = started()
    resolver.set("api.test", [a("api.test", "10.0.0.1", 10)])
    with capturedLogs() as events:
        service.startService()
        resolver.set("api.test", [a("api.test", "10.0.0.3", 10)])
        clock.advance(10)
    changes = [e for e in events if "added" in e]
    assert [formatEvent(e) for e in changes] == [
        "pool api: dns:api.test:80 answer: added 10.0.0.1:80",
        "pool api: dns:api.test:80 answer: added 10.0.0.3:80; removed 10.0.0.1:80",
    ]
    assert (changes[1]["pool"], changes[1]["added"], changes[1]["removed"]) == (
        "api",
        ["10.0.0.3:80"],
        ["10.0.0.1:80"],
    )
    service.stopService()


def test_resolver_is_the_given_server_or_resolv_conf() -> None:
    """With resolver set it is asked; without, resolv.conf's servers are,
    and closing the resolver stops it polling the file."""
    reactor = MemoryReactorClock()
    given = make_resolver(
        DiscoveryConfig("dns", "a.b", 80, resolver=("127.0.0.1", 8600)), reactor
    )
    assert given.servers == [("127.0.0.1", 8600)]  # type: ignore[attr-defined]
    assert reactor.getDelayedCalls() == []
    system = make_resolver(DiscoveryConfig("dns", "a.b", 80), reactor)
    assert system.resolv == "/etc/resolv.conf"  # type: ignore[attr-defined]
    close_resolver(system)
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []


def test_failures_are_logged_with_what_is_kept() -> None:
    """A failed round is logged with its reason and what the pool keeps."""
    service, resolver, clock, _ = started()
    with capturedLogs() as events:
        service.startService()
        resolver.set("api.test", [a("api.test", "10.0.0.1", 5)])
        clock.advance(5)
        del resolver.records["api.test"]
        clock.advance(5)
    failed = [formatEvent(e) for e in events if "reason" in e]
    assert failed == [
        "pool api: dns:api.test:80 failed (NXDOMAIN); the pool has no backends "
        "until it answers",
        "pool api: dns:api.test:80 failed (NXDOMAIN); keeping the 1 backends of "
        "the last answer",
    ]
    service.stopService()
