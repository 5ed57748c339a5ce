"""A route's compress key: true for the defaults, a table of settings, or
each mistake refused with the file and the key."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import ConfigError, parse_config
from rproxy.http.filters.compress import CompressSettings

ROUTE = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
[[listeners.routes]]
pool = "web"
compress = {value}
"""


def route_compress(value: str) -> object:
    config = parse_config(tomllib.loads(ROUTE.format(value=value)), "c.toml")
    return config.listeners[0].routes[0].compress


def test_true_takes_the_defaults() -> None:
    """C{compress = true} is the default settings; false is none."""
    assert route_compress("true") == CompressSettings()
    assert route_compress("false") is None


def test_a_table_sets_types_length_and_levels() -> None:
    """The table's keys reach the settings."""
    settings = route_compress(
        '{ types = ["text/*"], min_length = 10, levels = { gzip = 9 } }'
    )
    assert isinstance(settings, CompressSettings)
    assert settings.types == ("text/*",)
    assert settings.min_length == 10
    assert dict(settings.levels)["gzip"] == 9


def test_mistakes_name_the_file_and_key() -> None:
    """Each wrong value is reported under its own key, once."""
    with pytest.raises(ConfigError) as info:
        route_compress("{ min_length = -1, levels = { gzip = 99 } }")
    assert info.value.errors == [
        "c.toml: listeners[0].routes[0].compress.min_length: must be an "
        "integer >= 0, got -1",
        "c.toml: listeners[0].routes[0].compress.levels.gzip: must be a gzip "
        "level 1-9, got 99",
    ]


def test_compress_must_be_a_boolean_or_table() -> None:
    """A string is refused."""
    with pytest.raises(ConfigError) as info:
        route_compress('"gzip"')
    assert info.value.errors == [
        "c.toml: listeners[0].routes[0].compress: must be true, false or a "
        "table, got 'gzip'"
    ]
