"""The C{[limits.NAME]} tables and the C{limit} key of routes and HTTP
listeners: rates, keys, modes, a Redis store, defaults, and each mistake
refused with its file and key."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import Config, ConfigError, LimitConfig, parse_config
from rproxy.limits.gcra import Rate
from rproxy.limits.store import RedisAddress

HTTP = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
{listener}
[[listeners.routes]]
path_prefix = "/api/"
pool = "web"
{route}
"""


def parse(
    limits: str, *, route: str = 'limit = ["per_ip"]', listener: str = ""
) -> Config:
    text = HTTP.format(route=route, listener=listener) + limits
    return parse_config(tomllib.loads(text), "/etc/rproxy/c.toml")


def errors(limits: str, **kwargs: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(limits, **kwargs)
    return info.value.errors


def test_limit_with_every_key() -> None:
    """Every key of a limit is read; the route names it."""
    config = parse(
        """
[limits.per_ip]
key = ["client_ip", "header:X-Api-Key"]
rate = "20/s"
burst = 40
mode = "delay"
store = "redis://:secret@127.0.0.1:6380/2"
fail = "closed"
max_keys = 5000
headers = true
"""
    )
    assert config.limits == (
        LimitConfig(
            "per_ip",
            Rate(20, 1),
            40,
            ("client_ip", "header:x-api-key"),
            "delay",
            RedisAddress("127.0.0.1", 6380, 2, "secret"),
            "closed",
            5000,
            True,
        ),
    )
    assert config.listeners[0].routes[0].limit == ("per_ip",)


def test_limit_defaults() -> None:
    """Only rate is required: client_ip, no burst, reject, local, open,
    100,000 keys, fields on allowed responses."""
    (limit,) = parse('[limits.per_ip]\nrate = "5/m"\n').limits
    assert limit == LimitConfig("per_ip", Rate(5, 60))
    assert (limit.key, limit.burst, limit.mode, limit.store) == (
        ("client_ip",),
        0,
        "reject",
        None,
    )
    assert (limit.fail, limit.max_keys, limit.headers) == ("open", 100_000, False)


def test_key_and_limit_may_be_a_single_string() -> None:
    """key = "route" and limit = "NAME" are one-element lists."""
    config = parse(
        '[limits.per_ip]\nrate = "5/m"\nkey = "route"\n', route='limit = "per_ip"'
    )
    assert config.limits[0].key == ("route",)
    assert config.listeners[0].routes[0].limit == ("per_ip",)


def test_listener_limit() -> None:
    """An HTTP listener's limit applies before routing."""
    config = parse(
        '[limits.all]\nrate = "100/s"\n', route="", listener='limit = ["all"]'
    )
    assert config.listeners[0].limit == ("all",)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("burst = 1", "limits.l.rate: missing required key"),
        ('rate = "20/d"', "limits.l.rate: must be a rate such as '20/s'"),
        ("rate = 20", "limits.l.rate: must be a rate such as '20/s', got 20"),
        ('rate = "1/s"\nburst = -1', "limits.l.burst: must be an integer >= 0"),
        (
            'rate = "1/s"\nkey = "ip"',
            "limits.l.key: must be 'client_ip', 'route' or 'header:NAME'",
        ),
        ('rate = "1/s"\nkey = []', "limits.l.key: must be a key part"),
        (
            'rate = "1/s"\nkey = ["route", "route"]',
            "limits.l.key: names a key part twice",
        ),
        ('rate = "1/s"\nmode = "drop"', "limits.l.mode: must be one of"),
        (
            'rate = "1/s"\nstore = "http://x"',
            "limits.l.store: must be a redis://HOST[:PORT][/DB] URL",
        ),
        (
            'rate = "1/s"\nstore = "redis://h/x"',
            "limits.l.store: the database must be a number",
        ),
        ('rate = "1/s"\nfail = "closed"', "limits.l.fail: is only used with a store"),
        ('rate = "1/s"\nmax_keys = 0', "limits.l.max_keys: must be a positive integer"),
        ('rate = "1/s"\ncolour = 1', "limits.l.colour: unknown key"),
        (
            'rate = "1/m"\nburst = 1\nmode = "delay"',
            "limits.l.burst: mode = 'delay' would hold a request up to 60 s",
        ),
    ],
)
def test_each_mistake_is_reported_at_its_key(table: str, message: str) -> None:
    """A bad limit is refused with its file and key path."""
    found = errors(f"[limits.l]\n{table}\n", route="")
    assert any(line.startswith(f"/etc/rproxy/c.toml: {message}") for line in found), (
        found
    )


def test_route_naming_an_unknown_limit_is_refused() -> None:
    """A route's limit must be a [limits.NAME]; a close name is suggested."""
    found = errors('[limits.per_ip]\nrate = "1/s"\n', route='limit = ["per-ip"]')
    assert found == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].limit: no limit named 'per-ip'; "
        "did you mean 'per_ip'?"
    ]


def test_route_naming_a_limit_twice_is_refused() -> None:
    """Counting a request twice under one limit is a mistake."""
    found = errors('[limits.a]\nrate = "1/s"\n', route='limit = ["a", "a"]')
    assert "names a limit twice" in found[0]


def test_listener_limit_cannot_count_by_route() -> None:
    """A listener's limits run before routing, so key = "route" is refused
    there (and allowed on routes)."""
    limits = '[limits.r]\nrate = "1/s"\nkey = ["client_ip", "route"]\n'
    found = errors(limits, route="", listener='limit = ["r"]')
    assert "listeners[0].limit: limit 'r' counts by route" in found[0]
    assert parse(limits, route='limit = ["r"]').limits[0].key == ("client_ip", "route")


def test_limit_on_a_tcp_listener_is_refused() -> None:
    """limit is an HTTP listener key."""
    text = """
[pools.db]
backends = ["127.0.0.1:5432"]
[limits.a]
rate = "1/s"
[[listeners]]
name = "db"
listen = "tcp:5433"
pool = "db"
limit = ["a"]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "c.toml")
    assert (
        'listeners[0].limit: only for protocol = "http" listeners'
        in info.value.errors[0]
    )


def test_limits_must_be_named_tables() -> None:
    """limits = ... that is no table of tables is refused."""
    text = 'limits = "per_ip"\n' + HTTP.format(route="", listener="")
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "c.toml")
    assert info.value.errors == [
        "c.toml: limits: must be a table of named limits, as [limits.NAME]"
    ]


def test_redis_address_reads_host_port_db_and_password() -> None:
    """The store URL's parts, with defaults port 6379 and database 0; the
    password never shows in its text."""
    assert RedisAddress.parse("redis://cache.example") == RedisAddress("cache.example")
    address = RedisAddress.parse("redis://:p%40ss@[::1]:7000/3")
    assert address == RedisAddress("::1", 7000, 3, "p@ss")
    assert str(address) == "redis://[::1]:7000/3"


def test_readme_example_is_a_valid_config() -> None:
    """The README's rate limit example parses (with a pool for it to use)
    into what it says."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"<!-- example: limits -->\n```toml\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    text = '[pools.web]\nbackends = ["127.0.0.1:8001"]\n' + found[1]
    config = parse_config(tomllib.loads(text), "README.md")
    assert config.limits == (LimitConfig("per_ip", Rate(20, 1), 40),)
    assert config.listeners[0].limit == ("per_ip",)
    assert config.listeners[0].routes[0].limit == ("per_ip",)
