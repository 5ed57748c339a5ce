"""Compiled conditions: what a request looks like to the rules
(L{RequestView}, each part worked out once and only when a rule asks) and
the tests built from L{Condition}s (L{compile_condition}).

Regular expressions run in RE2 (C{google-re2}), whose matching time is
linear in the text whatever the pattern, so no rule can be made into a
ReDoS.  They match bytes in Latin-1 mode: each byte is one character, so an
invalid UTF-8 byte cannot make C{.} stop matching; non-ASCII text in a
pattern matches its UTF-8 bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
from twisted.internet.interfaces import INegotiated

from rproxy.http.filters.rules._model import Condition
from rproxy.http.framing import RequestHead
from rproxy.http.paths import decode_query, normalise_path, split_target

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "Check",
    "NetworkSet",
    "RequestView",
    "client_address",
    "compile_condition",
    "compile_list",
    "compile_regex",
    "read_list",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: one compiled condition.
Check = Callable[["RequestView"], bool]
#: one compiled comparison of a subject's bytes.
Compare = Callable[[bytes], bool]

_OPTIONS = re2.Options()
_OPTIONS.encoding = re2.Options.Encoding.LATIN1
_OPTIONS.never_capture = True  # only whether it matches is asked
_OPTIONS.log_errors = False  # a bad pattern is a config error, not stderr noise


def compile_regex(pattern: str) -> Compare:
    """
    Whether a RE2 C{pattern} occurs in a text (anchor it with C{^} and
    C{$} to match the whole).

    @raise ValueError: saying what is wrong with C{pattern}.
    """
    try:
        compiled = re2.compile(pattern.encode("utf-8"), _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "not a pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regex {pattern!r}: {reason}") from None
    search = compiled.search
    empty = search(b"") is not None

    def found(text: bytes) -> bool:
        return search(text) is not None if text else empty

    return found


def compile_list(values: Iterable[str]) -> Compare:
    """
    Whether a text contains any of C{values}, ignoring ASCII case: one RE2
    alternation (a list of hundreds costs one pass over the text).
    """
    escaped = [re2.escape(value.encode("utf-8")) for value in values]
    if not escaped:
        return lambda text: False
    try:
        compiled = re2.compile(b"(?i)(?:" + b"|".join(escaped) + b")", _OPTIONS)
    except re2.error as error:  # too large for RE2's memory budget
        reason = error.args[0] if error.args else "cannot be compiled"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"the list cannot be compiled: {reason}") from None
    search = compiled.search
    return lambda text: search(text) is not None


def read_list(path: str) -> tuple[str, ...]:
    """
    The entries of a list file: one per line, stripped, blank lines and
    lines starting with C{#} left out.

    @raise ValueError: if it cannot be read or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 (byte {error.start})") from None
    stripped = (line.strip() for line in lines)
    return tuple(line for line in stripped if line and not line.startswith("#"))


class NetworkSet:
    """
    IP networks, IPv4 and IPv6, for membership tests that cost one set
    lookup per prefix length in use, however many networks there are.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in networks:
            network = ipaddress.ip_network(text, strict=False)
            bits = network.max_prefixlen
            shift = bits - network.prefixlen
            keys = tables[network.version].setdefault(shift, set())
            keys.add(int(network.network_address) >> shift)
        self._tables = {
            version: tuple((shift, frozenset(keys)) for shift, keys in table.items())
            for version, table in tables.items()
        }

    def __contains__(self, address: Address) -> bool:
        value = int(address)
        return any(
            value >> shift in keys for shift, keys in self._tables[address.version]
        )


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
    """

    __slots__ = (
        "_cookies",
        "_fields",
        "_path",
        "_query",
        "_sni",
        "_target",
        "exchange",
        "head",
    )

    def __init__(self, exchange: Exchange, head: RequestHead) -> None:
        self.exchange = exchange
        self.head = head
        self._target: tuple[bytes, bytes] | None = None
        self._path: tuple[bytes, bool] | None = None
        self._query: bytes | None = None
        self._fields: dict[bytes, list[bytes]] | None = None
        self._cookies: dict[bytes, list[bytes]] | None = None
        self._sni: bytes | None = None

    def _split(self) -> tuple[bytes, bytes]:
        if self._target is None:
            self._target = split_target(self.head.target)
        return self._target

    def _normalised(self) -> tuple[bytes, bool]:
        if self._path is None:
            self._path = normalise_path(self._split()[0])
        return self._path

    @property
    def path(self) -> bytes:
        """The normalised path (L{rproxy.http.paths.normalise_path})."""
        return self._normalised()[0]

    @property
    def traversal(self) -> bool:
        """Whether the decoded path had dot segments."""
        return self._normalised()[1]

    @property
    def query(self) -> bytes:
        """The query, decoded once (L{rproxy.http.paths.decode_query})."""
        if self._query is None:
            self._query = decode_query(self._split()[1])
        return self._query

    @property
    def method(self) -> bytes:
        return self.head.method

    @property
    def sni(self) -> bytes:
        if self._sni is None:
            self._sni = server_name(self.exchange)
        return self._sni

    @property
    def client(self) -> Address | None:
        return client_address(self.exchange.client)

    @property
    def header_bytes(self) -> int:
        """The size of the header fields: name, value and 4 (C{": "} and
        CRLF) for each."""
        return sum(len(name) + len(value) + 4 for name, value in self.head.headers)

    def fields(self, name: bytes) -> list[bytes]:
        """The values of the fields called C{name} (lowercase)."""
        if self._fields is None:
            self._fields = {}
            for field_name, value in self.head.headers:
                self._fields.setdefault(field_name.lower(), []).append(value)
        return self._fields.get(name, [])

    def cookies(self, name: bytes) -> list[bytes]:
        """The values of the cookies called C{name} (case matters)."""
        if self._cookies is None:
            self._cookies = {}
            for header in self.fields(b"cookie"):
                for pair in header.split(b";"):
                    key, equals, value = pair.strip().partition(b"=")
                    if equals:
                        self._cookies.setdefault(key, []).append(value)
        return self._cookies.get(name, [])


def _compare(condition: Condition) -> Compare:
    operator = condition.operator
    values = [value.encode("utf-8") for value in condition.values]
    if operator == "regex":
        tests = [compile_regex(pattern) for pattern in condition.values]
        if len(tests) == 1:
            return tests[0]
        return lambda text: any(test(text) for test in tests)
    if operator == "list":
        return compile_list(condition.values)
    fold = condition.ignore_case
    if fold:
        values = [value.lower() for value in values]
    if operator == "equals":
        members = frozenset(values)
        if fold:
            return lambda text: text.lower() in members
        return members.__contains__
    if operator == "prefix":
        prefixes = tuple(values)
        if fold:
            return lambda text: text.lower().startswith(prefixes)
        return lambda text: text.startswith(prefixes)
    if operator == "contains":
        if fold:
            return lambda text: any(value in text.lower() for value in values)
        if len(values) == 1:
            (one,) = values
            return lambda text: one in text
        return lambda text: any(value in text for value in values)
    raise ValueError(f"unknown operator {operator!r}")


def _text_check(subject: str, compare: Compare) -> Check:
    get = _GETTERS[subject]
    return lambda view: compare(get(view))


_GETTERS: dict[str, Callable[[RequestView], bytes]] = {
    "method": lambda view: view.head.method,
    "path": lambda view: view.path,
    "query": lambda view: view.query,
    "sni": lambda view: view.sni,
}


def compile_condition(condition: Condition) -> Check:
    """
    The test C{condition} describes (a body-size condition is not one: the
    rule set counts bodies itself).

    @raise ValueError: for a bad regex or network, saying which.
    """
    subject, operator = condition.subject, condition.operator
    if subject in _GETTERS:
        return _text_check(subject, _compare(condition))
    if subject in ("header", "cookie"):
        assert condition.name is not None
        name = condition.name.encode("ascii")
        if subject == "header":
            name = name.lower()
        values_of = RequestView.fields if subject == "header" else RequestView.cookies
        if operator == "present":
            flag = condition.flag
            return lambda view: bool(values_of(view, name)) is flag
        compare = _compare(condition)
        return lambda view: any(compare(value) for value in values_of(view, name))
    if subject == "client":
        networks = NetworkSet(condition.values)

        def inside(view: RequestView) -> bool:
            address = view.client
            return address is not None and address in networks

        return inside
    if subject == "traversal":
        flag = condition.flag
        return lambda view: view.traversal is flag
    if subject == "header_count":
        limit = condition.limit
        return lambda view: len(view.head.headers) > limit
    if subject == "header_bytes":
        limit = condition.limit
        return lambda view: view.header_bytes > limit
    raise ValueError(f"no test for {subject!r}")
