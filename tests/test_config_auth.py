"""A route's auth key: its table read into AuthSettings with stated
defaults, and each mistake refused with the file and the key."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import ConfigError, parse_config
from rproxy.http.filters.auth import AuthSettings

ROUTE = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
pool = "web"
auth = {value}
"""


def route_auth(value: str) -> object:
    config = parse_config(tomllib.loads(ROUTE.format(value=value)), "c.toml")
    return config.listeners[0].routes[0].auth


def test_only_a_url_takes_the_defaults() -> None:
    """Just a url: no fields copied, Authorization and Cookie forwarded,
    5 s timeout, no caching."""
    settings = route_auth('{ url = "http://127.0.0.1:9000/verify" }')
    assert settings == AuthSettings("http://127.0.0.1:9000/verify")
    assert isinstance(settings, AuthSettings)
    assert settings.forward_headers == ("Authorization", "Cookie")
    assert (settings.timeout, settings.cache, settings.cache_entries) == (
        5.0,
        0.0,
        10_000,
    )


def test_every_key_reaches_the_settings() -> None:
    """Each key of the table is read."""
    settings = route_auth(
        '{ url = "https://auth.example/check", copy_headers = ["X-User", "X-Groups"],'
        ' forward_headers = ["Authorization"], timeout = 1.5, cache = 30,'
        " cache_without_directives = true, cache_entries = 500 }"
    )
    assert settings == AuthSettings(
        "https://auth.example/check",
        copy_headers=("X-User", "X-Groups"),
        forward_headers=("Authorization",),
        timeout=1.5,
        cache=30,
        cache_without_directives=True,
        cache_entries=500,
    )


def test_no_auth_key_is_none() -> None:
    """A route without auth has none."""
    config = parse_config(
        tomllib.loads(ROUTE.replace("auth = {value}\n", "")), "c.toml"
    )
    assert config.listeners[0].routes[0].auth is None


@pytest.mark.parametrize(
    ("value", "key", "problem"),
    [
        ("{ copy_headers = [] }", "auth.url", "missing required key"),
        ('{ url = "ftp://x/" }', "auth.url", "http:// or https://"),
        ('{ url = "http:///path" }', "auth.url", "with a host"),
        ('{ url = "http://a/", timeout = 0 }', "auth.timeout", ""),
        ('{ url = "http://a/", cache = -1 }', "auth.cache", ""),
        ('{ url = "http://a/", cache_entries = 0 }', "auth.cache_entries", ""),
        (
            '{ url = "http://a/", copy_headers = ["bad name"] }',
            "auth.copy_headers[0]",
            "header name",
        ),
        (
            '{ url = "http://a/", cache_seconds = 1 }',
            "auth.cache_seconds",
            "unknown key",
        ),
        ('"http://a/"', "auth", "must be a table"),
    ],
)
def test_mistakes_name_the_file_and_key(value: str, key: str, problem: str) -> None:
    """Each mistake is one line naming the file and the key path."""
    with pytest.raises(ConfigError) as raised:
        route_auth(value)
    [line] = [line for line in raised.value.errors if ".auth" in line]
    assert line.startswith("c.toml: ")
    assert f"routes[0].{key}" in line
    assert problem in line
