"""The backend model: addresses, state, candidates, drain, rise/fall."""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from rproxy.backends import (
    AdminState,
    Backend,
    BackendState,
    Pool,
    Registry,
    format_address,
    parse_address,
)
from rproxy.interfaces import IRegistry
from rproxy.policy import PoolPolicy

#: passive health as it was before the panic threshold: any backend may go.
NO_PANIC = PoolPolicy(panic_threshold=0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5433", ("127.0.0.1", 5433)),
        ("db.internal:80", ("db.internal", 80)),
        ("[::1]:5433", ("::1", 5433)),
        ("[2001:db8::7]:65535", ("2001:db8::7", 65535)),
    ],
)
def test_parse_address_accepts_host_port_and_bracketed_ipv6(
    text: str, expected: tuple[str, int]
) -> None:
    """host:port and [ipv6]:port parse, and format back to the same text."""
    assert parse_address(text) == expected
    assert format_address(*expected) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected 'host:port'"),
        (":80", "expected 'host:port'"),
        ("::1:80", "write an IPv6 address as '[::1]:port'"),
        ("[::1]80", "expected '[ipv6]:port'"),
        ("[nothex]:80", "is not an IPv6 address"),
        ("h:0", "port must be 1-65535"),
        ("h:65536", "port must be 1-65535"),
        ("h:http", "port must be 1-65535"),
    ],
)
def test_parse_address_refuses_malformed_addresses(text: str, message: str) -> None:
    """Malformed addresses raise ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_address(text)


def test_backend_name_defaults_to_its_address() -> None:
    """A backend with no name is named by its address."""
    assert Backend("::1", 80).name == "[::1]:80"
    assert Backend.from_address("10.0.0.1:80", weight=2).weight == 2


def test_backend_refuses_a_weight_below_one() -> None:
    """A weight of 0 or less is refused when the backend is built."""
    with pytest.raises(ValueError):
        Backend("h", 1, weight=0)


def test_admin_state_overrides_health() -> None:
    """A disabled or draining backend shows that state even when down."""
    pool = Pool("p", [b := Backend("h", 1)])
    pool.mark_down(b, "test")
    assert b.state is BackendState.DOWN
    b.active = 1
    pool.set_admin(b, AdminState.DRAINING, "ops")
    assert b.state is BackendState.DRAINING
    pool.set_admin(b, AdminState.DISABLED, "ops")
    assert b.state is BackendState.DISABLED


def test_draining_backend_is_disabled_when_its_last_connection_ends() -> None:
    """Drain: no new traffic, and disabled once the last connection ends."""
    pool = Pool("p", [b := Backend("h", 1), Backend("h", 2)])
    pool.acquire(b)
    pool.acquire(b)
    pool.set_admin(b, AdminState.DRAINING, "ops")
    assert b not in pool.candidates()
    pool.release(b)
    assert b.state is BackendState.DRAINING
    pool.release(b)
    assert b.state is BackendState.DISABLED
    assert b.reason == "drained"


def test_draining_an_idle_backend_disables_it_at_once() -> None:
    """A drained backend with no connection is disabled straight away."""
    pool = Pool("p", [b := Backend("h", 1)])
    pool.set_admin(b, AdminState.DRAINING, "ops")
    assert b.state is BackendState.DISABLED


def test_candidates_use_backups_only_while_no_primary_is_up() -> None:
    """Backups appear only when every primary is down or disabled."""
    primary, spare = Backend("h", 1), Backend("h", 2, backup=True)
    pool = Pool("p", [primary, spare])
    assert pool.candidates() == [primary]
    pool.mark_down(primary, "test")
    assert pool.candidates() == [spare]
    pool.mark_up(primary, "test")
    primary.max_connections, primary.active = 1, 1
    assert pool.candidates() == []


def test_release_never_goes_below_zero() -> None:
    """A stray extra release leaves active at zero."""
    pool = Pool("p", [b := Backend("h", 1)])
    pool.release(b)
    assert b.active == 0


def test_passive_failures_must_be_consecutive() -> None:
    """A successful connect resets the run of connect failures."""
    pool = Pool("p", [b := Backend("h", 1)], fall=3, policy=NO_PANIC)
    for _ in range(2):
        pool.report_failure(b, "refused")
    pool.report_success(b)
    for _ in range(2):
        pool.report_failure(b, "refused")
    assert b.healthy
    pool.report_failure(b, "refused")
    assert not b.healthy
    assert b.failures_total == 5
    assert b.reason == "3 failures in a row, last: refused"


def test_observers_hear_each_change_once() -> None:
    """Observers get (pool, backend, old, new, reason) once per real change."""
    pool = Pool("p", [b := Backend("h", 1)], fall=1, rise=1, now=lambda: 42.0)
    heard = []
    pool.observe(lambda *args: heard.append(args))
    pool.record_check(b, False, "timed out")
    pool.record_check(b, False, "timed out")
    pool.record_check(b, True, "passed")
    assert heard == [
        (
            pool,
            b,
            BackendState.UP,
            BackendState.DOWN,
            "1 check failed, last: timed out",
        ),
        (pool, b, BackendState.DOWN, BackendState.UP, "1 check passed"),
    ]
    assert b.changed_at == 42.0
    assert (b.last_check_ok, b.last_check_at) == (True, 42.0)


def test_state_changes_are_logged_as_events() -> None:
    """A change is one event with backend, pool, state and reason fields."""
    pool = Pool("web", [b := Backend("h", 1)])
    with capturedLogs() as events:
        pool.mark_down(b, "maintenance")
    (event,) = events
    assert (
        event["log_format"]
        == "backend {backend} in pool {pool} is now {state}: {reason}"
    )
    assert (event["backend"], event["pool"], event["state"], event["reason"]) == (
        "h:1",
        "web",
        "down",
        "maintenance",
    )


def test_membership_and_weight_changes_bump_the_version() -> None:
    """add, remove and set_weight each bump the pool version."""
    pool = Pool("p")
    pool.add(b := Backend("h", 1))
    with pytest.raises(ValueError):
        pool.add(Backend("h", 1))
    version = pool.version
    pool.set_weight(b, 3)
    assert (b.weight, pool.version) == (3, version + 1)
    with pytest.raises(ValueError):
        pool.set_weight(b, 0)
    pool.remove("h:1")
    assert pool.backends == []


def test_registry_holds_named_pools() -> None:
    """The registry finds pools by name and refuses duplicates."""
    registry = Registry([Pool("a"), Pool("b")])
    verifyObject(IRegistry, registry)
    assert [p.name for p in registry] == ["a", "b"]
    assert "a" in registry and len(registry) == 2
    with pytest.raises(ValueError):
        registry.add(Pool("a"))
    registry.remove("a")
    with pytest.raises(KeyError):
        registry.get("a")


def test_pool_without_a_policy_has_the_default_one() -> None:
    """A pool built without a policy has PoolPolicy's defaults."""
    assert Pool("p").policy == PoolPolicy()


def fail(pool: Pool, backend: Backend, times: int) -> None:
    for _ in range(times):
        pool.report_failure(backend, "bad response")


def test_a_lone_backend_stays_in_service_after_passive_failures() -> None:
    """Below the default panic threshold (0.5) passive health never takes
    the only backend out: it keeps serving, its failures still counted,
    and one warning says so."""
    pool = Pool("web", [b := Backend("h", 1)], fall=3)
    with capturedLogs() as events:
        fail(pool, b, 3)
    assert b.healthy and b.state is BackendState.UP
    assert pool.candidates() == [b]
    assert (b.failures_total, b.fails) == (3, 3)
    (event,) = events
    assert event["log_level"].name == "warn"
    assert (
        event["backend"],
        event["pool"],
        event["fails"],
        event["reason"],
        event["left"],
        event["counted"],
        event["threshold"],
    ) == ("h:1", "web", 3, "bad response", 0, 1, 0.5)
    with capturedLogs() as later:
        fail(pool, b, 3)
    assert b.healthy and later == []


def test_of_two_backends_the_first_to_fail_goes_and_the_second_stays() -> None:
    """With two backends one may go (half are left); the other then stays."""
    pool = Pool("web", [a := Backend("h", 1), b := Backend("h", 2)], fall=3)
    fail(pool, a, 3)
    assert not a.healthy
    assert a.reason == "3 failures in a row, last: bad response"
    fail(pool, b, 3)
    assert b.healthy
    assert pool.candidates() == [b]


def test_a_panic_threshold_of_zero_restores_ejection_of_the_last() -> None:
    """panic_threshold = 0: passive health takes out any backend."""
    pool = Pool("web", [b := Backend("h", 1)], fall=3, policy=NO_PANIC)
    fail(pool, b, 3)
    assert not b.healthy
    assert pool.candidates() == []


def test_the_threshold_counts_enabled_primaries_only() -> None:
    """Backups and disabled backends do not count: a primary whose only
    peers are a backup and a disabled backend is the last one."""
    pool = Pool(
        "web",
        [
            a := Backend("h", 1),
            off := Backend("h", 2),
            Backend("h", 3, backup=True),
        ],
        fall=1,
    )
    pool.set_admin(off, AdminState.DISABLED, "ops")
    fail(pool, a, 1)
    assert a.healthy


def test_a_backend_left_in_goes_once_others_recover() -> None:
    """The guard holds while the pool is short; once another backend is
    back, the next failure of one already past fall takes it out."""
    pool = Pool("web", [a := Backend("h", 1), b := Backend("h", 2)], fall=2, rise=1)
    pool.mark_down(a, "maintenance")
    fail(pool, b, 2)
    assert b.healthy
    pool.record_check(a, True, "passed")
    fail(pool, b, 1)
    assert not b.healthy
    assert b.reason == "3 failures in a row, last: bad response"


def test_active_checks_take_a_lone_backend_down_whatever_the_threshold() -> None:
    """The panic threshold guards passive health only."""
    pool = Pool(
        "web", [b := Backend("h", 1)], fall=2, policy=PoolPolicy(panic_threshold=1.0)
    )
    pool.record_check(b, False, "timed out")
    pool.record_check(b, False, "timed out")
    assert not b.healthy
