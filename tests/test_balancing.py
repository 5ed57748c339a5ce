"""Tests for rproxy.balancing: each strategy picks only candidates, its own way."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from rproxy.backends import AdminState, Backend, Pool
from rproxy.balancing import (
    BALANCERS,
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    SmoothWeighted,
    TwoRandomChoices,
    make_balancer,
)
from rproxy.interfaces import IBalancer

NAMES = ["round_robin", "weighted", "least_conn", "random2", "hash"]
KINDS = {
    "round_robin": RoundRobin,
    "weighted": SmoothWeighted,
    "least_conn": LeastConnections,
    "random2": TwoRandomChoices,
    "hash": ConsistentHash,
}

weights_strategy = st.lists(st.integers(1, 12), min_size=2, max_size=6)
keys_strategy = st.lists(st.text(max_size=12), min_size=1, max_size=60, unique=True)


def make_pool(
    balancer: IBalancer, count: int = 3, weights: list[int] | None = None
) -> Pool:
    """
    A pool of C{count} backends on 127.0.0.1:9000 and up.
    """
    if weights is None:
        weights = [1] * count
    backends = [Backend("127.0.0.1", 9000 + i, weight=w) for i, w in enumerate(weights)]
    return Pool("p", backends, balancer=balancer)


def picks(pool: Pool, count: int, **kwargs: object) -> list[Backend | None]:
    """
    C{count} picks from C{pool}, with keys k0, k1, ... (which only the hash
    balancer reads).
    """
    return [pool.pick(f"k{i}", **kwargs) for i in range(count)]  # type: ignore[arg-type]


def ports(chosen: list[Backend | None]) -> list[int]:
    return [b.port - 9000 if b is not None else -1 for b in chosen]


# Every strategy -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_provides_ibalancer(name: str) -> None:
    """Every balancer provides IBalancer."""
    verifyObject(IBalancer, make_balancer(name))


def test_config_names_are_the_contract() -> None:
    """BALANCERS holds exactly the five config names, each making its class."""
    assert sorted(BALANCERS) == sorted(NAMES)
    for name, kind in KINDS.items():
        assert type(make_balancer(name, random.Random(1))) is kind


def test_unknown_name_raises_value_error() -> None:
    """make_balancer rejects a name no strategy has, naming the known ones."""
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("fastest")


def test_make_balancer_passes_rng() -> None:
    """random2 from make_balancer draws from the given generator."""
    first = make_pool(make_balancer("random2", random.Random(5)), 6)
    second = make_pool(make_balancer("random2", random.Random(5)), 6)
    assert ports(picks(first, 50)) == ports(picks(second, 50))


@pytest.mark.parametrize("name", NAMES)
def test_excluded_backends_never_picked(name: str) -> None:
    """A backend in exclude is never picked."""
    pool = make_pool(make_balancer(name), 4)
    a, _, c, _ = pool.backends
    assert {0, 2}.isdisjoint(ports(picks(pool, 60, exclude=[a, c])))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("admin", [AdminState.DRAINING, AdminState.DISABLED])
def test_drained_and_disabled_never_picked(name: str, admin: AdminState) -> None:
    """A draining or disabled backend takes no new connection."""
    pool = make_pool(make_balancer(name))
    b = pool.backends[1]
    b.active = 1
    pool.set_admin(b, admin, "test")
    assert b.admin is admin
    assert 1 not in ports(picks(pool, 60))


@pytest.mark.parametrize("name", NAMES)
def test_down_never_picked(name: str) -> None:
    """An unhealthy backend is never picked."""
    pool = make_pool(make_balancer(name))
    pool.backends[0].healthy = False
    assert set(ports(picks(pool, 60))) == {1, 2}


@pytest.mark.parametrize("name", NAMES)
def test_full_backend_skipped(name: str) -> None:
    """A backend with max_connections open is skipped until one closes."""
    pool = make_pool(make_balancer(name))
    full = pool.backends[2]
    full.max_connections = full.active = 1
    assert set(ports(picks(pool, 60))) == {0, 1}
    pool.release(full)
    assert 2 in ports(picks(pool, 60))


@pytest.mark.parametrize("name", NAMES)
def test_backup_only_when_no_primary_up(name: str) -> None:
    """A backup is picked only while no primary is up, and then always."""
    pool = make_pool(make_balancer(name))
    pool.backends[2].backup = True
    assert set(ports(picks(pool, 60))) == {0, 1}
    pool.mark_down(pool.backends[0], "test")
    assert set(ports(picks(pool, 60))) == {1}
    pool.set_admin(pool.backends[1], AdminState.DISABLED, "test")
    assert set(ports(picks(pool, 60))) == {2}


@pytest.mark.parametrize("name", NAMES)
def test_none_when_nothing_available(name: str) -> None:
    """With no candidate left, pick returns None (with and without a key)."""
    balancer = make_balancer(name)
    empty = Pool("empty", [], balancer=balancer)
    assert empty.pick("k") is None
    pool = make_pool(balancer)
    for backend in pool.backends:
        pool.mark_down(backend, "test")
    assert pool.pick("k") is None
    assert pool.pick(None) is None


@pytest.mark.parametrize("name", NAMES)
def test_single_candidate_always_picked(name: str) -> None:
    """With one candidate left, every pick returns it."""
    pool = make_pool(make_balancer(name))
    a, _, c = pool.backends
    assert set(ports(picks(pool, 20, exclude=[a, c]))) == {1}


# Round robin ----------------------------------------------------------


def test_round_robin_cycles_in_member_order() -> None:
    """Round robin takes each backend in turn, in member order."""
    pool = make_pool(RoundRobin())
    assert ports(picks(pool, 7)) == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_keeps_cycling_when_one_drops_out() -> None:
    """When a backend goes down, the others still alternate evenly."""
    pool = make_pool(RoundRobin())
    pool.mark_down(pool.backends[1], "test")
    assert Counter(ports(picks(pool, 10))) == {0: 5, 2: 5}


# Smooth weighted ------------------------------------------------------


def test_weighted_interleaves_like_nginx() -> None:
    """Weights 5, 1, 1 give a a b a c a a, as nginx does."""
    pool = make_pool(SmoothWeighted(), weights=[5, 1, 1])
    assert ports(picks(pool, 14)) == [0, 0, 1, 0, 2, 0, 0] * 2


@settings(max_examples=100, deadline=None)
@given(weights=weights_strategy, rounds=st.integers(1, 4))
def test_weighted_gives_each_exactly_its_weight(
    weights: list[int], rounds: int
) -> None:
    """Every sum(weights) picks give each backend exactly its weight."""
    pool = make_pool(SmoothWeighted(), weights=weights)
    total = sum(weights)
    chosen = ports(picks(pool, rounds * total))
    for start in range(0, len(chosen), total):
        counts = Counter(chosen[start : start + total])
        assert [counts[i] for i in range(len(weights))] == weights


@settings(max_examples=100, deadline=None)
@given(weights=weights_strategy)
def test_weighted_never_runs_ahead_of_its_share(weights: list[int]) -> None:
    """
    After k picks no backend has more than ceil(k * weight / total) of them.

    Proof: current_i = k * w_i - total * n_i(k), and current_i > -total
    always, because the winner's current is positive before total is
    subtracted.  So n_i(k) < k * w_i / total + 1.  This rules out bursts
    such as a a a a a b c (a has 4 > ceil(4 * 5 / 7) after four picks).
    """
    pool = make_pool(SmoothWeighted(), weights=weights)
    total = sum(weights)
    counts = [0] * len(weights)
    for k, port in enumerate(ports(picks(pool, 2 * total)), start=1):
        counts[port] += 1
        for count, weight in zip(counts, weights, strict=True):
            assert count <= math.ceil(k * weight / total)


@settings(max_examples=100, deadline=None)
@given(weights=weights_strategy)
def test_weighted_runs_are_bounded(weights: list[int]) -> None:
    """
    No backend is picked more than m * total / (total - weight) times in a
    row, with m candidates.

    Follows from the bound above and its mirror: n_i(k) >= k - sum over
    j != i of ceil(k * w_j / total) > k * w_i / total - (m - 1).
    """
    pool = make_pool(SmoothWeighted(), weights=weights)
    total, members = sum(weights), len(weights)
    chosen = ports(picks(pool, 3 * total))
    for port, run in itertools.groupby(chosen):
        bound = members * total / (total - weights[port])
        assert len(list(run)) < bound


@settings(max_examples=50, deadline=None)
@given(weights=weights_strategy, periods=st.integers(2, 20))
def test_weighted_shares_converge(weights: list[int], periods: int) -> None:
    """Over N * sum(weights) picks each backend's share is weight / sum."""
    pool = make_pool(SmoothWeighted(), weights=weights)
    total = sum(weights)
    counts = Counter(ports(picks(pool, periods * total)))
    for i, weight in enumerate(weights):
        assert counts[i] / (periods * total) == pytest.approx(weight / total)


def test_weighted_follows_weight_changes() -> None:
    """After set_weight the new weights decide the shares."""
    pool = make_pool(SmoothWeighted(), weights=[1, 1])
    picks(pool, 3)
    pool.set_weight(pool.backends[0], 3)
    assert Counter(ports(picks(pool, 40))) == {0: 30, 1: 10}


def test_weighted_forgets_backends_that_left() -> None:
    """Counters for names no longer in the pool are dropped."""
    balancer = SmoothWeighted()
    pool = make_pool(balancer)
    for port in range(9100, 9200):
        pool.add(Backend("127.0.0.1", port))
        pool.pick()
        pool.remove(f"127.0.0.1:{port}")
        pool.pick()
    assert set(balancer._current) <= {b.name for b in pool.backends}


# Least connections ----------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    loads=st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 10)), min_size=1, max_size=8
    ),
    skip=st.integers(0, 20),
)
def test_least_conn_picks_a_minimum(loads: list[tuple[int, int]], skip: int) -> None:
    """Least connections picks a backend with the lowest active / weight."""
    balancer = LeastConnections()
    pool = make_pool(balancer, weights=[w for _, w in loads])
    for backend, (active, _) in zip(pool.backends, loads, strict=True):
        backend.active = active
    for _ in range(skip):
        pool.pick()
    chosen = pool.pick()
    assert chosen is not None
    assert chosen.active / chosen.weight == min(a / w for a, w in loads)


def test_least_conn_breaks_ties_in_rotation() -> None:
    """Equally loaded backends take turns rather than the first one winning."""
    pool = make_pool(LeastConnections(), 4)
    pool.backends[3].active = 1
    assert Counter(ports(picks(pool, 30))) == {0: 10, 1: 10, 2: 10}


def test_least_conn_weighs_connections() -> None:
    """A backend of weight 2 with 3 connections beats one of weight 1 with 2."""
    pool = make_pool(LeastConnections(), weights=[1, 2])
    pool.backends[0].active = 2
    pool.backends[1].active = 3
    assert set(ports(picks(pool, 10))) == {1}


def test_least_conn_spreads_as_connections_open() -> None:
    """Acquiring each pick keeps the open connections balanced."""
    pool = make_pool(LeastConnections(), 3)
    for _ in range(30):
        chosen = pool.pick()
        assert chosen is not None
        pool.acquire(chosen)
    assert [b.active for b in pool.backends] == [10, 10, 10]


# Two random choices ---------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    loads=st.tuples(st.integers(0, 20), st.integers(0, 20)),
    weights=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**32),
)
def test_random2_never_picks_the_worse_of_two(
    loads: tuple[int, int], weights: tuple[int, int], seed: int
) -> None:
    """With two candidates, the one with higher active / weight is never picked."""
    pool = make_pool(TwoRandomChoices(random.Random(seed)), weights=list(weights))
    for backend, active in zip(pool.backends, loads, strict=True):
        backend.active = active
    ratios = [a / w for a, w in zip(loads, weights, strict=True)]
    for _ in range(10):
        chosen = pool.pick()
        assert chosen is not None
        assert ratios[chosen.port - 9000] == min(ratios)


@settings(max_examples=100, deadline=None)
@given(loads=st.lists(st.integers(0, 20), min_size=3, max_size=8), seed=st.integers())
def test_random2_never_picks_the_unique_busiest(loads: list[int], seed: int) -> None:
    """A candidate busier than every other is never picked."""
    pool = make_pool(TwoRandomChoices(random.Random(seed)), len(loads))
    for backend, active in zip(pool.backends, loads, strict=True):
        backend.active = active
    busiest = max(loads)
    chosen = ports(picks(pool, 20))
    if loads.count(busiest) == 1:
        assert loads.index(busiest) not in chosen


def test_random2_reaches_every_candidate() -> None:
    """Equally loaded candidates are all picked, at random."""
    pool = make_pool(TwoRandomChoices(random.Random(3)), 5)
    assert set(ports(picks(pool, 200))) == {0, 1, 2, 3, 4}


# Consistent hash ------------------------------------------------------


def mapping(pool: Pool, keys: list[str]) -> dict[str, str]:
    result = {}
    for key in keys:
        chosen = pool.pick(key)
        assert chosen is not None
        result[key] = chosen.name
    return result


@settings(max_examples=100, deadline=None)
@given(keys=keys_strategy, count=st.integers(2, 5), data=st.data())
def test_hash_removal_moves_only_its_keys(
    keys: list[str], count: int, data: st.DataObject
) -> None:
    """Removing a backend moves only the keys it had, onto the others."""
    pool = make_pool(ConsistentHash(), count)
    before = mapping(pool, keys)
    gone = data.draw(st.sampled_from(pool.backends)).name
    pool.remove(gone)
    after = mapping(pool, keys)
    for key in keys:
        if before[key] != gone:
            assert after[key] == before[key]
        assert after[key] != gone


@settings(max_examples=100, deadline=None)
@given(keys=keys_strategy, count=st.integers(2, 5), data=st.data())
def test_hash_down_moves_only_its_keys(
    keys: list[str], count: int, data: st.DataObject
) -> None:
    """Marking a backend down moves only its keys, and they return when it is up."""
    pool = make_pool(ConsistentHash(), count)
    before = mapping(pool, keys)
    down = data.draw(st.sampled_from(pool.backends))
    pool.mark_down(down, "test")
    during = mapping(pool, keys)
    for key in keys:
        if before[key] != down.name:
            assert during[key] == before[key]
        assert during[key] != down.name
    pool.mark_up(down, "test")
    assert mapping(pool, keys) == before


@settings(max_examples=100, deadline=None)
@given(keys=keys_strategy)
def test_hash_same_key_same_backend(keys: list[str]) -> None:
    """The same key goes to the same backend on every call and every instance."""
    pool = make_pool(ConsistentHash(), 4)
    first = mapping(pool, keys)
    assert mapping(pool, keys) == first
    assert mapping(make_pool(ConsistentHash(), 4), keys) == first


def test_hash_keys_of_removed_backend_spread() -> None:
    """The keys of a removed backend go to more than one of the others."""
    keys = [f"10.0.{i // 256}.{i % 256}" for i in range(2000)]
    pool = make_pool(ConsistentHash(), 4)
    before = mapping(pool, keys)
    pool.remove(pool.backends[1].name)
    after = mapping(pool, keys)
    moved = Counter(after[k] for k in keys if before[k] == "127.0.0.1:9001")
    assert len(moved) == 3
    assert min(moved.values()) > sum(moved.values()) / 10


def test_hash_spreads_evenly() -> None:
    """10k keys over 3 equal backends land within 15% of an even share each."""
    pool = make_pool(ConsistentHash(), 3)
    counts = Counter(mapping(pool, [f"client-{i}" for i in range(10_000)]).values())
    assert len(counts) == 3
    for count in counts.values():
        assert abs(count - 10_000 / 3) < 0.15 * 10_000 / 3


def test_hash_follows_weights() -> None:
    """A backend of weight 2 gets about twice the keys of one of weight 1."""
    pool = make_pool(ConsistentHash(), weights=[2, 1])
    counts = Counter(mapping(pool, [f"client-{i}" for i in range(6000)]).values())
    assert counts["127.0.0.1:9000"] / counts["127.0.0.1:9001"] == pytest.approx(
        2, rel=0.2
    )


def test_hash_excluded_key_goes_to_next_on_ring() -> None:
    """A retry that excludes the key's backend lands on another, consistently."""
    pool = make_pool(ConsistentHash(), 4)
    first = pool.pick("client")
    assert first is not None
    retry = pool.pick("client", exclude=[first])
    assert retry is not None and retry is not first
    assert pool.pick("client", exclude=[first]) is retry


def test_hash_without_key_goes_round_robin() -> None:
    """A pick with key None cycles through the candidates."""
    pool = make_pool(ConsistentHash(), 3)
    assert ports([pool.pick(None) for _ in range(6)]) == [0, 1, 2, 0, 1, 2]


def test_hash_ring_rebuilt_only_on_version_change() -> None:
    """The ring is reused until pool.version changes."""
    balancer = ConsistentHash()
    pool = make_pool(balancer)
    pool.pick("a")
    ring = balancer._points
    pool.mark_down(pool.backends[0], "test")
    pool.pick("b")
    assert balancer._points is ring
    pool.set_weight(pool.backends[1], 2)
    pool.pick("c")
    assert balancer._points is not ring
    assert len(balancer._points) == 4 * 160


def test_hash_rejects_no_replicas() -> None:
    """ConsistentHash needs at least one ring point per unit of weight."""
    with pytest.raises(ValueError):
        ConsistentHash(replicas=0)
