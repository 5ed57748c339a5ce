"""A listener's connection limits and address lists, and a route's lists, in
the config: rates, inline lists and list files relative to the file, what
they become, and each mistake refused with its file, key and line."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from rproxy.config import Config, ConfigError, parse_config
from rproxy.config._admission import AddressListsConfig, AdmissionConfig, rate
from rproxy.http.filters.access import ClientAccess
from rproxy.service._admission import admission_for, routes_with_access

POOL = """
[pools.web]
backends = ["127.0.0.1:8001"]
"""

TCP = (
    POOL
    + """
[[listeners]]
name = "front"
listen = "tcp:9000"
pool = "web"
"""
)

HTTP = (
    POOL
    + """
[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "web"
"""
)


def parse(text: str, source: str = "/etc/rproxy/c.toml") -> Config:
    return parse_config(tomllib.loads(text), source)


def errors(text: str, source: str = "/etc/rproxy/c.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return info.value.errors


def nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


def test_listener_limits_and_lists() -> None:
    """Every key read into the listener's admission settings."""
    (listener,) = parse(
        TCP
        + """
max_connections = 10000
max_connections_per_ip = 100
accept_rate_per_ip = "50/s"
accept_burst_per_ip = 80
allow = ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.0.2.0/120"]
deny = ["10.1.2.3"]
"""
    ).listeners
    assert listener.admission == AdmissionConfig(
        max_connections=10000,
        max_connections_per_ip=100,
        accept_rate_per_ip=(50.0, 1.0),
        accept_burst_per_ip=80,
        addresses=AddressListsConfig(
            allow=nets("10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"),
            deny=nets("10.1.2.3/32"),
        ),
    )
    admission = admission_for(listener)
    assert admission is not None and admission.rate is not None
    assert (admission.rate.interval, admission.rate.burst) == (0.02, 80)
    assert admission.max_connections == 10000
    assert admission.addresses is not None
    assert admission.addresses.refusal("10.1.2.3") == "deny"


def test_host_bits_are_masked() -> None:
    """An entry with host bits set means its network."""
    (listener,) = parse(TCP + 'deny = ["10.0.0.1/8", "2001:db8::1/32"]\n').listeners
    assert listener.admission.addresses.deny == nets("10.0.0.0/8", "2001:db8::/32")


def test_no_keys_no_admission() -> None:
    """A listener without the keys has empty settings and no rules."""
    (listener,) = parse(HTTP).listeners
    assert not listener.admission
    assert admission_for(listener) is None


def test_the_burst_defaults_to_the_rate_count() -> None:
    """Without accept_burst_per_ip, the burst is the rate's count."""
    (listener,) = parse(TCP + 'accept_rate_per_ip = "600/m"\n').listeners
    assert listener.admission.accept_rate_per_ip == (600.0, 60.0)
    assert listener.admission.burst == 600


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("50/s", (50.0, 1.0)),
        ("0.5/s", (0.5, 1.0)),
        (" 600 / m ", (600.0, 60.0)),
        ("1000/hour", (1000.0, 3600.0)),
        ("3/minute", (3.0, 60.0)),
        ("7/sec", (7.0, 1.0)),
    ],
)
def test_rates(text: str, parsed: tuple[float, float]) -> None:
    """A rate is a count per second, minute or hour."""
    assert rate(text) == parsed


@pytest.mark.parametrize("value", ["50", "0/s", "50/d", "-1/s", 50, "fast"])
def test_bad_rates_are_refused(value: object) -> None:
    """Anything else is refused with examples."""
    with pytest.raises(ValueError, match="'50/s'"):
        rate(value)


def test_list_files_are_read_relative_to_the_config(tmp_path: Path) -> None:
    """allow_file and deny_file add their lines (comments and blank lines
    skipped) after the inline entries."""
    (tmp_path / "deny.txt").write_text(
        "# scanners\n203.0.113.0/24\n\n  2001:db8:bad::/48   # a comment\n"
    )
    (tmp_path / "allow.txt").write_text("198.51.100.7\n")
    (listener,) = parse(
        TCP
        + 'deny = ["192.0.2.1"]\ndeny_file = "deny.txt"\nallow_file = "allow.txt"\n',
        str(tmp_path / "c.toml"),
    ).listeners
    assert listener.admission.addresses == AddressListsConfig(
        allow=nets("198.51.100.7/32"),
        deny=nets("192.0.2.1/32", "203.0.113.0/24", "2001:db8:bad::/48"),
    )


def test_a_bad_line_in_a_list_file_names_the_file_and_line(tmp_path: Path) -> None:
    """Each bad line is reported with the file, the key and the line
    number; past ten, the rest are counted."""
    path = tmp_path / "deny.txt"
    path.write_text("192.0.2.0/24\nbogus\n10.0.0.0/33\n")
    source = str(tmp_path / "c.toml")
    assert errors(TCP + 'deny_file = "deny.txt"\n', source) == [
        f"{source}: listeners[0].deny_file: {path} line 2: must be an IP address "
        "or network ('10.0.0.0/8', '::1'), got 'bogus'",
        f"{source}: listeners[0].deny_file: {path} line 3: must be an IP address "
        "or network ('10.0.0.0/8', '::1'), got '10.0.0.0/33'",
    ]
    path.write_text("x\n" * 12)
    problems = errors(TCP + 'deny_file = "deny.txt"\n', source)
    assert len(problems) == 11
    assert problems[-1] == f"{source}: listeners[0].deny_file: {path}: 2 more bad lines"


def test_a_missing_list_file_is_refused(tmp_path: Path) -> None:
    """A file that cannot be read refuses the config."""
    source = str(tmp_path / "c.toml")
    [problem] = errors(TCP + 'allow_file = "nope.txt"\n', source)
    assert problem.startswith(f"{source}: listeners[0].allow_file: cannot read ")
    assert "nope.txt" in problem


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            'allow = ["10.0.0.0/8", "ten"]',
            "listeners[0].allow[1]: must be an IP address or network "
            "('10.0.0.0/8', '::1'), got 'ten'",
        ),
        (
            'deny = "10.0.0.0/8"',
            "listeners[0].deny: must be an array, got '10.0.0.0/8'",
        ),
        (
            "max_connections = 0",
            "listeners[0].max_connections: must be a positive integer, got 0",
        ),
        (
            "max_connections_per_ip = true",
            "listeners[0].max_connections_per_ip: must be a positive integer, got true",
        ),
        (
            "accept_burst_per_ip = 5",
            "listeners[0].accept_burst_per_ip: needs accept_rate_per_ip",
        ),
        (
            'accept_rate_per_ip = "50"',
            "listeners[0].accept_rate_per_ip: must be a rate such as '50/s', "
            "'600/m' or '1000/h', got '50'",
        ),
    ],
)
def test_listener_mistakes(extra: str, problem: str) -> None:
    """Each mistake is reported under its key."""
    assert errors(TCP + extra + "\n") == [f"/etc/rproxy/c.toml: {problem}"]


def test_route_lists_become_a_filter_first_on_the_route(tmp_path: Path) -> None:
    """A route's allow and deny keys are kept on it, and the service puts
    their filter first among its filters; other routes are untouched."""
    (tmp_path / "office.txt").write_text("192.0.2.0/24\n")
    (listener,) = parse(
        HTTP
        + """
[[listeners.routes]]
path_prefix = "/admin/"
pool = "web"
allow_file = "office.txt"
deny = ["192.0.2.13"]
[[listeners.routes]]
path_prefix = "/api/"
pool = "web"
""",
        str(tmp_path / "c.toml"),
    ).listeners
    admin, api, default = listener.routes
    assert admin.access == AddressListsConfig(
        allow=nets("192.0.2.0/24"), deny=nets("192.0.2.13/32")
    )
    assert api.access is None and default.access is None
    built = routes_with_access(listener.routes)
    [access] = built[0].filters
    assert isinstance(access, ClientAccess)
    assert access.addresses.refusal("192.0.2.13") == "deny"
    assert access.addresses.refusal("198.51.100.1") == "allow"
    assert built[1:] == listener.routes[1:]


def test_a_bad_route_list_names_the_route() -> None:
    """A bad entry of a route's list is reported under the route."""
    text = (
        HTTP + '[[listeners.routes]]\npath_prefix = "/a/"\npool = "web"\ndeny = ["x"]\n'
    )
    assert errors(text) == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].deny[0]: must be an IP "
        "address or network ('10.0.0.0/8', '::1'), got 'x'"
    ]


def test_a_changed_list_file_changes_the_config(tmp_path: Path) -> None:
    """Reading the file again with new lines gives a different listener,
    so a reload applies it."""
    path = tmp_path / "deny.txt"
    path.write_text("192.0.2.1\n")
    text, source = TCP + 'deny_file = "deny.txt"\n', str(tmp_path / "c.toml")
    before = parse(text, source).listeners[0]
    path.write_text("192.0.2.2\n")
    after = parse(text, source).listeners[0]
    assert before != after
    assert after.admission.addresses.deny == nets("192.0.2.2/32")


def test_a_routes_lists_go_before_its_cache() -> None:
    """On a route with a cache and a list, the list's filter comes first:
    a refused client is never answered from the cache."""
    from twisted.internet.testing import MemoryReactorClock

    from rproxy.http.filters.cache import CacheFilter
    from rproxy.service._build import http_settings
    from rproxy.service._caches import RunningCaches

    config = parse(
        HTTP.replace('pool = "web"\n', "", 1)
        + """
[[listeners.routes]]
pool = "web"
cache = "static"
deny = ["192.0.2.0/24"]

[caches.static]
memory = "1MiB"
"""
    )
    caches = RunningCaches(MemoryReactorClock())
    settings = http_settings(
        config, config.listeners[0], caches=caches.prepare(config.caches)
    )
    (route,) = settings.router.routes  # type: ignore[attr-defined]
    assert [type(one) for one in route.filters] == [ClientAccess, CacheFilter]
