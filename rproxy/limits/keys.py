"""What a rate limit counts requests under: L{request_key} turns a config's
C{key} (C{"client_ip"}, C{"header:NAME"}, C{"route"}, or a list of them)
into a function from an exchange to a key string.

  - C{client_ip}: the real client address (L{rproxy.http.client_address}:
    after the PROXY protocol and trusted C{X-Forwarded-For}); IPv6 addresses
    grouped by their /64, as one host usually holds a whole /64.
  - C{header:NAME}: the first value of that request field.
  - C{route}: the route the request took (its host and path prefix), so
    that one limiter on several routes counts each apart.

A combination joins its parts, so C{["client_ip", "route"]} counts each
client on each route.  A request for which every part is missing (a
header key and no such field; no client address, as for rproxy's own
background requests) is not counted, as nginx's C{limit_req} skips an
empty key.  Keys longer than L{MAX_KEY} characters are replaced by a hash
of them, so a client sending long header values cannot make each key
cost more memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from rproxy.http.client_address import client_address
from rproxy.http.messages import header

__all__ = [
    "KEY_KINDS",
    "MAX_KEY",
    "RequestKey",
    "address_group",
    "check_key_part",
    "request_key",
]

#: the kinds of key part, as the config writes them.
KEY_KINDS = ("client_ip", "header:NAME", "route")
#: the longest key kept as it is, in characters.
MAX_KEY = 64

#: what the key functions take: an L{Exchange}, typed loosely because this
#: module is compiled and a compiled function checks the class of an
#: argument typed as a compiled class (tests pass stand-ins).
Keyed = Any
RequestKey = Callable[[Keyed], "str | None"]


@lru_cache(maxsize=4096)
def address_group(address: str) -> str:
    """
    What C{client_ip} counts C{address} as: an IPv4 address as it is (also
    one mapped into IPv6), an IPv6 address as its /64 (C{"2001:db8::/64"}),
    anything else as it is.
    """
    if ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    prefix = ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64))
    return str(prefix)


def client_ip(exchange: Keyed) -> str | None:
    """
    The C{client_ip} key of C{exchange}.
    """
    peer = exchange.client
    if not peer:
        return None
    if exchange.settings.policy.trusted:
        # Worked out once per exchange, shared with the address lists and
        # forward auth.
        peer = client_address(exchange)
    return peer if ":" not in peer else address_group(peer)


def route_key(exchange: Keyed) -> str | None:
    """
    The C{route} key of C{exchange}: its route's host and path prefix.
    """
    route = exchange.route
    if route is None:
        return None
    return f"{route.host or '*'}{route.path_prefix or '/'}"


def _header_key(name: str) -> RequestKey:
    lowered = name.lower().encode("ascii")

    def header_key(exchange: Keyed) -> str | None:
        request = exchange.request
        if request is None:
            return None
        value = header(request.headers, lowered)
        return value.decode("latin-1") if value else None

    return header_key


def check_key_part(part: str) -> str:
    """
    C{part} if it is a key part (a header name lowercased).

    @raise ValueError: saying what a key part may be.
    """
    if part in ("client_ip", "route"):
        return part
    kind, colon, name = part.partition(":")
    if kind == "header" and colon and name.strip():
        name = name.strip()
        if all(33 <= ord(c) < 127 and c not in '"(),/:;<=>?@[\\]{}' for c in name):
            return f"header:{name.lower()}"
    raise ValueError(
        "must be 'client_ip', 'route' or 'header:NAME' (NAME a field name), "
        f"got {part!r}"
    )


def _part(part: str) -> RequestKey:
    if part == "client_ip":
        return client_ip
    if part == "route":
        return route_key
    return _header_key(part.partition(":")[2])


def _bounded(key: str) -> str:
    if len(key) <= MAX_KEY:
        return key
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def request_key(parts: Sequence[str]) -> RequestKey:
    """
    The function that names C{exchange}'s key for the key C{parts} (each
    checked by L{check_key_part}); it returns None for a request not
    counted.
    """
    functions = [_part(check_key_part(part)) for part in parts]
    if not functions:
        raise ValueError("a key needs at least one part")
    if len(functions) == 1:
        only = functions[0]
        if only is client_ip:
            return client_ip  # addresses are short: nothing to bound

        def one(exchange: Keyed) -> str | None:
            key = only(exchange)
            return None if key is None else _bounded(key)

        return one

    def combined(exchange: Keyed) -> str | None:
        values = [function(exchange) for function in functions]
        if all(value is None for value in values):
            return None
        return _bounded("\n".join(value or "" for value in values))

    return combined
