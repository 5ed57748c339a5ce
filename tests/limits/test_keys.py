"""Tests for what rate limits count requests under: the real client address
(behind the PROXY protocol and trusted X-Forwarded-For), IPv6 grouped by
/64, header and route keys and their combinations."""

from __future__ import annotations

from typing import Any

import pytest

from rproxy.http.client_address import forwarded_client
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.routing import Route
from rproxy.limits.keys import MAX_KEY, address_group, check_key_part, request_key

TRUSTING = ForwardingPolicy(trusted=("10.0.0.0/8", "::1"))


class _Request:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers


class _Settings:
    def __init__(self, policy: ForwardingPolicy) -> None:
        self.policy = policy


class _Exchange:
    """What a key function reads of an exchange."""

    def __init__(
        self,
        client: str = "192.0.2.7",
        headers: list[tuple[bytes, bytes]] | None = None,
        route: Route | None = None,
        policy: ForwardingPolicy = TRUSTING,
    ) -> None:
        self.client = client
        self.request = _Request(headers or [])
        self.route = route
        self.settings = _Settings(policy)
        self.notes: dict[str, Any] = {}


def key(parts: list[str], **kwargs: Any) -> str | None:
    return request_key(parts)(_Exchange(**kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::1", "::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_ip_groups_ipv6_by_64(address: str, group: str) -> None:
    """IPv4 is counted per address (also mapped into IPv6), IPv6 per /64."""
    assert address_group(address) == group


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        # An untrusted peer's forwarding headers are never believed.
        ("192.0.2.7", [b"203.0.113.9"], "192.0.2.7"),
        # A trusted proxy speaks for the rightmost address it did not trust.
        ("10.0.0.2", [b"203.0.113.9"], "203.0.113.9"),
        ("10.0.0.2", [b"198.51.100.1, 203.0.113.9, 10.0.0.5"], "203.0.113.9"),
        # Several fields are one list.
        ("10.0.0.2", [b"198.51.100.1", b"203.0.113.9"], "203.0.113.9"),
        # Only trusted addresses: the leftmost is the client.
        ("10.0.0.2", [b"10.0.0.9, 10.0.0.5"], "10.0.0.9"),
        # No header: the trusted peer is the client.
        ("10.0.0.2", [], "10.0.0.2"),
        # Garbage stops the walk at the last trusted hop.
        ("10.0.0.2", [b"203.0.113.9, unknown, 10.0.0.5"], "10.0.0.5"),
        # Ports and brackets are dropped; IPv6 counted by its /64.
        ("10.0.0.2", [b"203.0.113.9:4711"], "203.0.113.9"),
        ("::1", [b"[2001:DB8::1]:443"], "2001:db8::/64"),
    ],
)
def test_client_ip_is_behind_the_trusted_proxies(
    peer: str, xff: list[bytes], client: str
) -> None:
    """client_ip is the peer, or behind a trusted peer its X-Forwarded-For
    read from the right past the trusted addresses."""
    headers = [(b"X-Forwarded-For", value) for value in xff]
    assert key(["client_ip"], client=peer, headers=headers) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    """A listener that trusts nobody keys by the connection's peer (the
    PROXY protocol's source address already, when it accepts them)."""
    headers = [(b"x-forwarded-for", b"203.0.113.9")]
    assert forwarded_client("10.0.0.2", headers, ForwardingPolicy()) == "10.0.0.2"
    assert (
        key(
            ["client_ip"], client="10.0.0.2", headers=headers, policy=ForwardingPolicy()
        )
        == "10.0.0.2"
    )


def test_client_ip_key_uses_the_real_client() -> None:
    """Behind a trusted proxy, client_ip is the address it forwarded for,
    grouped like any other."""
    headers = [(b"X-Forwarded-For", b"2001:db8:5:6::7")]
    assert key(["client_ip"], client="10.1.1.1", headers=headers) == "2001:db8:5:6::/64"


def test_header_key_is_the_first_value_of_the_field() -> None:
    """header:NAME keys by that field's first value, whatever its case."""
    headers = [(b"X-Api-Key", b"alpha"), (b"x-api-key", b"beta")]
    assert key(["header:X-API-Key"], headers=headers) == "alpha"


def test_request_without_the_header_is_not_counted() -> None:
    """A single header key and no such field: the request is not counted."""
    assert key(["header:x-api-key"]) is None


def test_route_key_names_host_and_prefix() -> None:
    """route keys by the route's host and path prefix."""
    route = Route("web", host="api.example.com", path_prefix="/v1/")
    assert key(["route"], route=route) == "api.example.com/v1/"
    assert key(["route"], route=Route("web")) == "*/"


def test_combination_joins_its_parts() -> None:
    """A list of parts counts each combination apart; a missing part is
    empty, and a request is counted while any part is there."""
    route = Route("web", path_prefix="/v1/")
    headers = [(b"x-user", b"u1")]
    both = key(["client_ip", "header:x-user"], headers=headers, route=route)
    assert both == "192.0.2.7\nu1"
    assert key(["header:x-user", "client_ip"], route=route) == "\n192.0.2.7"
    assert key(["header:x-user", "header:x-team"]) is None


def test_long_keys_are_hashed_to_a_bounded_length() -> None:
    """A key over MAX_KEY characters is replaced by a fixed-size hash, the
    same for the same value."""
    long = [(b"x-api-key", b"k" * 5000)]
    hashed = key(["header:x-api-key"], headers=long)
    assert hashed is not None and len(hashed) <= MAX_KEY
    assert hashed == key(["header:x-api-key"], headers=long)
    assert hashed != key(["header:x-api-key"], headers=[(b"x-api-key", b"j" * 5000)])


def test_no_client_address_is_not_counted() -> None:
    """rproxy's own background requests have no client: not counted."""
    assert key(["client_ip"], client="") is None


@pytest.mark.parametrize(
    "part", ["ip", "header", "header:", "header:a b", "Route", "cookie:x"]
)
def test_unknown_key_parts_are_refused(part: str) -> None:
    """Only client_ip, route and header:NAME (a field name) are parts."""
    with pytest.raises(ValueError, match="client_ip"):
        check_key_part(part)


def test_header_part_is_lowercased() -> None:
    """Header names are compared without case."""
    assert check_key_part("header:X-Api-Key") == "header:x-api-key"
