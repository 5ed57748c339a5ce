"""Client addresses against lists of networks: L{AddressList}, the allow and
deny lists of a listener or a route, answered in one dictionary lookup per
distinct prefix length; and L{client_key}, the address a client is counted
under (an IPv6 client by its /64).

Addresses are parsed with C{inet_pton} (a few hundred nanoseconds), networks
once, with the stdlib's C{ipaddress}, when the list is built.  An IPv4-mapped
IPv6 address (C{::ffff:10.0.0.1}, as a dual-stack socket reports an IPv4
client) is the IPv4 address it maps, and so is a network inside
C{::ffff:0:0/96}.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

__all__ = ["AddressList", "Network", "address_bits", "canonical", "client_key"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_MAPPED = bytes(10) + b"\xff\xff"
_V4_MAPPED_NETWORK = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_BITS = 128
_V4_BITS = 32


def address_bits(host: str) -> tuple[int, int] | None:
    """
    C{(32, value)} for an IPv4 address (or an IPv4-mapped IPv6 one),
    C{(128, value)} for an IPv6 address, None for anything else (a name, an
    empty string).  A zone (C{fe80::1%eth0}) is ignored.
    """
    try:
        if ":" not in host:
            return _V4_BITS, int.from_bytes(inet_pton(AF_INET, host), "big")
        packed = inet_pton(AF_INET6, host.partition("%")[0])
    except (OSError, ValueError):
        return None
    if packed[:12] == _V4_MAPPED:
        return _V4_BITS, int.from_bytes(packed[12:], "big")
    return _V6_BITS, int.from_bytes(packed, "big")


def canonical(network: Network) -> Network:
    """
    C{network}, or the IPv4 network it maps if it lies in C{::ffff:0:0/96}.
    """
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.subnet_of(_V4_MAPPED_NETWORK)
    ):
        value = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((value, network.prefixlen - 96))
    return network


def client_key(host: str) -> str:
    """
    What a client at C{host} is counted under for per-address limits: an
    IPv4 address as it is, an IPv6 one by its /64 (C{"2001:db8:1:2::/64"}:
    one host is often given a whole /64), an IPv4-mapped one as the IPv4
    address; anything else (no IP address) as it is.
    """
    if ":" not in host:
        return host
    parsed = address_bits(host)
    if parsed is None:
        return host
    bits, value = parsed
    if bits == _V4_BITS:
        return inet_ntop(AF_INET, value.to_bytes(4, "big"))
    prefix = (value >> 64 << 64).to_bytes(16, "big")
    return inet_ntop(AF_INET6, prefix) + "/64"


_Tables = tuple[tuple[int, dict[int, bool]], ...]


def _tables(entries: dict[int, dict[int, bool]], bits: int) -> _Tables:
    # Longest prefix first: the first table holding the address decides.
    return tuple(
        (bits - length, entries[length]) for length in sorted(entries, reverse=True)
    )


class AddressList:
    """
    An allow list and a deny list of networks (IPv4 and IPv6).

    The most specific network holding an address decides (its longest
    prefix): with C{deny = ["10.0.0.0/8"]} and C{allow = ["10.1.2.3"]},
    10.1.2.3 is let in and the rest of 10/8 is not.  A network in both
    lists denies.  An address in neither is let in when the allow list is
    empty, refused when it is not.  Something that is no IP address (a unix
    socket's peer) is let in: the lists are about IP clients.

    Each list is kept as one set of network numbers per prefix length, so a
    check costs one shift and one dictionary lookup per distinct prefix
    length in the lists (at most 33 for IPv4, 129 for IPv6), whatever
    their size.
    """

    def __init__(
        self, allow: Iterable[Network] = (), deny: Iterable[Network] = ()
    ) -> None:
        by_bits: dict[int, dict[int, dict[int, bool]]] = {_V4_BITS: {}, _V6_BITS: {}}
        self.allow = tuple(canonical(network) for network in allow)
        self.deny = tuple(canonical(network) for network in deny)
        for verdict, networks in ((True, self.allow), (False, self.deny)):
            for network in networks:
                bits = network.max_prefixlen
                table = by_bits[bits].setdefault(network.prefixlen, {})
                number = int(network.network_address) >> (bits - network.prefixlen)
                # Deny is added last: a network in both lists denies.
                table[number] = verdict
        self._v4 = _tables(by_bits[_V4_BITS], _V4_BITS)
        self._v6 = _tables(by_bits[_V6_BITS], _V6_BITS)
        self._allow_only = bool(self.allow)

    def __len__(self) -> int:
        return len(self.allow) + len(self.deny)

    def refusal(self, host: str) -> str | None:
        """
        None if a client at C{host} may come in; otherwise which list
        refuses it: C{"deny"} (a deny entry is the most specific match) or
        C{"allow"} (the allow list does not hold it).
        """
        parsed = address_bits(host)
        if parsed is None:
            return None
        bits, value = parsed
        for shift, table in self._v4 if bits == _V4_BITS else self._v6:
            verdict = table.get(value >> shift)
            if verdict is not None:
                return None if verdict else "deny"
        return "allow" if self._allow_only else None
