"""Header rewriting for proxied HTTP/1.1 messages: hop-by-hop removal and the
forwarding headers (X-Forwarded-*, RFC 7239 C{Forwarded}, C{Via}, C{Host}).

Headers are sequences of C{(name, value)} byte pairs as received: names in
their original case, values already stripped, repeated fields as repeated
pairs.  Every function returns a new list and never mutates its input; the
order of the headers it keeps is the order they came in, and the headers the
proxy generates follow them, one field line each.

Rules worth knowing:

  - Headers named in C{Connection} are removed (RFC 9110 section 7.6.1),
    except L{PROTECTED}: framing (C{Content-Length}, C{Transfer-Encoding}),
    C{Host} and the forwarding headers.  Dropping framing headers on a
    client's say-so desynchronises the body (request smuggling) and dropping
    forwarding headers lets a client hide its path (Traefik CVE-2024-45410).
  - Forwarding headers from a peer outside L{ForwardingPolicy.trusted} are
    always dropped, whether or not the proxy adds its own; from a trusted peer
    they are kept, and the proxy appends its hop where the policy says so.
  - Lists the proxy appends to (C{X-Forwarded-For}, C{Forwarded}, C{Via}) are
    emitted as one combined field line, so a backend that reads only one line
    still sees the whole chain.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, cast

from attrs import Factory, field, frozen

__all__ = [
    "HOP_BY_HOP",
    "PROTECTED",
    "ForwardingPolicy",
    "connection_tokens",
    "forward_request_headers",
    "forward_response_headers",
    "strip_hop_by_hop",
]

Header = tuple[bytes, bytes]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Hop-by-hop fields, always removed (lowercase).  RFC 9110 section 7.6.1
#: plus the legacy C{Proxy-Connection} and C{Trailer} (RFC 2616 13.5.1), and
#: the proxy credentials a reverse proxy never relays to an origin.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    b"connection keep-alive proxy-connection te trailer upgrade"
    b" proxy-authenticate proxy-authorization".split()
)

#: Fields kept even when C{Connection} names them (lowercase).
PROTECTED: frozenset[bytes] = frozenset(
    b"host content-length transfer-encoding"
    b" x-forwarded-for x-forwarded-proto x-forwarded-host forwarded".split()
)

_HOP_BUT_UPGRADE = HOP_BY_HOP - {b"upgrade"}
_CACHE_SIZE = 1024
_OWS = b" \t"
# RFC 9110 tchar: what an RFC 7239 value may hold without quotes.
_TCHAR = (
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# Slots for the headers forward_request_headers collects instead of copying.
_XFF, _XFP, _XFH, _FWD, _VIA = range(5)
_COLLECTED = {
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"forwarded": _FWD,
    b"via": _VIA,
}


def _to_networks(values: Iterable[str | _Network]) -> tuple[_Network, ...]:
    # Host bits are masked, as HAProxy and nginx do: "10.0.0.1/8" is 10/8.
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


@frozen
class ForwardingPolicy:
    """How one listener forwards requests: whom to trust, what to add.

    @ivar trusted: networks whose forwarding headers are believed; built from
        strings such as C{"10.0.0.0/8"}, C{"127.0.0.1"} or C{"::1/128"}.
    @ivar x_forwarded: add C{X-Forwarded-For}, C{-Proto} and C{-Host}.
    @ivar forwarded: add an RFC 7239 C{Forwarded} element.
    @ivar via: the C{Via} element to append, e.g. C{b"1.1 rproxy"}, or C{None}.
    @ivar preserve_host: send the client's C{Host}; if false, the backend's.
    """

    # The defaults are cast to Any for mypyc: a compiled class body checks each
    # value against its inferred type, and field() would be inferred to return
    # the attribute's type (a tuple, a dict) instead of attrs' field object.
    trusted: tuple[_Network, ...] = field(default=cast(Any, ()), converter=_to_networks)
    x_forwarded: bool = True
    forwarded: bool = False
    via: bytes | None = None
    preserve_host: bool = True
    _verdicts: dict[str, bool] = field(
        default=cast(Any, Factory(dict)), init=False, eq=False, repr=False
    )

    def is_trusted(self, ip: str) -> bool:
        """Whether peer address C{ip} lies in a trusted network.

        IPv4-mapped IPv6 addresses (C{::ffff:10.0.0.1}, as a dual-stack socket
        reports them) match IPv4 networks; anything that is not an IP address
        is untrusted.  Verdicts are cached per string, up to 1024 of them.
        """
        verdicts = self._verdicts
        verdict = verdicts.get(ip)
        if verdict is None:
            verdict = self._check(ip)
            if len(verdicts) >= _CACHE_SIZE:
                del verdicts[next(iter(verdicts))]
            verdicts[ip] = verdict
        return verdict

    def _check(self, ip: str) -> bool:
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)


def _tokens(headers: Sequence[Header], names: Sequence[bytes]) -> set[bytes]:
    listed = b",".join(
        [
            pair[1]
            for lname, pair in zip(names, headers, strict=False)
            if lname == b"connection"
        ]
    )
    tokens = {token.strip(_OWS) for token in listed.lower().split(b",")}
    tokens.discard(b"")
    return tokens


def connection_tokens(headers: Sequence[Header]) -> set[bytes]:
    """The lowercased tokens of every C{Connection} field in C{headers}."""
    return _tokens(headers, [name.lower() for name, _ in headers])


def _drop_set(
    headers: Sequence[Header], names: Sequence[bytes], keep_upgrade: bool
) -> frozenset[bytes]:
    base = _HOP_BUT_UPGRADE if keep_upgrade else HOP_BY_HOP
    if b"connection" not in names:
        return base
    extra = _tokens(headers, names) - PROTECTED - base
    if keep_upgrade:
        extra.discard(b"upgrade")
    return base | extra if extra else base


def _connection_upgrade(out: list[Header], keep_upgrade: bool, seen: bool) -> None:
    if keep_upgrade and seen:
        out.append((b"Connection", b"upgrade"))


def strip_hop_by_hop(
    headers: Sequence[Header], *, keep_upgrade: bool = False
) -> list[Header]:
    """C{headers} without L{HOP_BY_HOP} fields and those C{Connection} names.

    With C{keep_upgrade} (an upgrade the proxy will pass on), C{Upgrade}
    fields are kept and, if there were any, C{Connection: upgrade} is added.
    """
    names = [name.lower() for name, _ in headers]
    drop = _drop_set(headers, names, keep_upgrade)
    out = [
        pair for lname, pair in zip(names, headers, strict=False) if lname not in drop
    ]
    _connection_upgrade(out, keep_upgrade, b"upgrade" in names)
    return out


def _quote(value: bytes) -> bytes:
    """C{value} as an RFC 7239 value: a token if it can be, else quoted."""
    if value and not value.strip(_TCHAR):
        return value
    escaped = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + escaped + b'"'


def _forwarded_element(client: bytes, scheme: bytes, host: bytes | None) -> bytes:
    # RFC 7239 section 6: IPv6 nodes are bracketed, and so must be quoted.
    node = b'"[' + client + b']"' if b":" in client else client
    element = b"for=" + node + b";proto=" + _quote(scheme)
    if host is not None:
        element += b";host=" + _quote(host)
    return element


def _first_item(values: list[bytes], default: bytes) -> bytes:
    if not values:
        return default
    return values[0].split(b",", 1)[0].strip(_OWS) or default


def forward_request_headers(
    headers: Sequence[Header],
    *,
    client_ip: str,
    scheme: bytes,
    host: bytes | None,
    policy: ForwardingPolicy,
    backend_host: bytes | None = None,
    keep_upgrade: bool = False,
) -> list[Header]:
    """The headers to send a backend for a request from C{client_ip}.

    Strips hop-by-hop fields as L{strip_hop_by_hop} does, then:

      - C{X-Forwarded-For}: the peer's incoming values if it is trusted,
        then C{client_ip}, as one line (nginx C{$proxy_add_x_forwarded_for}).
      - C{X-Forwarded-Proto} and C{-Host}: from a trusted peer, the first
        incoming item is kept (the hop nearest the user knows the original);
        otherwise C{scheme} and C{host} (the request's C{Host}; none if
        C{None}).
      - C{Forwarded}: C{for=...;proto=...;host=...} appended to a trusted
        peer's list, or alone.
      - C{Via}: C{policy.via} appended to the incoming list.
      - C{Host}: kept, or replaced by C{backend_host} in place when
        C{policy.preserve_host} is false (then C{backend_host} is required).

    Forwarding headers from an untrusted peer are dropped even when the policy
    adds none; a trusted peer's pass through untouched where it adds none.

    @raise ValueError: C{preserve_host} is false and C{backend_host} is None.
    """
    replace_host = not policy.preserve_host
    new_host = b""
    if replace_host:
        if backend_host is None:
            raise ValueError("backend_host is required when preserve_host is false")
        new_host = backend_host
    trusted = policy.is_trusted(client_ip)
    via = policy.via
    # Which collected headers pass through in place instead.
    xf_kept = trusted and not policy.x_forwarded
    passthrough = (
        xf_kept,
        xf_kept,
        xf_kept,
        trusted and not policy.forwarded,
        via is None,
    )
    names = [name.lower() for name, _ in headers]
    drop = _drop_set(headers, names, keep_upgrade)
    collected: tuple[list[bytes], ...] = ([], [], [], [], [])
    out: list[Header] = []
    append = out.append
    host_done = False
    for lname, pair in zip(names, headers, strict=False):
        if lname in drop:
            continue
        slot = _COLLECTED.get(lname)
        if slot is not None:
            if passthrough[slot]:
                append(pair)
            elif (trusted or slot == _VIA) and pair[1]:
                collected[slot].append(pair[1])
            continue
        if replace_host and lname == b"host":
            if not host_done:
                append((pair[0], new_host))
                host_done = True
            continue
        append(pair)
    if replace_host and not host_done:
        out.insert(0, (b"Host", new_host))

    client = client_ip.encode("ascii") if client_ip else b"unknown"
    if policy.x_forwarded:
        xff = collected[_XFF]
        xff.append(client)
        append((b"X-Forwarded-For", b", ".join(xff)))
        append((b"X-Forwarded-Proto", _first_item(collected[_XFP], scheme)))
        fhost = _first_item(collected[_XFH], host or b"")
        if fhost:
            append((b"X-Forwarded-Host", fhost))
    if policy.forwarded:
        fwd = collected[_FWD]
        fwd.append(_forwarded_element(client, scheme, host))
        append((b"Forwarded", b", ".join(fwd)))
    if via is not None:
        vias = collected[_VIA]
        vias.append(via)
        append((b"Via", b", ".join(vias)))
    _connection_upgrade(out, keep_upgrade, b"upgrade" in names)
    return out


@functools.lru_cache(maxsize=64)
def _lowered(names: frozenset[bytes]) -> frozenset[bytes]:
    return frozenset(name.lower() for name in names)


def forward_response_headers(
    headers: Sequence[Header],
    *,
    remove: frozenset[bytes] = frozenset(),
    via: bytes | None = None,
    keep_upgrade: bool = False,
) -> list[Header]:
    """The headers to send a client for a backend's response.

    Strips hop-by-hop fields as L{strip_hop_by_hop} does, and every field
    named in C{remove} (any case; e.g. C{frozenset({b"Server"})} hides the
    backend's software).  C{via}, if given, is appended to the incoming
    C{Via} list as one line.
    """
    names = [name.lower() for name, _ in headers]
    drop = _drop_set(headers, names, keep_upgrade)
    if remove:
        drop = drop | _lowered(remove)
    out: list[Header] = []
    append = out.append
    vias: list[bytes] = []
    for lname, pair in zip(names, headers, strict=False):
        if lname in drop:
            continue
        if via is not None and lname == b"via":
            if pair[1]:
                vias.append(pair[1])
            continue
        append(pair)
    if via is not None:
        vias.append(via)
        append((b"Via", b", ".join(vias)))
    _connection_upgrade(out, keep_upgrade, b"upgrade" in names)
    return out
