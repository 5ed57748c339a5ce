"""What a request looks like to the rules: L{RequestView}, each part (the
normalised path, the decoded query, a header's values, the cookies, the TLS
server name, the client address) worked out once per request and only when
a rule asks for it.  The normalised forms of recent short paths and
queries are remembered (as the pattern banks remember their answers)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import INegotiated

from rproxy.http.client_address import client_address
from rproxy.http.framing import RequestHead
from rproxy.http.paths import decode_query, normalise_path

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["MEMO_ENTRIES", "MEMO_TEXT", "RequestView", "server_name"]

#: how many texts each memo (of paths, of queries, of each pattern bank's
#: answers) remembers.
MEMO_ENTRIES = 1024
#: the longest text a memo remembers (longer ones are worked out each time).
MEMO_TEXT = 256

_normalised = lru_cache(maxsize=MEMO_ENTRIES)(normalise_path)
_decoded = lru_cache(maxsize=MEMO_ENTRIES)(decode_query)


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
        raw = target if cut < 0 else target[:cut]
        if len(raw) <= MEMO_TEXT:
            path, self._dots = _normalised(raw)
        else:
            path, self._dots = normalise_path(raw)
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
            if cut < 0:
                query = b""
            else:
                raw = target[cut + 1 :]
                query = _decoded(raw) if len(raw) <= MEMO_TEXT else decode_query(raw)
            self._query = query
        return query

    @property
    def sni(self) -> bytes:
        """The TLS server name (L{server_name})."""
        sni = self._sni
        if sni is None:
            sni = self._sni = server_name(self.exchange)
        return sni

    @property
    def client(self) -> str:
        """
        The client's address: the connection's peer (after a PROXY header,
        the address it announced), or behind a trusted proxy the nearest
        untrusted address in C{X-Forwarded-For}
        (L{rproxy.http.client_address}).
        """
        return client_address(self.exchange)

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
