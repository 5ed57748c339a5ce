"""PROXY protocol v1 and v2 headers: encoding and parsing, pure functions.

The PROXY protocol (HAProxy's C{proxy-protocol.txt}) puts one header in
front of a TCP stream saying where the stream really came from and where
it was going, so a server behind a proxy sees the client's address.

  - L{encode} makes the header a proxy sends to a backend: version 1 is a
    text line (C{PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\\r\\n}),
    version 2 a binary block after a 12-byte signature.  Without addresses
    it makes the form that says "no client behind me" (v1 C{PROXY
    UNKNOWN}, v2 C{LOCAL}), which health checks send.
  - L{parse} reads a header from the first bytes of a stream: it returns
    L{NeedMore} until the header is whole, then a L{ProxyHeader}, or raises
    L{ProxyHeaderError}.  Bytes that cannot begin either signature are
    refused at once, from the first byte that differs.

Only TCP over IPv4 and IPv6 is carried; v2 TLVs are skipped (their length
counts, their content is not read).
"""

from __future__ import annotations

import ipaddress
import re
import struct

from attrs import frozen

from rproxy.proxyprotocol.preface import NeedMore

__all__ = [
    "MAX_V1_LENGTH",
    "V1_SIGNATURE",
    "V2_SIGNATURE",
    "VERSIONS",
    "NeedMore",
    "ProxyHeader",
    "ProxyHeaderError",
    "encode",
    "encode_local",
    "parse",
]

#: A host (an IP address as text) and a port.
HostPort = tuple[str, int]

#: The versions a pool may send.
VERSIONS = ("v1", "v2")
#: How a version 1 header begins.
V1_SIGNATURE = b"PROXY "
#: How a version 2 header begins.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 header, CRLF included (the spec's worst case).
MAX_V1_LENGTH = 107

_V2_FIXED = 16
_V2_VERSION = 0x20
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _TCP4, _TCP6 = 0x00, 0x11, 0x21
_V2_UNSUPPORTED = {
    0x12: "UDP over IPv4",
    0x22: "UDP over IPv6",
    0x31: "UNIX stream",
    0x32: "UNIX datagram",
}
_V2_ADDRESSES = {_TCP4: struct.Struct("!4s4sHH"), _TCP6: struct.Struct("!16s16sHH")}
# A port in decimal, without leading zeros.
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(ValueError):
    """
    The bytes are not a valid PROXY protocol header; the text says why.
    """


@frozen
class ProxyHeader:
    """
    A parsed PROXY protocol header.

    @ivar version: 1 or 2.
    @ivar command: C{"PROXY"} (relayed for a client) or C{"LOCAL"} (the
        sender's own connection, v2 only: a health check).
    @ivar family: C{"TCP4"}, C{"TCP6"} or C{"UNKNOWN"} (v1 C{UNKNOWN}, v2
        C{LOCAL} or an unspecified family): then there are no addresses.
    @ivar source: the client's host and port, or None.
    @ivar destination: the host and port the client connected to, or None.
    @ivar length: how many bytes the header took; the stream goes on after.
    """

    version: int
    command: str
    family: str
    source: HostPort | None
    destination: HostPort | None
    length: int


# Encoding -------------------------------------------------------------------


def encode(
    version: str, source: HostPort | None, destination: HostPort | None
) -> bytes:
    """
    The header of C{version} (C{"v1"} or C{"v2"}) for a stream from
    C{source} to C{destination}; with either None, the "no addresses" form
    (L{encode_local}).

    An IPv4-mapped IPv6 address (C{::ffff:192.0.2.1}, as a dual-stack socket
    reports IPv4 peers) is sent as IPv4 when the other address is IPv4 too;
    an IPv4 address beside a true IPv6 one is sent IPv4-mapped, since both
    addresses of a header are of one family.

    @raise ValueError: for an unknown version, a host that is not an IP
        address or a port out of range.
    """
    if version not in VERSIONS:
        raise ValueError(
            f"PROXY protocol version must be 'v1' or 'v2', got {version!r}"
        )
    if source is None or destination is None:
        return encode_local(version)
    src, dst = _ip(source[0]), _ip(destination[0])
    src_port, dst_port = _port_number(source[1]), _port_number(destination[1])
    if src.version != dst.version:
        src, dst = _same_family(src), _same_family(dst)
    if version == "v1":
        family = "TCP4" if src.version == 4 else "TCP6"
        line = f"PROXY {family} {src.compressed} {dst.compressed} {src_port} {dst_port}"
        return line.encode("ascii") + b"\r\n"
    family_byte = _TCP4 if src.version == 4 else _TCP6
    body = _V2_ADDRESSES[family_byte].pack(src.packed, dst.packed, src_port, dst_port)
    return (
        V2_SIGNATURE
        + struct.pack("!BBH", _V2_VERSION | _PROXY, family_byte, len(body))
        + body
    )


def encode_local(version: str) -> bytes:
    """
    The header of C{version} that carries no client: C{PROXY UNKNOWN} for
    v1, the C{LOCAL} command for v2.  A health check sends it.
    """
    if version == "v1":
        return b"PROXY UNKNOWN\r\n"
    if version == "v2":
        return V2_SIGNATURE + struct.pack("!BBH", _V2_VERSION | _LOCAL, _UNSPEC, 0)
    raise ValueError(_bad_version(version))


def _bad_version(version: str) -> str:
    return f"PROXY protocol version must be 'v1' or 'v2', got {version!r}"


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: str) -> _IP:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(address.compressed.split("%")[0])
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def _same_family(address: _IP) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}")
    return address


def _port_number(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return port


# Parsing --------------------------------------------------------------------


def parse(data: bytes | bytearray) -> ProxyHeader | NeedMore:
    """
    Read a PROXY protocol header (either version) from the start of C{data}.

    @return: the header, if C{data} holds all of it (what follows it is not
        looked at), or L{NeedMore} if C{data} is a valid beginning.
    @raise ProxyHeaderError: as soon as C{data} cannot begin a valid header.
    """
    data = bytes(data)
    if not data:
        return NeedMore(1)
    head = data[: len(V1_SIGNATURE)]
    if V1_SIGNATURE.startswith(head):
        return _parse_v1(data)
    head = data[: len(V2_SIGNATURE)]
    if V2_SIGNATURE.startswith(head):
        return _parse_v2(data)
    raise ProxyHeaderError(f"no PROXY protocol signature: starts with {data[:16]!r}")


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    end = data.find(b"\n", 0, MAX_V1_LENGTH)
    if end < 0:
        if len(data) >= MAX_V1_LENGTH:
            raise ProxyHeaderError(
                f"v1 header longer than {MAX_V1_LENGTH} bytes without a CRLF"
            )
        _check_v1_bytes(data)
        return NeedMore(len(data) + 1)
    if end == 0 or data[end - 1] != 0x0D:
        raise ProxyHeaderError("v1 header line ends in LF without CR")
    line = data[: end - 1]
    _check_v1_bytes(line)
    fields = line.split(b" ")
    family = fields[1] if len(fields) > 1 else b""
    if family == b"UNKNOWN":
        # The receiver ignores whatever follows UNKNOWN on the line.
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, end + 1)
    if family not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(
            f"v1 protocol must be TCP4, TCP6 or UNKNOWN, got {family[:16]!r}"
        )
    if len(fields) != 6:
        raise ProxyHeaderError(
            "v1 header needs 'PROXY family source destination sport dport' "
            f"separated by single spaces, got {line!r}"
        )
    version = 4 if family == b"TCP4" else 6
    source = _v1_host(fields[2], version)
    destination = _v1_host(fields[3], version)
    source_port, destination_port = _v1_port(fields[4]), _v1_port(fields[5])
    return ProxyHeader(
        1,
        "PROXY",
        family.decode("ascii"),
        (source, source_port),
        (destination, destination_port),
        end + 1,
    )


_V1_BYTES = re.compile(rb"[ -~]*\r?")


def _check_v1_bytes(data: bytes) -> None:
    """
    Printable ASCII only; a CR only as the last byte so far.
    """
    if not _V1_BYTES.fullmatch(data):
        raise ProxyHeaderError(f"v1 header has a byte that is not text: {data!r}")


def _v1_host(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        address = None
    if address is None or address.version != version or b"%" in text:
        kind = "an IPv4" if version == 4 else "an IPv6"
        raise ProxyHeaderError(f"v1 address {text!r} is not {kind} address")
    return _text(address)


def _text(address: _IP) -> str:
    """
    An address as text; an IPv4-mapped IPv6 address as the IPv4 address it
    is (what X-Forwarded-For, logs and hashing should see).
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return address.compressed


def _v1_port(text: bytes) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError(
            f"v1 port must be 0-65535 in decimal without leading zeros, got {text!r}"
        )
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | NeedMore:
    if len(data) < len(V2_SIGNATURE) + 1:
        return NeedMore(max(len(data) + 1, len(V2_SIGNATURE) + 1))
    version_command = data[12]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"v2 version must be 2, got {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"v2 command must be LOCAL or PROXY, got {command}")
    if len(data) < _V2_FIXED:
        return NeedMore(_V2_FIXED)
    family, length = struct.unpack_from("!BH", data, 13)
    total = _V2_FIXED + length
    if command == _LOCAL:
        if len(data) < total:
            return NeedMore(total)
        return ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, total)
    if family in _V2_UNSUPPORTED:
        raise ProxyHeaderError(f"v2 family {_V2_UNSUPPORTED[family]} is not supported")
    if family == _UNSPEC:
        if len(data) < total:
            return NeedMore(total)
        return ProxyHeader(2, "PROXY", "UNKNOWN", None, None, total)
    layout = _V2_ADDRESSES.get(family)
    if layout is None:
        raise ProxyHeaderError(f"v2 address family and protocol 0x{family:02x} unknown")
    if length < layout.size:
        raise ProxyHeaderError(
            f"v2 length {length} is too short for its addresses ({layout.size})"
        )
    if len(data) < total:
        return NeedMore(total)
    src, dst, src_port, dst_port = layout.unpack_from(data, _V2_FIXED)
    name = "TCP4" if family == _TCP4 else "TCP6"
    return ProxyHeader(
        2,
        "PROXY",
        name,
        (_text(ipaddress.ip_address(src)), src_port),
        (_text(ipaddress.ip_address(dst)), dst_port),
        total,
    )
