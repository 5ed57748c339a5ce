"""TLS ClientHello bytes for tests: built field by field, or made by a real
OpenSSL client (pyOpenSSL over memory BIOs, no sockets)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from OpenSSL import SSL

HANDSHAKE = 22
TLS10 = b"\x03\x01"


def vector(length_size: int, data: bytes) -> bytes:
    """C{data} preceded by its length in C{length_size} bytes."""
    return len(data).to_bytes(length_size, "big") + data


def extension(kind: int, content: bytes) -> bytes:
    """One extension: type, length, content."""
    return kind.to_bytes(2, "big") + vector(2, content)


def server_name(*names: bytes, name_type: int = 0) -> bytes:
    """A server_name extension listing C{names} (host names by default)."""
    entries = b"".join(bytes([name_type]) + vector(2, name) for name in names)
    return extension(0, vector(2, entries))


def hello_body(
    extensions: Sequence[bytes] | None = (),
    *,
    session_id: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\x13\x02\xc0\x2f",
    compression: bytes = b"\x00",
) -> bytes:
    """
    A ClientHello body; C{extensions} None leaves the extensions block out
    (as an SSL 3.0 or TLS 1.0 client may).
    """
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + vector(1, session_id)
        + vector(2, suites)
        + vector(1, compression)
    )
    if extensions is not None:
        body += vector(2, b"".join(extensions))
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    """A handshake message: type, 3-byte length, body."""
    return bytes([msg_type]) + vector(3, body)


def records(
    message: bytes,
    sizes: Sequence[int] = (),
    *,
    version: bytes = TLS10,
    content_type: int = HANDSHAKE,
) -> bytes:
    """
    C{message} in records of the given fragment C{sizes} (cycled; 16384
    each if none are given).
    """
    sizes = list(sizes) or [16384]
    out = []
    offset = index = 0
    while offset < len(message):
        size = sizes[index % len(sizes)]
        fragment = message[offset : offset + size]
        out.append(bytes([content_type]) + version + vector(2, fragment))
        offset += size
        index += 1
    return b"".join(out)


def client_hello(
    name: str | None = "db.example.com", sizes: Sequence[int] = ()
) -> bytes:
    """A whole ClientHello asking for C{name} (none if None)."""
    extensions = [extension(10, b"\x00\x02\x00\x1d")]
    if name is not None:
        extensions.insert(0, server_name(name.encode("ascii")))
    return records(handshake(hello_body(extensions)), sizes)


def openssl_client_hello(name: bytes | None, max_tls12: bool = False) -> bytes:
    """
    The first flight of a real OpenSSL client: its ClientHello, asking for
    C{name} (no SNI if None).
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_tls12:
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if name is not None:
        connection.set_tlsext_host_name(name)
    with contextlib.suppress(SSL.WantReadError):
        connection.do_handshake()
    data: bytes = connection.bio_read(1 << 17)
    return data
