"""The discover keys of a pool: what is accepted, and what is refused with
file, key and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rproxy.config import Config, ConfigError, load_config, parse_config
from rproxy.config._discovery import DiscoveryConfig

ROOT = Path(__file__).resolve().parents[2]

LISTENER = """
[[listeners]]
name = "front"
listen = "tcp:6432"
pool = "api"
"""


def parse(pool: str) -> Config:
    return parse_config(tomllib.loads(f"[pools.api]\n{pool}\n{LISTENER}"), "c.toml")


def errors(pool: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(pool)
    return info.value.errors


def test_dns_source_with_defaults() -> None:
    """dns:NAME:PORT is read with the documented defaults and no backends."""
    pool = parse('discover = "dns:api.internal:8080"').pool("api")
    assert pool.backends == ()
    assert pool.discover == DiscoveryConfig(
        kind="dns",
        name="api.internal",
        port=8080,
        resolver=None,
        min_ttl=5.0,
        max_ttl=60.0,
        hold=300.0,
        timeout=2.0,
    )
    assert pool.discover.source == "dns:api.internal:8080"


def test_srv_source_with_resolver_and_settings() -> None:
    """srv: with a resolver and every timing key set reads them all."""
    pool = parse(
        'discover = "srv:_http._tcp.api.service.consul."\n'
        'resolver = "127.0.0.1:8600"\n'
        "discover_min_ttl = 1\n"
        "discover_max_ttl = 30\n"
        "discover_hold = 0\n"
        "discover_timeout = 0.5\n"
    ).pool("api")
    assert pool.discover == DiscoveryConfig(
        kind="srv",
        name="_http._tcp.api.service.consul",
        resolver=("127.0.0.1", 8600),
        min_ttl=1.0,
        max_ttl=30.0,
        hold=0.0,
        timeout=0.5,
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_resolver_forms(value: str, parsed: tuple[str, int]) -> None:
    """A resolver may be an address alone (port 53) or IPv6 in brackets."""
    discover = (
        parse(f'discover = "dns:a.b:80"\nresolver = "{value}"').pool("api").discover
    )
    assert discover is not None and discover.resolver == parsed


def test_discover_with_backends_is_refused() -> None:
    """A pool may not both discover and list backends."""
    assert errors('discover = "dns:a.b:80"\nbackends = ["10.0.0.1:80"]') == [
        "c.toml: pools.api.backends: a pool with 'discover' takes its backends "
        "from DNS; remove 'backends' or 'discover'"
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            "consul:api",
            "must be 'dns:NAME:PORT' (A/AAAA records) or "
            "'srv:_service._proto.NAME' (SRV records), got 'consul:api'",
        ),
        (
            "dns:api.internal",
            "must be 'dns:NAME:PORT' (A/AAAA records) or "
            "'srv:_service._proto.NAME' (SRV records), got 'dns:api.internal': "
            "the port is missing",
        ),
        ("dns:api.internal:0", "port must be 1-65535, got '0'"),
        ("dns:bad name:80", "'bad name' is not a DNS name"),
        (
            "srv:api.service.consul",
            "an SRV name starts with _service._proto (as "
            "in '_http._tcp.api.service.consul'), got 'api.service.consul'",
        ),
    ],
)
def test_bad_discover_string_is_refused(value: str, problem: str) -> None:
    """A discover string that cannot be used is refused with the reason."""
    assert errors(f'discover = "{value}"') == [f"c.toml: pools.api.discover: {problem}"]


def test_resolver_must_be_an_address() -> None:
    """A resolver given by name is refused: asking for it needs a resolver."""
    (problem,) = errors('discover = "dns:a.b:80"\nresolver = "dns.local:53"')
    assert problem.startswith("c.toml: pools.api.resolver: must be a DNS server's")
    assert "an IP address" in problem


def test_floor_above_ceiling_is_refused() -> None:
    """discover_min_ttl above discover_max_ttl is refused."""
    assert errors(
        'discover = "dns:a.b:80"\ndiscover_min_ttl = 90\ndiscover_max_ttl = 30'
    ) == [
        "c.toml: pools.api.discover_min_ttl: must not be above "
        "discover_max_ttl (30), got 90"
    ]


def test_discovery_keys_need_discover() -> None:
    """resolver and the discover_* keys are refused on a pool of backends."""
    assert errors(
        'backends = ["10.0.0.1:80"]\nresolver = "127.0.0.1"\ndiscover_hold = 5'
    ) == [
        "c.toml: pools.api.resolver: only applies to a pool with 'discover'",
        "c.toml: pools.api.discover_hold: only applies to a pool with 'discover'",
    ]


def test_a_pool_still_needs_backends_or_discover() -> None:
    """A pool with neither backends nor discover is still refused."""
    (problem,) = errors('balance = "round_robin"')
    assert "pools.api.backends: missing" in problem


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "discovery").glob("*.toml")), ids=str
)
def test_shipped_examples_load(path: Path) -> None:
    """Every example under examples/discovery/ loads, with discovering pools."""
    config = load_config(path)
    assert any(pool.discover is not None for pool in config.pools)


def test_examples_exist() -> None:
    """The Consul and Kubernetes examples are shipped."""
    names = {p.name for p in (ROOT / "examples" / "discovery").glob("*.toml")}
    assert {"consul.toml", "kubernetes.toml"} <= names
