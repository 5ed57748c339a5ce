"""Reading the server name from the first bytes of a TLS connection: the
ClientHello, parsed without I/O and without decrypting anything.

A client opens TLS with handshake records (content type 22) that carry its
ClientHello, one handshake message (type 1) that may be split over several
records.  L{read_server_name} takes the bytes received so far and says
whether more are needed, what the server name (SNI) is, or that the bytes are
not a ClientHello at all (L{ClientHelloError}).  It never raises anything
else, whatever the bytes.
"""

from __future__ import annotations

from attrs import frozen

from rproxy.proxyprotocol.preface import NeedMore

__all__ = [
    "MAX_CLIENT_HELLO",
    "ClientHello",
    "ClientHelloError",
    "NeedMore",
    "read_server_name",
]

#: the most bytes (records with their headers) a ClientHello may take.
MAX_CLIENT_HELLO = 65536

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
#: the largest plaintext record (RFC 8446, section 5.1).
_MAX_RECORD = 1 << 14


class ClientHelloError(ValueError):
    """
    The bytes are not the start of a TLS ClientHello (another protocol, an
    SSLv2-style hello, a malformed message) or it would be too large.
    """


@frozen
class ClientHello:
    """
    A complete ClientHello.

    @ivar server_name: the host name the client asked for (lowercase,
        without a trailing dot), or None if it sent none.
    """

    server_name: str | None


def read_server_name(
    data: bytes | bytearray, limit: int = MAX_CLIENT_HELLO
) -> ClientHello | NeedMore:
    """
    Read the ClientHello at the start of C{data}, the bytes a client sent so
    far.  Bytes after the ClientHello are ignored.

    @param limit: the most bytes the ClientHello's records may take.
    @raise ClientHelloError: if C{data} does not start a ClientHello, or one
        that fits in C{limit} bytes.
    """
    view = memoryview(data)
    message = bytearray()
    #: the whole handshake message's size, once its header has arrived.
    wanted: int | None = None
    offset = 0
    while wanted is None or len(message) < wanted:
        header = view[offset : offset + _RECORD_HEADER]
        _check_record_header(header, first=offset == 0)
        if len(header) < _RECORD_HEADER:
            # Each record the rest needs has a header, this one in part here.
            rest = (wanted or _HANDSHAKE_HEADER) - len(message)
            headers = _RECORD_HEADER * _records(rest) - len(header)
            return _need(len(data) + headers + rest, limit)
        length = int.from_bytes(header[3:5], "big")
        if length == 0 or length > _MAX_RECORD:
            raise ClientHelloError(f"malformed ClientHello: a record of {length} bytes")
        start = offset + _RECORD_HEADER
        fragment = view[start : start + length]
        message += fragment
        if wanted is None and len(message) >= _HANDSHAKE_HEADER:
            if message[0] != _CLIENT_HELLO:
                raise ClientHelloError(
                    f"not TLS: handshake message type {message[0]}, not a ClientHello"
                )
            wanted = _HANDSHAKE_HEADER + int.from_bytes(message[1:4], "big")
        rest = (wanted or _HANDSHAKE_HEADER) - len(message)
        if len(fragment) < length and rest > 0:
            # What this record still holds comes without a header.
            beyond = max(0, rest - (length - len(fragment)))
            return _need(len(data) + rest + _RECORD_HEADER * _records(beyond), limit)
        offset = start + length
    if offset > limit:
        raise ClientHelloError(f"ClientHello larger than {limit} bytes")
    body = memoryview(message)[_HANDSHAKE_HEADER:wanted]
    return ClientHello(_parse_client_hello(body))


def _records(count: int) -> int:
    """
    The fewest records that carry C{count} bytes.
    """
    return -(-count // _MAX_RECORD)


def _check_record_header(header: memoryview, *, first: bool) -> None:
    """
    Refuse, from as few bytes as have come, a record that is not a TLS
    handshake record.
    """
    if len(header) >= 1 and header[0] != _HANDSHAKE:
        what = "not TLS" if first else "malformed ClientHello"
        raise ClientHelloError(f"{what}: record type {header[0]}, not a handshake")
    if len(header) >= 2 and header[1] != 3:
        raise ClientHelloError(f"not TLS: record version major {header[1]}, not 3")


def _need(at_least: int, limit: int) -> NeedMore:
    """
    Ask for C{at_least} bytes in all, unless the ClientHello cannot fit in
    C{limit}.
    """
    if at_least > limit:
        raise ClientHelloError(f"ClientHello larger than {limit} bytes")
    return NeedMore(at_least)


class _Reader:
    """
    Reads fields from a ClientHello body; running short is malformed.
    """

    def __init__(self, data: memoryview):
        self.data = data
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int, what: str) -> memoryview:
        if count > self.left():
            raise ClientHelloError(f"malformed ClientHello: {what} runs past its end")
        part = self.data[self.offset : self.offset + count]
        self.offset += count
        return part

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str) -> memoryview:
        return self.take(self.number(length_size, f"{what} length"), what)


def _parse_client_hello(body: memoryview) -> str | None:
    """
    The server name in the body of a ClientHello message, or None.
    """
    hello = _Reader(body)
    hello.take(2 + 32, "version and random")
    if len(hello.vector(1, "session id")) > 32:
        raise ClientHelloError("malformed ClientHello: session id over 32 bytes")
    suites = hello.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise ClientHelloError(
            f"malformed ClientHello: {len(suites)} cipher suite bytes"
        )
    if not hello.vector(1, "compression methods"):
        raise ClientHelloError("malformed ClientHello: no compression method")
    if not hello.left():
        return None  # no extensions at all
    extensions = _Reader(hello.vector(2, "extensions"))
    if hello.left():
        raise ClientHelloError("malformed ClientHello: bytes after the extensions")
    seen = set()
    server_name = None
    while extensions.left():
        kind = extensions.number(2, "extension type")
        content = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise ClientHelloError(f"malformed ClientHello: extension {kind} twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _host_name(content)
    return server_name


def _host_name(content: memoryview) -> str | None:
    """
    The host name in a server_name extension (RFC 6066, section 3).
    """
    extension = _Reader(content)
    names = _Reader(extension.vector(2, "server name list"))
    if extension.left():
        raise ClientHelloError("malformed ClientHello: bytes after the server names")
    found = None
    while names.left():
        kind = names.number(1, "server name type")
        name = names.vector(2, "server name")
        if kind == _HOST_NAME and found is None:
            found = bytes(name)
    if found is None:
        return None
    try:
        text = found.decode("ascii")
    except UnicodeDecodeError:
        raise ClientHelloError("malformed ClientHello: a non-ASCII host name") from None
    text = text.lower().removesuffix(".")
    if not text:
        raise ClientHelloError("malformed ClientHello: an empty host name")
    return text
