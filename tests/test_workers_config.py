"""Tests for the top-level C{workers} key."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import Config, ConfigError, parse_config
from rproxy.config._validate import Problems, Table
from rproxy.config._workers import MAX_WORKERS, parse_workers, worker_count

BASE = """
[pools.web]
backends = ["127.0.0.1:8080"]

[[listeners]]
name = "front"
listen = '{listen}'
pool = "web"
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "c.toml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_one_worker_by_default() -> None:
    """Without the key, the proxy is one process."""
    assert parse(BASE.format(listen="tcp:8000")).workers == 1


def test_a_number_of_workers() -> None:
    """C{workers = 4} asks for four."""
    assert parse("workers = 4\n" + BASE.format(listen="tcp:8000")).workers == 4


def test_auto_is_one_per_available_core() -> None:
    """C{"auto"} counts the cores this process may run on."""
    assert worker_count("auto", cores=lambda: 6) == 6
    assert worker_count("auto", cores=lambda: 1000) == MAX_WORKERS


def test_auto_in_a_file_uses_the_cores() -> None:
    """A file saying C{"auto"} gets at least one worker."""
    text = 'workers = "auto"\n' + BASE.format(listen="tcp:8000")
    assert parse(text).workers >= 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "workers: must be from 1 to 256, got 0"),
        ("1000", "workers: must be from 1 to 256, got 1000"),
        ('"many"', "workers: must be a number of processes or \"auto\", got 'many'"),
        ("true", 'workers: must be a number of processes or "auto", got True'),
        ("2.5", 'workers: must be a number of processes or "auto", got 2.5'),
    ],
)
def test_bad_values_are_refused_with_the_reason(value: str, message: str) -> None:
    """Each wrong value of C{workers} is named with what is allowed."""
    found = errors(f"workers = {value}\n" + BASE.format(listen="tcp:8000"))
    assert found == [f"c.toml: {message}"]


def test_workers_need_endpoints_whose_socket_can_be_handed() -> None:
    """With two workers a listener on a tls: endpoint is refused, naming it."""
    listen = "tls:8443"
    found = errors("workers = 2\n" + BASE.format(listen=listen))
    assert len(found) == 1
    assert (
        "with 2 workers, listener 'front' must listen on a tcp:, tcp6: or unix:"
        in (found[0])
    )
    assert "[listeners.tls]" in found[0]


@pytest.mark.parametrize(
    "listen", ["tcp:8000", "tcp6:8000:interface=\\:\\:1", "unix:/tmp/s"]
)
def test_tcp_tcp6_and_unix_endpoints_can_be_handed(listen: str) -> None:
    """TCP over IPv4 and IPv6 and UNIX sockets are fine with workers."""
    assert parse("workers = 2\n" + BASE.format(listen=listen)).workers == 2


def test_one_worker_keeps_any_endpoint() -> None:
    """One worker binds its own endpoints, whatever they are."""
    problems = Problems("c.toml")
    top = Table(problems, "", {"workers": 1}, ("workers",))
    assert parse_workers(top, [("front", "ssl:8443:privateKey=k.pem")]) == 1
    assert problems.lines == []


def test_redirect_listeners_are_checked_too() -> None:
    """Every port counts, the redirect listener's as well."""
    problems = Problems("c.toml")
    top = Table(problems, "", {"workers": 3}, ("workers",))
    parse_workers(top, [("front", "tcp:443"), ("front:redirect", "ssl:80")])
    assert len(problems.lines) == 1 and "'front:redirect'" in problems.lines[0]


def test_workers_refuse_a_disk_cache() -> None:
    """Each worker would index the one directory alone: refused, named."""
    text = (
        "workers = 2\n"
        + BASE.format(listen="tcp:8000")
        + '[caches.pages]\nmemory = "10MiB"\n'
        + 'disk = { path = "/tmp/rproxy-cache", size = "1GiB" }\n'
    )
    found = errors(text)
    assert len(found) == 1 and "cache 'pages' cannot have a disk tier" in found[0]
    assert parse(text.replace("workers = 2", "workers = 1")).workers == 1
