"""The accept rate per address (GCRA) on a Clock: the burst, the rate after
it, what Retry-After is worked out from, refusals that do not count, the
bounded table, and a reload carrying the counts over."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from rproxy.admission.rate import DEFAULT_CAPACITY, AcceptRate


def takes(rate: AcceptRate, key: str, clock: Clock, count: int) -> list[float]:
    return [rate.take(key, clock.seconds()) for _ in range(count)]


def test_a_burst_then_the_rate() -> None:
    """50/s with a burst of 50: 50 at once, then one per 20 ms."""
    clock = Clock()
    rate = AcceptRate(50, 1.0, 50)
    assert takes(rate, "a", clock, 50) == [0.0] * 50
    [wait] = takes(rate, "a", clock, 1)
    assert wait == pytest.approx(0.02)
    clock.advance(0.02)
    assert takes(rate, "a", clock, 1) == [0.0]
    assert takes(rate, "a", clock, 1)[0] == pytest.approx(0.02)
    clock.advance(1.0)
    # A second at the rate refills 50.
    assert takes(rate, "a", clock, 50) == [0.0] * 50
    assert takes(rate, "a", clock, 1)[0] > 0


def test_addresses_have_buckets_of_their_own() -> None:
    """One address's burst does not touch another's."""
    clock = Clock()
    rate = AcceptRate(2, 1.0, 2)
    assert takes(rate, "a", clock, 3)[2] > 0
    assert takes(rate, "b", clock, 2) == [0.0, 0.0]


def test_refused_connections_do_not_count() -> None:
    """Hammering while refused does not push the next admission later."""
    clock = Clock()
    rate = AcceptRate(1, 1.0, 1)
    assert takes(rate, "a", clock, 1) == [0.0]
    waits = takes(rate, "a", clock, 100)
    assert all(wait == pytest.approx(1.0) for wait in waits)
    clock.advance(1.0)
    assert takes(rate, "a", clock, 1) == [0.0]


def test_the_wait_is_until_one_would_be_let_in() -> None:
    """The wait says when the next connection is let in: not before."""
    clock = Clock()
    rate = AcceptRate(10, 60.0, 3)  # 10 a minute, 3 at once
    assert takes(rate, "a", clock, 3) == [0.0] * 3
    [wait] = takes(rate, "a", clock, 1)
    assert wait == pytest.approx(6.0)
    clock.advance(5.9)
    assert takes(rate, "a", clock, 1)[0] == pytest.approx(0.1)
    clock.advance(0.1)
    assert takes(rate, "a", clock, 1) == [0.0]


def test_a_burst_of_one_is_a_steady_rate() -> None:
    """Burst 1: each connection must wait a whole interval after the last."""
    clock = Clock()
    rate = AcceptRate(4, 1.0, 1)
    assert takes(rate, "a", clock, 2) == [0.0, pytest.approx(0.25)]
    clock.advance(0.25)
    assert takes(rate, "a", clock, 1) == [0.0]


def test_the_table_is_bounded_least_recently_seen_first() -> None:
    """Past the capacity the address seen longest ago is forgotten (and
    starts with a full burst again); those seen since are kept."""
    rate = AcceptRate(1, 60.0, 1, capacity=3)
    for key in "abc":
        assert rate.take(key, 0.0) == 0.0
    assert rate.take("a", 0.0) > 0  # a is seen again: the most recent
    assert rate.take("d", 0.0) == 0.0  # b, seen longest ago, goes
    assert len(rate) == 3
    assert rate.take("b", 0.0) == 0.0  # forgotten: a fresh bucket
    assert rate.take("a", 0.0) > 0  # still remembered
    assert len(rate) == 3


def test_a_flood_of_addresses_stays_within_the_capacity() -> None:
    """100k distinct addresses leave at most the capacity remembered."""
    rate = AcceptRate(5, 1.0, 5, capacity=1000)
    for index in range(100_000):
        rate.take(f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}", 0.0)
    assert len(rate) == 1000
    assert DEFAULT_CAPACITY == 65536


def test_a_reload_carries_the_counts_over() -> None:
    """A new rate adopting the old one's table keeps each address's bucket,
    at the new rate."""
    clock = Clock()
    old = AcceptRate(2, 1.0, 2)
    takes(old, "a", clock, 2)
    new = AcceptRate(4, 1.0, 2)
    new.adopt(old)
    assert takes(new, "a", clock, 1)[0] > 0
    assert takes(new, "b", clock, 1) == [0.0]
    shrunk = AcceptRate(4, 1.0, 2, capacity=1)
    shrunk.adopt(new)
    assert len(shrunk) == 1


@pytest.mark.parametrize(
    "arguments", [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0), (-1, 1.0, 1)]
)
def test_nonsense_settings_are_refused(arguments: tuple[float, float, int]) -> None:
    """A rate needs a positive count, period and burst."""
    with pytest.raises(ValueError):
        AcceptRate(*arguments)
