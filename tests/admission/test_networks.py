"""The address lists and the per-client key: a table of addresses against
IPv4 and IPv6 networks, IPv4-mapped addresses and networks, the most
specific network deciding, and what is no IP address."""

from __future__ import annotations

import ipaddress

import pytest

from rproxy.admission.networks import AddressList, address_bits, canonical, client_key


def networks(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(text, strict=False) for text in texts]


MIXED = AddressList(
    allow=networks("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.9.9.9/32"),
    deny=networks(
        "10.1.0.0/16", "2001:db8:bad::/48", "10.9.0.0/16", "::ffff:10.2.0.0/112"
    ),
)


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("10.0.0.1", None),  # in the allow list
        ("10.255.255.255", None),
        ("10.1.2.3", "deny"),  # a deny /16 inside the allowed /8
        ("10.9.9.9", None),  # an allowed /32 inside a denied /16
        ("10.9.9.8", "deny"),
        ("10.2.3.4", "deny"),  # denied as ::ffff:10.2.0.0/112, an IPv4 /16
        ("192.0.2.7", None),
        ("192.0.2.8", "allow"),  # in no list, and there is an allow list
        ("11.0.0.1", "allow"),
        ("::ffff:10.0.0.1", None),  # IPv4-mapped: checked as 10.0.0.1
        ("::ffff:10.1.0.1", "deny"),
        ("::ffff:192.0.2.8", "allow"),
        ("2001:db8::1", None),
        ("2001:DB8:0:0:0:0:0:1", None),  # any spelling
        ("2001:db8:bad::1", "deny"),
        ("2001:db8:bad:ffff:ffff:ffff:ffff:ffff", "deny"),
        ("2001:db9::1", "allow"),
        ("fe80::1%eth0", "allow"),  # the zone is ignored
        ("::1", "allow"),
        ("", None),  # no IP address (a unix socket's peer): let in
        ("not-an-address", None),
        ("10.0.0", None),
        ("10.0.0.256", None),
    ],
)
def test_the_most_specific_network_decides(host: str, refusal: str | None) -> None:
    """Each address gets the verdict of the longest prefix holding it."""
    assert MIXED.refusal(host) == refusal


def test_without_an_allow_list_only_the_deny_list_refuses() -> None:
    """With a deny list alone, an address in no list is let in."""
    lists = AddressList(deny=networks("203.0.113.0/24", "2001:db8::/64"))
    assert lists.refusal("203.0.113.9") == "deny"
    assert lists.refusal("203.0.114.9") is None
    assert lists.refusal("2001:db8::5") == "deny"
    assert lists.refusal("2001:db8:0:1::5") is None
    assert len(lists) == 2


def test_a_network_in_both_lists_denies() -> None:
    """The same network allowed and denied is denied."""
    lists = AddressList(allow=networks("192.0.2.0/24"), deny=networks("192.0.2.0/24"))
    assert lists.refusal("192.0.2.1") == "deny"


def test_the_whole_address_space_as_one_network() -> None:
    """0.0.0.0/0 and ::/0 hold every address of their family."""
    lists = AddressList(deny=networks("0.0.0.0/0"))
    assert lists.refusal("1.2.3.4") == "deny"
    assert lists.refusal("::ffff:1.2.3.4") == "deny"
    assert lists.refusal("2001:db8::1") is None
    assert AddressList(deny=networks("::/0")).refusal("2001:db8::1") == "deny"


def test_an_empty_list_refuses_nothing() -> None:
    """No entries: every address is let in, and the list is falsy."""
    lists = AddressList()
    assert not lists
    assert lists.refusal("10.0.0.1") is None


@pytest.mark.parametrize(
    ("text", "canonical_text"),
    [
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:192.0.2.7/128", "192.0.2.7/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::ffff:0:0/95", "::fffe:0:0/95"),  # wider than the mapped range
        ("2001:db8::/32", "2001:db8::/32"),
        ("10.0.0.0/8", "10.0.0.0/8"),
    ],
)
def test_mapped_networks_are_ipv4_networks(text: str, canonical_text: str) -> None:
    """A network inside ::ffff:0:0/96 is the IPv4 network it maps."""
    (network,) = networks(text)
    assert str(canonical(network)) == canonical_text


@pytest.mark.parametrize(
    ("host", "bits"),
    [
        ("192.0.2.1", (32, 0xC0000201)),
        ("::ffff:192.0.2.1", (32, 0xC0000201)),
        ("::1", (128, 1)),
        ("example.com", None),
        ("", None),
    ],
)
def test_address_bits(host: str, bits: tuple[int, int] | None) -> None:
    """An address is its family's width and its number."""
    assert address_bits(host) == bits


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("", ""),
        ("/tmp/socket", "/tmp/socket"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_64(host: str, key: str) -> None:
    """IPv4 clients count as themselves, IPv6 ones by their /64."""
    assert client_key(host) == key
