"""Who the client of a request really is: L{real_client}, the address
behind the proxies a listener trusts.

C{exchange.client} is the peer of the connection, already the PROXY
protocol's source address where the listener accepts PROXY headers.  When
that peer is a trusted proxy (L{ForwardingPolicy.trusted}), its
C{X-Forwarded-For} says whom it spoke for: the list is read from the right,
past every trusted address, and the first address that is not trusted is
the client (nginx's C{real_ip_recursive on}).  Entries left of it were
written by the client itself and are never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from rproxy.http.headers import ForwardingPolicy

__all__ = ["forwarded_for", "real_client"]

_OWS = b" \t"


def forwarded_for(headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """
    The addresses of every C{X-Forwarded-For} field of C{headers}, in
    order, as one list.
    """
    found: list[bytes] = []
    for name, value in headers:
        if len(name) == 15 and name.lower() == b"x-forwarded-for":
            found.extend(part.strip(_OWS) for part in value.split(b","))
    return found


def _address(entry: bytes) -> str | None:
    """
    The IP address in one X-Forwarded-For entry, normalised; None when it
    holds none (C{unknown}, garbage).  IPv6 may come bracketed, with or
    without a port; IPv4 with a port.
    """
    try:
        text = entry.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def real_client(
    peer: str, headers: Sequence[tuple[bytes, bytes]], policy: ForwardingPolicy
) -> str:
    """
    The client's address: C{peer}, or, when C{peer} is a trusted proxy, the
    rightmost C{X-Forwarded-For} address that is not trusted (the leftmost
    valid one if all are; C{peer} if there is none, or the last trusted
    address before an entry that is no address).
    """
    if not policy.trusted or not policy.is_trusted(peer):
        return peer
    client = peer
    for entry in reversed(forwarded_for(headers)):
        address = _address(entry)
        if address is None:
            break
        client = address
        if not policy.is_trusted(address):
            break
    return client
