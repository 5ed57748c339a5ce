"""The pure decisions of discovery: records to backends, TTL clamping and
retry delays, the hold period, and what changed between two answers."""

from __future__ import annotations

import pytest
from twisted.names import dns

from rproxy.config import BackendConfig
from rproxy.discovery import (
    ServiceRecord,
    address_backends,
    addresses_in,
    answer_ttl,
    clamp_ttl,
    diff_backends,
    hold_expired,
    retry_delay,
    service_records,
    srv_backends,
)


def a(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, payload=dns.Record_A(address, ttl), ttl=ttl)


def aaaa(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(address, ttl), ttl=ttl)


def srv(
    name: str, priority: int, weight: int, port: int, target: str, ttl: int = 30
) -> dns.RRHeader:
    payload = dns.Record_SRV(priority, weight, port, target, ttl)
    return dns.RRHeader(name, dns.SRV, payload=payload, ttl=ttl)


def names(backends: tuple[BackendConfig, ...]) -> list[tuple[str, int, bool]]:
    return [(b.name, b.weight, b.backup) for b in backends]


def test_addresses_by_owner_name() -> None:
    """A and AAAA records are grouped by owner, lower case, no repeats."""
    records = [
        a("Web1.Example.", "10.0.0.1"),
        a("web1.example", "10.0.0.1"),
        aaaa("web1.example", "2001:db8::1"),
        a("web2.example", "10.0.0.2"),
        srv("_x._tcp.example", 1, 1, 80, "web1.example"),
    ]
    assert addresses_in(records) == {
        "web1.example": ["10.0.0.1", "2001:db8::1"],
        "web2.example": ["10.0.0.2"],
    }


def test_address_backends_named_by_address_in_order() -> None:
    """Each address is a backend on the port, IPv4 before IPv6, sorted."""
    backends = address_backends(["10.0.0.9", "2001:db8::1", "10.0.0.10"], 8080)
    assert [b.name for b in backends] == [
        "10.0.0.9:8080",
        "10.0.0.10:8080",
        "[2001:db8::1]:8080",
    ]
    assert backends[2].host == "2001:db8::1" and backends[2].port == 8080


def test_srv_records_skip_the_dot_target() -> None:
    """An SRV target of '.' (service not offered) gives no record."""
    records = [
        srv("_x._tcp.e", 0, 5, 80, "Node1.E."),
        srv("_x._tcp.e", 0, 0, 0, ""),
    ]
    assert service_records(records) == [ServiceRecord(0, 5, 80, "node1.e")]


def test_srv_weights_ports_and_priorities() -> None:
    """Lowest priority are backends weighted by SRV weight; higher are backups."""
    records = [
        ServiceRecord(10, 60, 8080, "a.e"),
        ServiceRecord(10, 0, 8081, "b.e"),
        ServiceRecord(20, 5, 9000, "c.e"),
    ]
    addresses = {"a.e": ["10.0.0.1"], "b.e": ["10.0.0.2"], "c.e": ["10.0.0.3"]}
    assert names(srv_backends(records, addresses)) == [
        ("10.0.0.1:8080", 60, False),
        ("10.0.0.2:8081", 1, False),
        ("10.0.0.3:9000", 5, True),
    ]


def test_srv_duplicate_address_keeps_best_record() -> None:
    """An address listed twice keeps its lowest priority and highest weight."""
    records = [
        ServiceRecord(20, 90, 80, "a.e"),
        ServiceRecord(10, 3, 80, "a.e"),
        ServiceRecord(10, 7, 80, "alias.e"),
    ]
    addresses = {"a.e": ["10.0.0.1"], "alias.e": ["10.0.0.1"]}
    assert names(srv_backends(records, addresses)) == [("10.0.0.1:80", 7, False)]


def test_srv_target_without_address_gives_no_backend() -> None:
    """A target with no address is left out; the others stay."""
    records = [ServiceRecord(1, 1, 80, "gone.e"), ServiceRecord(1, 1, 80, "a.e")]
    assert names(srv_backends(records, {"a.e": ["10.0.0.1"]})) == [
        ("10.0.0.1:80", 1, False)
    ]


def test_answer_ttl_is_the_least() -> None:
    """An answer holds for its records' least TTL; no records, None."""
    assert answer_ttl([a("x", "10.0.0.1", 30), a("x", "10.0.0.2", 7)]) == 7.0
    assert answer_ttl([]) is None


@pytest.mark.parametrize(
    ("ttl", "delay"), [(0, 5.0), (3, 5.0), (12, 12.0), (3600, 60.0), (None, 5.0)]
)
def test_ttl_clamped_to_floor_and_ceiling(ttl: float | None, delay: float) -> None:
    """TTL 0 (Consul) waits the floor; a long TTL waits the ceiling."""
    assert clamp_ttl(ttl, 5.0, 60.0) == delay


def test_retry_delay_doubles_up_to_ceiling() -> None:
    """Failed rounds retry after the floor, doubling, at most the ceiling."""
    assert [retry_delay(n, 5.0, 60.0) for n in range(1, 7)] == [
        5.0,
        10.0,
        20.0,
        40.0,
        60.0,
        60.0,
    ]
    assert retry_delay(10_000, 5.0, 60.0) == 60.0


def test_hold_period() -> None:
    """The last answer is kept until hold seconds after it came."""
    assert not hold_expired(None, 1000.0, 0.0)
    assert not hold_expired(100.0, 399.0, 300.0)
    assert hold_expired(100.0, 400.0, 300.0)


def test_diff_by_name() -> None:
    """Added, removed and reweighted backends are told apart by name."""
    old = address_backends(["10.0.0.1", "10.0.0.2"], 80)
    new = (
        old[1].__class__(
            address="10.0.0.2:80",
            host="10.0.0.2",
            port=80,
            name="10.0.0.2:80",
            weight=5,
        ),
        *address_backends(["10.0.0.3"], 80),
    )
    change = diff_backends(old, new)
    assert change.added == ("10.0.0.3:80",)
    assert change.removed == ("10.0.0.1:80",)
    assert change.changed == ("10.0.0.2:80",)
    assert change.describe() == (
        "added 10.0.0.3:80; removed 10.0.0.1:80; changed 10.0.0.2:80"
    )


def test_same_answer_in_another_order_is_no_change() -> None:
    """Order alone is no change."""
    one = address_backends(["10.0.0.1", "10.0.0.2"], 80)
    change = diff_backends(one, tuple(reversed(one)))
    assert not change and change.describe() == "no change"
