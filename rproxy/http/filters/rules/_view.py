"""What a request looks like to the rules: L{RequestView}, each part (the
normalised path, the decoded query, a header's values, the cookies, the TLS
server name, the client address) worked out once per request and only when
a rule asks for it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import INegotiated

from rproxy.http.framing import RequestHead
from rproxy.http.paths import decode_query, normalise_path

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["Address", "NetworkSet", "RequestView", "client_address", "server_name"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkSet:
    """
    IP networks, IPv4 and IPv6, for membership tests that cost one set
    lookup per prefix length in use, however many networks there are.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in networks:
            network = ipaddress.ip_network(text, strict=False)
            shift = network.max_prefixlen - network.prefixlen
            keys = tables[network.version].setdefault(shift, set())
            keys.add(int(network.network_address) >> shift)
        self._tables = {
            version: tuple((shift, frozenset(keys)) for shift, keys in table.items())
            for version, table in tables.items()
        }

    def __contains__(self, address: Address) -> bool:
        value = int(address)
        tables = self._tables[address.version]
        return any(value >> shift in keys for shift, keys in tables)


@lru_cache(maxsize=4096)
def client_address(text: str) -> Address | None:
    """
    The client address C{text} as an address (an IPv4-mapped IPv6 address as
    its IPv4 one, a zone left out), or None if it is none (a Unix socket).
    """
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def server_name(exchange: Any) -> bytes:
    """
    The server name the client asked for in its TLS handshake (SNI),
    lowercase; empty without TLS or without SNI.
    """
    transport = getattr(exchange.codec, "transport", None)
    handle = getattr(transport, "getHandle", None)
    if handle is None or not INegotiated.providedBy(transport):
        return b""
    get = getattr(handle(), "get_servername", None)
    name = get() if get is not None else None
    return name.lower().rstrip(b".") if name else b""


class RequestView:
    """
    A request head as the rules see it; each part is worked out once, when
    a rule first asks for it.

    @ivar matched: what each pattern bank shared by several conditions found
        in this request (made on first use).
    """

    __slots__ = (
        "_cookies",
        "_dots",
        "_fields",
        "_path",
        "_query",
        "_sni",
        "exchange",
        "head",
        "matched",
    )

    def __init__(self, exchange: Exchange, head: RequestHead) -> None:
        self.exchange = exchange
        self.head = head
        self._path: bytes | None = None
        self._dots = False
        self._query: bytes | None = None
        self._fields: dict[bytes, list[bytes]] | None = None
        self._cookies: dict[bytes, list[bytes]] | None = None
        self._sni: bytes | None = None
        self.matched: dict[Any, set[int]] | None = None

    def _normalise(self) -> bytes:
        target = self.head.target
        cut = target.find(b"?")
        path, self._dots = normalise_path(target if cut < 0 else target[:cut])
        self._path = path
        return path

    @property
    def path(self) -> bytes:
        """The normalised path (L{rproxy.http.paths.normalise_path})."""
        path = self._path
        return self._normalise() if path is None else path

    @property
    def traversal(self) -> bool:
        """Whether the decoded path had dot segments."""
        if self._path is None:
            self._normalise()
        return self._dots

    @property
    def query(self) -> bytes:
        """The query, decoded once (L{rproxy.http.paths.decode_query})."""
        query = self._query
        if query is None:
            target = self.head.target
            cut = target.find(b"?")
            query = self._query = b"" if cut < 0 else decode_query(target[cut + 1 :])
        return query

    @property
    def sni(self) -> bytes:
        """The TLS server name (L{server_name})."""
        sni = self._sni
        if sni is None:
            sni = self._sni = server_name(self.exchange)
        return sni

    @property
    def client(self) -> Address | None:
        """The client's address, or None if it has none."""
        return client_address(self.exchange.client)

    @property
    def header_bytes(self) -> int:
        """The size of the header fields: name, value and 4 (C{": "} and
        CRLF) for each."""
        return sum(len(name) + len(value) + 4 for name, value in self.head.headers)

    def fields(self, name: bytes) -> list[bytes]:
        """The values of the fields called C{name} (lowercase)."""
        fields = self._fields
        if fields is None:
            fields = self._fields = {}
        found = fields.get(name)
        if found is None:
            size = len(name)
            found = fields[name] = [
                value
                for field_name, value in self.head.headers
                if len(field_name) == size and field_name.lower() == name
            ]
        return found

    def cookies(self, name: bytes) -> list[bytes]:
        """The values of the cookies called C{name} (case matters)."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = {}
            for header in self.fields(b"cookie"):
                for pair in header.split(b";"):
                    key, equals, value = pair.strip().partition(b"=")
                    if equals:
                        cookies.setdefault(key, []).append(value)
        return cookies.get(name, [])
