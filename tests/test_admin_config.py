"""Tests for the C{[admin]} config section: where the admin interface
listens, its token file, and the refusal of a public listener without one."""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rproxy.config import Config, ConfigError, load_config, parse_config
from rproxy.config._admin import AdminConfig, is_loopback_endpoint

BASE = """
[pools.db]
backends = ["127.0.0.1:5433"]

[[listeners]]
name = "front"
listen = "tcp:6432"
pool = "db"
"""


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def parse(text: str, source: str = "c.toml") -> Config:
    return parse_config(tomllib.loads(BASE + text), source)


def errors(text: str, source: str = "c.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return info.value.errors


def test_no_admin_section_means_no_admin_interface() -> None:
    """Without C{[admin]} there is no admin interface."""
    assert parse("").admin is None


def test_loopback_listener_needs_no_token() -> None:
    """A listener on 127.0.0.1 may go without a token."""
    config = parse('[admin]\nlisten = "tcp:9901:interface=127.0.0.1"\n')
    assert config.admin == AdminConfig("tcp:9901:interface=127.0.0.1", None, None)


def test_token_is_read_stripped_relative_to_the_config(directory: Path) -> None:
    """
    C{token_file} is relative to the config file's directory; the token is
    its content without surrounding whitespace, and not shown in the repr.
    """
    (directory / "admin.token").write_text("  s3cret-token\n")
    source = str(directory / "rproxy.toml")
    config = parse('[admin]\nlisten = "tcp:9901"\ntoken_file = "admin.token"\n', source)
    assert config.admin is not None
    assert config.admin.token == "s3cret-token"
    assert config.admin.token_file == str(directory / "admin.token")
    assert "s3cret" not in repr(config.admin)


def test_missing_token_file_is_an_error(directory: Path) -> None:
    """A token file that cannot be read is named in a config error."""
    source = str(directory / "rproxy.toml")
    missing = directory / "nope.token"
    assert errors(
        '[admin]\nlisten = "tcp:9901:interface=127.0.0.1"\ntoken_file = "nope.token"\n',
        source,
    ) == [
        f"{source}: admin.token_file: cannot read {missing}: No such file or directory"
    ]


def test_empty_token_file_is_an_error(directory: Path) -> None:
    """A token file holding only whitespace is an error."""
    (directory / "t").write_text(" \n\n")
    source = str(directory / "rproxy.toml")
    assert errors('[admin]\nlisten = "tcp:9901"\ntoken_file = "t"\n', source) == [
        f"{source}: admin.token_file: {directory / 't'} is empty: write the token in it"
    ]


def test_token_with_inner_whitespace_is_an_error(directory: Path) -> None:
    """A token cannot be two words: it would never match a header."""
    (directory / "t").write_text("two words\n")
    source = str(directory / "rproxy.toml")
    [problem] = errors('[admin]\nlisten = "tcp:9901"\ntoken_file = "t"\n', source)
    assert problem.startswith(f"{source}: admin.token_file: ")
    assert "one word" in problem


@pytest.mark.parametrize(
    "listen", ["tcp:9901", "tcp:9901:interface=0.0.0.0", "tcp6:9901:interface=\\:\\:"]
)
def test_public_listener_without_token_is_refused(listen: str) -> None:
    """
    A listener reachable from other hosts with no token file is refused,
    with what to do about it.
    """
    toml_listen = listen.replace("\\", "\\\\")
    [problem] = errors(f'[admin]\nlisten = "{toml_listen}"\n')
    assert problem.startswith(f"c.toml: admin.listen: {listen!r} is reachable")
    assert "token_file" in problem


def test_listen_is_required_and_checked() -> None:
    """C{listen} must be there and be an endpoint; unknown keys are named."""
    assert errors("[admin]\n") == ["c.toml: admin.listen: missing required key"]
    [bad] = errors('[admin]\nlisten = "bogus:1"\n')
    assert bad.startswith("c.toml: admin.listen: invalid endpoint 'bogus:1'")
    [unknown] = errors('[admin]\nlisten = "unix:/run/a.sock"\ntoken = "x"\n')
    assert unknown.startswith("c.toml: admin.token: unknown key")


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("tcp:9901:interface=127.0.0.1", True),
        ("tcp:interface=127.0.0.2:port=9901", True),
        ("tcp6:9901:interface=\\:\\:1", True),
        ("unix:/run/rproxy-admin.sock", True),
        ("tcp:9901", False),
        ("tcp:9901:interface=10.0.0.1", False),
        ("tcp:9901:interface=localhost", False),
        ("systemd:domain=INET:index=0", False),
    ],
)
def test_is_loopback_endpoint(listen: str, loopback: bool) -> None:
    """Only loopback addresses and Unix sockets count as local."""
    assert is_loopback_endpoint(listen) is loopback


def test_whole_file_with_admin_and_token_file_loads(directory: Path) -> None:
    """A whole file with [admin] and a token file loads."""
    (directory / "admin.token").write_text("t0ken\n")
    path = directory / "rproxy.toml"
    path.write_text(BASE + '[admin]\nlisten = "tcp:9901"\ntoken_file = "admin.token"\n')
    config = load_config(path)
    assert config.admin is not None
    assert config.admin.token == "t0ken"
    assert os.path.isabs(config.admin.token_file or "")
