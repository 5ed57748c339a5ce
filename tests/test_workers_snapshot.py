"""Tests for the pool pictures the supervisor pushes to its workers."""

from __future__ import annotations

import json

import pytest

from rproxy.backends import AdminState, Backend, BackendState, Pool, Registry
from rproxy.workers._snapshot import (
    BackendPicture,
    PoolPicture,
    apply_pools,
    decode_pools,
    encode_pools,
)


class Now:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def registry(*names: str, now: Now | None = None) -> Registry:
    pool = Pool(
        "web",
        [Backend("127.0.0.1", 8000 + i, name=n) for i, n in enumerate(names)],
        now=now or Now(),
    )
    return Registry([pool])


def picture(reg: Registry) -> list[PoolPicture]:
    return decode_pools(json.loads(json.dumps(encode_pools(reg))))


def no_tls(pool: str) -> None:
    return None


def test_encoding_round_trips_through_json() -> None:
    """A registry's picture survives JSON: every field comes back."""
    reg = registry("a", "b")
    pool = reg.get("web")
    b = pool.get("b")
    pool.set_weight(b, 5)
    pool.set_admin(b, AdminState.DRAINING, "drain by admin")
    b.max_connections = 7
    b.last_check_at, b.last_check_ok = 12.5, True
    [decoded] = picture(reg)
    assert decoded.name == "web"
    assert [x.name for x in decoded.backends] == ["a", "b"]
    assert decoded.backends[1] == BackendPicture(
        name="b",
        host="127.0.0.1",
        port=8001,
        weight=5,
        max_connections=7,
        admin=AdminState.DISABLED,
        reason="drain by admin",
        last_check_at=12.5,
        last_check_ok=True,
    )


@pytest.mark.parametrize("data", [{}, [{"name": "x"}], [{"backends": []}], "x"])
def test_broken_pictures_are_refused(data: object) -> None:
    """Data that is not a picture raises ValueError."""
    with pytest.raises(ValueError):
        decode_pools(data)


def test_members_are_added_and_removed_to_match() -> None:
    """A worker gains the supervisor's new members and loses the gone ones."""
    supervisor = registry("a", "c")
    supervisor.get("web").get("c").weight = 3
    worker = registry("a", "b")
    applied = apply_pools(worker, picture(supervisor), no_tls)
    pool = worker.get("web")
    assert [b.name for b in pool.backends] == ["a", "c"]
    assert pool.get("c").weight == 3 and pool.get("c").port == 8001
    assert applied.resized == ("web",)
    assert [b.name for b in applied.removed] == ["b"]


def test_unchanged_members_keep_their_counters() -> None:
    """A member both sides have stays the same object with its counters."""
    worker = registry("a")
    kept = worker.get("web").get("a")
    kept.connections_total = 42
    applied = apply_pools(worker, picture(registry("a")), no_tls)
    assert worker.get("web").get("a") is kept and kept.connections_total == 42
    assert applied.resized == () and applied.removed == ()


def test_pools_the_worker_lacks_are_skipped() -> None:
    """A picture of an unknown pool changes nothing."""
    worker = Registry([Pool("other")])
    assert apply_pools(worker, picture(registry("a")), no_tls).resized == ()


def test_weights_follow() -> None:
    """A weight set in the supervisor (the admin, a reload) reaches the worker."""
    supervisor = registry("a")
    supervisor.get("web").set_weight(supervisor.get("web").get("a"), 9)
    worker = registry("a")
    apply_pools(worker, picture(supervisor), no_tls)
    assert worker.get("web").get("a").weight == 9


def test_drain_becomes_a_drain_in_the_worker() -> None:
    """
    The supervisor (no traffic) shows a drained backend disabled; a worker
    with requests open on it drains them, then disables it.
    """
    supervisor = registry("a")
    supervisor.get("web").set_admin(
        supervisor.get("web").get("a"), AdminState.DRAINING, "drain by admin"
    )
    worker = registry("a")
    pool = worker.get("web")
    busy = pool.get("a")
    pool.acquire(busy)
    apply_pools(worker, picture(supervisor), no_tls)
    assert busy.state is BackendState.DRAINING
    pool.release(busy)
    assert busy.state is BackendState.DISABLED


def test_enable_enables() -> None:
    """Enabling in the supervisor enables in the worker."""
    worker = registry("a")
    pool = worker.get("web")
    pool.set_admin(pool.get("a"), AdminState.DISABLED, "disable by admin")
    apply_pools(worker, picture(registry("a")), no_tls)
    assert pool.get("a").state is BackendState.UP


def test_down_in_the_supervisor_is_down_in_the_worker() -> None:
    """A backend the supervisor's checks took down is down in the worker."""
    supervisor = registry("a")
    supervisor.get("web").mark_down(supervisor.get("web").get("a"), "refused")
    worker = registry("a")
    apply_pools(worker, picture(supervisor), no_tls)
    backend = worker.get("web").get("a")
    assert not backend.healthy and "refused" in backend.reason


def test_checks_passing_again_bring_it_back() -> None:
    """Once the supervisor's checks bring it up, the worker has it up."""
    now = Now()
    supervisor = registry("a", now=now)
    worker = registry("a", now=now)
    sup = supervisor.get("web")
    sup.mark_down(sup.get("a"), "refused")
    apply_pools(worker, picture(supervisor), no_tls)
    now.t = 110.0
    sup.get("a").last_check_at, sup.get("a").last_check_ok = 110.0, True
    sup.mark_up(sup.get("a"), "2 checks passed")
    apply_pools(worker, picture(supervisor), no_tls)
    assert worker.get("web").get("a").healthy


def test_a_passive_down_waits_for_a_newer_passing_check() -> None:
    """
    A backend the worker's own traffic took down stays down until a check
    the supervisor ran after that passes.
    """
    now = Now()
    supervisor = registry("a", now=now)
    sup = supervisor.get("web").get("a")
    sup.last_check_at, sup.last_check_ok = 100.0, True
    worker = registry("a", now=now)
    now.t = 105.0
    worker.get("web").mark_down(worker.get("web").get("a"), "3 failures in a row")
    apply_pools(worker, picture(supervisor), no_tls)
    assert not worker.get("web").get("a").healthy
    sup.last_check_at = 106.0
    apply_pools(worker, picture(supervisor), no_tls)
    assert worker.get("web").get("a").healthy


def test_new_members_get_the_pool_tls() -> None:
    """A member added from a picture speaks TLS as its pool does."""
    made: list[str] = []

    def tls_for(pool: str) -> object:
        def for_host(host: str) -> object:
            made.append(host)
            return "creator"

        return for_host

    worker = registry()
    apply_pools(worker, picture(registry("a")), tls_for)  # type: ignore[arg-type]
    assert worker.get("web").get("a").tls == "creator" and made == ["127.0.0.1"]
