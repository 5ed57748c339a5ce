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
    pool = Pool("p", [b := Backend("h", 1)], fall=3)
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
