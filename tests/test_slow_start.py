"""Slow start: a backend that comes back ramps its weight up over
slow_start seconds, on the pool's clock, and the weighted balancers follow."""

from __future__ import annotations

from collections import Counter

import pytest
from twisted.internet.task import Clock

from rproxy.backends import AdminState, Backend, Pool
from rproxy.balancing import (
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    SmoothWeighted,
    TwoRandomChoices,
)
from rproxy.interfaces import IBalancer
from rproxy.policy import PoolPolicy
from rproxy.protection import RAMP_FLOOR, ramp_share


@pytest.mark.parametrize(
    ("elapsed", "slow_start", "share"),
    [
        (0.0, 10.0, RAMP_FLOOR),
        (0.05, 10.0, RAMP_FLOOR),
        (1.0, 10.0, 0.1),
        (5.0, 10.0, 0.5),
        (9.9, 10.0, 0.99),
        (10.0, 10.0, 1.0),
        (60.0, 10.0, 1.0),
        (0.0, 0.0, 1.0),
    ],
)
def test_ramp_share_is_linear_from_the_floor_to_one(
    elapsed: float, slow_start: float, share: float
) -> None:
    """The share of its weight grows linearly over slow_start, from a
    hundredth (never 0) to all of it; no slow start is all at once."""
    assert ramp_share(elapsed, slow_start) == pytest.approx(share)


def ramping_pool(balancer: IBalancer, slow_start: float = 10.0) -> tuple[Pool, Clock]:
    clock = Clock()
    clock.advance(1000)
    pool = Pool(
        "web",
        [
            Backend("10.0.0.1", 80, name="a", weight=4),
            Backend("10.0.0.2", 80, name="b", weight=4),
        ],
        balancer,
        now=clock.seconds,
        policy=PoolPolicy(slow_start=slow_start),
    )
    return pool, clock


def bring_back(pool: Pool, name: str) -> Backend:
    backend = pool.get(name)
    pool.mark_down(backend, "test")
    pool.mark_up(backend, "test")
    return backend


def test_backend_coming_up_ramps_its_weight_on_the_pool_clock() -> None:
    """Up again after being down, a backend's weight is its share of the
    ramp; the ramp ends (and is forgotten) after slow_start."""
    pool, clock = ramping_pool(SmoothWeighted())
    back = bring_back(pool, "b")
    assert pool.weight_of(back) == pytest.approx(4 * RAMP_FLOOR)
    clock.advance(2.5)
    assert pool.weight_of(back) == pytest.approx(1.0)
    clock.advance(7.5)
    assert pool.weight_of(back) == 4
    assert pool.ramps == {}
    assert pool.weight_of(pool.get("a")) == 4


def test_enabled_by_the_admin_ramps_but_startup_and_undrain_do_not() -> None:
    """A backend enabled after being disabled ramps; members at startup and
    one whose drain was called off (it kept its traffic) do not."""
    pool, _ = ramping_pool(SmoothWeighted())
    a, b = pool.get("a"), pool.get("b")
    assert pool.ramps == {}
    b.active = 1
    pool.set_admin(b, AdminState.DRAINING, "test")
    pool.set_admin(b, AdminState.ENABLED, "test")
    assert pool.ramps == {}
    pool.set_admin(a, AdminState.DISABLED, "test")
    pool.set_admin(a, AdminState.ENABLED, "test")
    assert list(pool.ramps) == [a]


def test_no_ramp_without_slow_start() -> None:
    """slow_start = 0: a backend back up has its whole weight at once."""
    pool, _ = ramping_pool(SmoothWeighted(), slow_start=0.0)
    back = bring_back(pool, "b")
    assert (pool.ramps, pool.weight_of(back)) == ({}, 4)


def test_going_down_again_ends_the_ramp() -> None:
    """A ramping backend that goes down is no longer ramping."""
    pool, _ = ramping_pool(SmoothWeighted())
    back = bring_back(pool, "b")
    pool.mark_down(back, "test")
    assert pool.ramps == {}


def picks(pool: Pool, count: int) -> Counter[str]:
    chosen: Counter[str] = Counter()
    for _ in range(count):
        backend = pool.pick()
        assert backend is not None
        chosen[backend.name] += 1
    return chosen


def test_smooth_weighted_share_follows_the_ramp() -> None:
    """Weighted round-robin gives a ramping backend its ramped share:
    at a quarter of the ramp, a fifth of the picks (1 against 4)."""
    pool, clock = ramping_pool(SmoothWeighted())
    bring_back(pool, "b")
    assert picks(pool, 100)["b"] <= 1
    clock.advance(2.5)
    assert picks(pool, 100) == {"a": 80, "b": 20}
    clock.advance(7.5)
    assert picks(pool, 100) == {"a": 50, "b": 50}


def test_least_connections_places_a_share_of_the_concurrency() -> None:
    """Least connections sends a ramping backend a connection only while
    (active + 1) / ramped weight is below the others' load: at half its
    ramp, it holds about half as many as its peer."""
    pool, clock = ramping_pool(LeastConnections())
    back = bring_back(pool, "b")
    other = pool.get("a")
    other.active = 10
    first = pool.pick()
    assert first is other  # (0 + 1) / 0.04 is far above 10 / 4
    clock.advance(5.0)
    for _ in range(30):
        chosen = pool.pick()
        assert chosen is not None
        pool.acquire(chosen)
    assert (other.active, back.active) == (27, 13)


def test_two_random_choices_uses_the_ramped_load() -> None:
    """Power of two choices compares the ramped loads of the two drawn."""
    import random

    pool, _ = ramping_pool(TwoRandomChoices(random.Random(7)))
    bring_back(pool, "b")
    pool.get("a").active = 3
    assert picks(pool, 20) == {"a": 20}


def test_round_robin_ignores_slow_start() -> None:
    """Round-robin has no weights to ramp."""
    pool, _ = ramping_pool(RoundRobin())
    bring_back(pool, "b")
    assert picks(pool, 10) == {"a": 5, "b": 5}


def test_hash_ring_ignores_slow_start() -> None:
    """The hash ring sends each key where it would without a ramp."""
    keys = [f"client-{n}" for n in range(200)]
    steady, _ = ramping_pool(ConsistentHash())
    ramping, _ = ramping_pool(ConsistentHash())
    bring_back(ramping, "b")
    assert ramping.ramps
    before = [steady.pick(key).name for key in keys]  # type: ignore[union-attr]
    after = [ramping.pick(key).name for key in keys]  # type: ignore[union-attr]
    assert after == before
    assert set(after) == {"a", "b"}


def test_rising_on_its_checks_ramps() -> None:
    """A backend that passes rise checks after being down ramps."""
    pool, _ = ramping_pool(SmoothWeighted())
    back = pool.get("b")
    for _ in range(3):
        pool.record_check(back, False, "refused")
    assert not back.healthy
    for _ in range(2):
        pool.record_check(back, True, "passed")
    assert back.healthy
    assert list(pool.ramps) == [back]
