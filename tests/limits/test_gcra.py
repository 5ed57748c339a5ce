"""Tests for GCRA and the local limiter: the rate, the burst, how long a
request is early (delay mode), when a key expires, and memory bounded under
a flood of distinct keys."""

from __future__ import annotations

import tracemalloc

import pytest
from twisted.internet.task import Clock

from rproxy.limits.gcra import (
    BYTES_PER_KEY,
    Decision,
    LocalLimiter,
    Rate,
    ceil_seconds,
    decision,
    gcra,
)
from rproxy.limits.limiter import policy_window


def limiter(
    rate: str = "10/s", burst: int = 0, max_keys: int = 1000
) -> tuple[LocalLimiter, Clock]:
    """
    A local limiter on a clock that has run a while.
    """
    clock = Clock()
    clock.advance(1_000_000)
    return LocalLimiter(Rate.parse(rate), burst, clock, max_keys), clock


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("20/s", 20, 1), ("100/m", 100, 60), ("1000/h", 1000, 3600), (" 5 / s ", 5, 1)],
)
def test_rate_reads_a_count_per_unit(text: str, count: int, period: int) -> None:
    """A rate is N/s, N/m or N/h."""
    rate = Rate.parse(text)
    assert (rate.count, rate.period, rate.interval) == (count, period, period / count)


@pytest.mark.parametrize("text", ["20", "20/d", "0/s", "-1/s", "x/s", "1.5/s", "/s"])
def test_rate_refuses_anything_else(text: str) -> None:
    """Other units, no count, a zero or fractional count are refused."""
    with pytest.raises(ValueError, match="rate"):
        Rate.parse(text)


def test_burst_plus_one_requests_pass_at_once_then_refused() -> None:
    """With burst B, B + 1 requests at one instant pass, the next is
    refused, and nothing the refused one did changes the state."""
    local, _ = limiter("10/s", burst=4)
    allowed = [local.check("k").allowed for _ in range(5)]
    refused = local.check("k")
    assert allowed == [True] * 5
    assert refused.allowed is False
    assert refused == local.check("k")


def test_refusal_says_when_one_request_is_allowed_again() -> None:
    """A refused request's retry_after is the time until one more is on the
    rate; after it, exactly one passes."""
    local, clock = limiter("10/s", burst=2)
    for _ in range(3):
        local.check("k")
    refused = local.check("k")
    assert refused.retry_after == pytest.approx(0.1)
    clock.advance(0.099)
    assert not local.check("k").allowed
    clock.advance(0.001)
    assert local.check("k").allowed
    assert not local.check("k").allowed


def test_requests_on_the_rate_always_pass() -> None:
    """One request per interval passes forever, even with no burst."""
    local, clock = limiter("20/s", burst=0)
    results = []
    for _ in range(1000):
        results.append(local.check("k").allowed)
        clock.advance(0.05)
    assert all(results)


def test_faster_than_the_rate_passes_only_the_rate() -> None:
    """Requests every 10 ms against 20/s: one in five passes, over time."""
    local, clock = limiter("20/s", burst=0)
    passed = 0
    for _ in range(1000):
        passed += local.check("k").allowed
        clock.advance(0.01)
    assert passed == 200


def test_remaining_and_reset_count_down_the_burst() -> None:
    """Each allowed request leaves one fewer for now; reset is the time
    until the whole burst is back."""
    local, _ = limiter("10/s", burst=3)
    decisions = [local.check("k") for _ in range(4)]
    assert [d.remaining for d in decisions] == [3, 2, 1, 0]
    assert [round(d.reset, 6) for d in decisions] == [0.1, 0.2, 0.3, 0.4]


def test_delay_is_how_early_each_request_is() -> None:
    """A request's delay is how long it must wait to be on the rate: 0 for
    the first, one interval more for each after it (what delay mode
    holds)."""
    local, _ = limiter("4/s", burst=3)
    delays = [local.check("k").delay for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_keys_are_counted_apart() -> None:
    """One key's burst spent leaves another's whole."""
    local, _ = limiter("1/m", burst=0)
    assert local.check("a").allowed
    assert not local.check("a").allowed
    assert local.check("b").allowed


def test_refund_gives_one_place_back() -> None:
    """A refunded request no longer counts: the next one is as early as it
    would have been."""
    local, _ = limiter("1/s", burst=2)
    local.check("k")
    held = local.check("k")
    local.refund("k")
    assert local.check("k").delay == held.delay


def test_refund_of_the_only_request_forgets_the_key() -> None:
    """Giving back a fresh key's one request leaves nothing to hold."""
    local, _ = limiter("1/s", burst=2)
    local.check("k")
    local.refund("k")
    assert "k" not in local
    local.refund("unknown")  # nothing to give back: no error


def test_expired_keys_are_dropped_as_new_ones_come() -> None:
    """A key whose state has run out (it could pass its whole burst again)
    is dropped when new keys arrive, oldest first."""
    local, clock = limiter("10/s", burst=4)
    for key in ("old1", "old2", "old3"):
        local.check(key)
    clock.advance(0.5)  # their state is past now
    local.check("new1")
    assert ("old1" in local, "old2" in local, "old3" in local) == (False, False, True)
    local.check("new2")
    assert len(local) == 2


def test_a_key_still_counting_is_not_dropped_as_expired() -> None:
    """A key whose requests still count is kept while it counts."""
    local, clock = limiter("1/s", burst=3)
    for _ in range(4):
        local.check("busy")
    clock.advance(2)
    local.check("other")
    assert "busy" in local
    assert local.check("busy").remaining == 1


def test_the_least_recently_checked_key_goes_past_the_cap() -> None:
    """At max_keys, a new key evicts the one checked longest ago (checking
    a key keeps it)."""
    local, _ = limiter("1/m", burst=0, max_keys=3)
    for key in ("a", "b", "c"):
        local.check(key)
    local.check("a")
    local.check("d")
    assert sorted(k for k in "abcd" if k in local) == ["a", "c", "d"]


def test_a_flood_of_a_million_keys_stays_within_the_cap() -> None:
    """1M distinct keys through a 10,000 key limiter: never more than
    10,000 held, and over the flood's last 30,000 keys (traced, so that
    every key held at the end was made under tracemalloc) the peak stays
    under the cap times the stated bytes per key."""
    cap = 10_000
    local, _ = limiter("10/s", burst=5, max_keys=cap)
    for index in range(970_000):
        local.check(str(index))
        if index % 50_000 == 0:
            assert len(local) <= cap
    tracemalloc.start()
    try:
        for index in range(970_000, 1_000_000):
            local.check(str(index))
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(local) == cap
    assert held < cap * BYTES_PER_KEY
    assert peak < cap * BYTES_PER_KEY


def test_bytes_per_key_holds_for_address_keys() -> None:
    """What the docstring states: 100,000 IPv4 keys held cost under
    BYTES_PER_KEY each, the key strings and the table's growth included."""
    local, _ = limiter("10/s", burst=5, max_keys=100_000)
    tracemalloc.start()
    try:
        for index in range(100_000):
            local.check(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(local) == 100_000
    assert peak / 100_000 < BYTES_PER_KEY


def test_gcra_and_decision_agree_with_the_local_limiter() -> None:
    """The pure functions a shared store's answer goes through give what
    the local limiter gives."""
    local, clock = limiter("10/s", burst=2)
    tat = None
    now = clock.seconds()
    for _ in range(4):
        allowed, tat = gcra(tat, now, 0.1, 0.2)
        pure, checked = decision(allowed, tat - now, 0.1, 0.2), local.check("k")
        assert (pure.allowed, pure.remaining) == (checked.allowed, checked.remaining)
        assert pure == pytest.approx(checked)


def test_refused_decision_has_nothing_remaining() -> None:
    """A refusal says 0 remaining and when one request would pass."""
    assert decision(False, 0.5, 0.1, 0.3) == Decision(
        False, 0.0, 0, 0.5, pytest.approx(0.2)
    )


@pytest.mark.parametrize(
    ("rate", "burst", "quota", "window"),
    [
        ("20/s", 40, 40, 2),
        ("20/s", 19, 20, 1),
        ("20/s", 0, 1, 1),
        ("10/m", 0, 1, 6),
        ("100/h", 10, 11, 396),
        ("1/h", 0, 1, 3600),
    ],
)
def test_policy_window_keeps_to_the_limit(
    rate: str, burst: int, quota: int, window: int
) -> None:
    """The advertised quota, sent at once every window, is never refused."""
    parsed = Rate.parse(rate)
    assert policy_window(parsed, burst) == (quota, window)
    local, clock = limiter(rate, burst)
    for _ in range(5):
        assert all(local.check("k").allowed for _ in range(quota))
        clock.advance(window)


def test_ceil_seconds_rounds_up_a_part_of_a_second() -> None:
    """0.2 s is 1 s; a whole number stays; drift below a microsecond is none."""
    assert [ceil_seconds(s) for s in (0.0, 0.2, 1.0, 1.0000000001, 59.3)] == [
        0,
        1,
        1,
        1,
        60,
    ]
