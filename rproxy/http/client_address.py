"""The address of the client an HTTP request is from: the connection's peer
(after a PROXY header, the address it announced), or, when that peer is a
trusted proxy (the listener's C{trusted_proxies}), the nearest address in
C{X-Forwarded-For} that is not one.

C{X-Forwarded-For} is read from the right, as nginx's C{real_ip_recursive}
does: each trusted address is a proxy that added the address before it, so
the first untrusted one from the right is the client; what is left of it
anyone could have written.  A value that is no IP address stops the walk
at the address found so far.  Pure: L{forwarded_client} takes the peer, the
headers and the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rproxy.admission.networks import address_bits
from rproxy.http.headers import ForwardingPolicy

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["client_address", "forwarded_client"]

_NOTE = "client_address"


def _host(item: bytes) -> str | None:
    """
    The IP address in one C{X-Forwarded-For} item (C{"[::1]:80"} and
    C{"10.0.0.1:80"} as well), or None.
    """
    try:
        text = item.strip(b" \t").decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text if address_bits(text) is not None else None


def forwarded_client(
    peer: str, headers: Sequence[tuple[bytes, bytes]], policy: ForwardingPolicy
) -> str:
    """
    The client of a request from C{peer} with C{headers} (see the module
    docstring).
    """
    if not policy.trusted or not policy.is_trusted(peer):
        return peer
    values = [value for name, value in headers if name.lower() == b"x-forwarded-for"]
    if not values:
        return peer
    client = peer
    for item in reversed(b",".join(values).split(b",")):
        host = _host(item)
        if host is None:
            break
        client = host
        if not policy.is_trusted(host):
            break
    return client


def client_address(exchange: Exchange) -> str:
    """
    The client of C{exchange}'s request (worked out once per exchange and
    kept in its C{notes}).
    """
    notes = exchange.notes
    found: str | None = notes.get(_NOTE)
    if found is None:
        request = exchange.request
        headers = request.headers if request is not None else ()
        found = notes[_NOTE] = forwarded_client(
            exchange.client, headers, exchange.settings.policy
        )
    return found
