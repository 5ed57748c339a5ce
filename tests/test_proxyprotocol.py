"""The PROXY protocol codec against the examples of HAProxy's
proxy-protocol.txt, malformed input, and encode/parse round trips."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rproxy.proxyprotocol import (
    MAX_V1_LENGTH,
    V2_SIGNATURE,
    NeedMore,
    ProxyHeader,
    ProxyHeaderError,
    encode,
    encode_local,
    parse,
)

FFFF6 = ":".join(["ffff"] * 8)
SPEC_V1 = [
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(
            1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47
        ),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyHeader(
            1,
            "PROXY",
            "TCP4",
            ("255.255.255.255", 65535),
            ("255.255.255.255", 65535),
            56,
        ),
    ),
    (
        f"PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n".encode(),
        ProxyHeader(1, "PROXY", "TCP6", (FFFF6, 65535), (FFFF6, 65535), 104),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", "UNKNOWN", None, None, 15)),
    (
        f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n".encode(),
        ProxyHeader(1, "PROXY", "UNKNOWN", None, None, 107),
    ),
]


def feed_bytewise(data: bytes) -> ProxyHeader:
    """
    Parse C{data} as it would arrive one byte at a time; every shorter
    prefix must ask for more, and never for more than the whole.
    """
    for end in range(len(data)):
        result = parse(data[:end])
        assert isinstance(result, NeedMore), (end, result)
        assert end < result.at_least <= len(data)
    header = parse(data)
    assert isinstance(header, ProxyHeader)
    return header


@pytest.mark.parametrize(("line", "expected"), SPEC_V1)
def test_v1_spec_examples_parse(line: bytes, expected: ProxyHeader) -> None:
    """The spec's v1 examples parse, whole and fed byte by byte."""
    assert parse(line) == expected
    assert feed_bytewise(line) == expected


def test_v1_header_is_followed_by_the_stream() -> None:
    """The spec's example request after a v1 line: the header says where it
    ends and the request is left alone."""
    request = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    data = SPEC_V1[0][0] + request
    header = parse(data)
    assert isinstance(header, ProxyHeader)
    assert data[header.length :] == request


def test_v1_encodes_the_spec_example() -> None:
    """Encoding the spec's TCP4 addresses gives its example line."""
    assert encode("v1", ("192.168.0.1", 56324), ("192.168.0.11", 443)) == (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )
    assert encode("v1", (FFFF6, 65535), (FFFF6, 65535)) == SPEC_V1[2][0]


def test_local_forms() -> None:
    """Without addresses: v1 UNKNOWN and v2 LOCAL (signature, 0x20, 0x00,
    zero length)."""
    assert encode_local("v1") == b"PROXY UNKNOWN\r\n"
    assert encode("v1", None, ("1.2.3.4", 1)) == b"PROXY UNKNOWN\r\n"
    local = encode_local("v2")
    assert local == b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    assert parse(local) == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, 16)


def test_v2_signature_is_the_spec_one() -> None:
    """The v2 signature is the 12 bytes the spec gives."""
    assert V2_SIGNATURE == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
    assert len(V2_SIGNATURE) == 12


def test_v2_tcp4_layout() -> None:
    """A v2 TCP4 header is signature, 0x21, 0x11, length 12, then the
    addresses and ports in network order."""
    data = encode("v2", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert data == (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([192, 168, 0, 1, 192, 168, 0, 11])
        + struct.pack("!HH", 56324, 443)
    )
    assert feed_bytewise(data) == ProxyHeader(
        2, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 28
    )


def test_v2_tcp6_and_tlvs_are_skipped() -> None:
    """A v2 TCP6 header with TLVs after the addresses: the TLVs count in
    the length and are not parsed."""
    addresses = (
        ipaddress.IPv6Address("2001:db8::1").packed
        + ipaddress.IPv6Address("2001:db8::2").packed
        + struct.pack("!HH", 1234, 443)
    )
    tlvs = b"\x04\x00\x03abc" + b"\x01\x00\x02h2"
    body = addresses + tlvs
    data = V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body
    header = feed_bytewise(data)
    assert parse(data + b"rest") == header
    assert header == ProxyHeader(
        2, "PROXY", "TCP6", ("2001:db8::1", 1234), ("2001:db8::2", 443), len(data)
    )


def test_v2_unspec_proxy_carries_no_address() -> None:
    """PROXY with family UNSPEC is a header without addresses."""
    data = V2_SIGNATURE + b"\x21\x00\x00\x00"
    assert parse(data) == ProxyHeader(2, "PROXY", "UNKNOWN", None, None, 16)


def test_local_ignores_its_address_block() -> None:
    """LOCAL with addresses: they are skipped, and none is reported."""
    data = V2_SIGNATURE + b"\x20\x11\x00\x0c" + bytes(12)
    assert parse(data) == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, 28)


@pytest.mark.parametrize(
    "data",
    [b"G", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROXX", b"\r\n\r\n\x01", b"proxy"],
)
def test_other_protocols_are_refused_at_the_first_differing_byte(data: bytes) -> None:
    """Bytes that are no PROXY header are refused as soon as they differ
    from both signatures, without waiting for more."""
    with pytest.raises(ProxyHeaderError):
        parse(data)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "0-65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "leading zeros"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "0-65535"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY\r\n", "signature"),
        (b"PROXY \r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.4\x00", "not text"),
        (b"PROXY TCP4 1.2\r3.4", "not text"),
        (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107"),
        (V2_SIGNATURE + b"\x11", "version must be 2"),
        (V2_SIGNATURE + b"\x22", "LOCAL or PROXY"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c", "UDP over IPv4"),
        (V2_SIGNATURE + b"\x21\x31\x00\xd8", "UNIX stream"),
        (V2_SIGNATURE + b"\x21\x41\x00\x00", "unknown"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0b", "too short"),
        (V2_SIGNATURE + b"\x21\x21\x00\x0c", "too short"),
    ],
)
def test_malformed_headers_are_refused(data: bytes, complaint: str) -> None:
    """Each malformed header raises, saying what is wrong."""
    with pytest.raises(ProxyHeaderError, match=complaint):
        parse(data)


def test_v1_of_exactly_the_limit_is_accepted_and_one_more_refused() -> None:
    """107 bytes is the longest v1 line; 107 bytes without its LF is too
    long."""
    line = SPEC_V1[4][0]
    assert len(line) == MAX_V1_LENGTH
    assert isinstance(parse(line), ProxyHeader)
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parse(line[:-2] + b"xx")


def test_v2_waits_for_its_whole_length() -> None:
    """A v2 header announces its length: parsing asks for exactly that."""
    data = encode("v2", ("10.0.0.1", 1), ("10.0.0.2", 2))
    assert parse(data[:16]) == NeedMore(28)
    assert parse(data[:27]) == NeedMore(28)


def test_encode_refuses_what_it_cannot_carry() -> None:
    """Names, bad ports and unknown versions cannot be encoded."""
    with pytest.raises(ValueError, match="not an IP address"):
        encode("v1", ("example.com", 1), ("10.0.0.1", 2))
    with pytest.raises(ValueError, match="port out of range"):
        encode("v2", ("10.0.0.1", 70000), ("10.0.0.1", 2))
    with pytest.raises(ValueError, match="'v1' or 'v2'"):
        encode("v3", ("10.0.0.1", 1), ("10.0.0.1", 2))
    with pytest.raises(ValueError, match="'v1' or 'v2'"):
        encode_local("v3")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_ipv4_mapped_addresses(version: str) -> None:
    """A dual-stack socket's IPv4-mapped peer is sent as IPv4 beside an IPv4
    destination, and an IPv4 address beside IPv6 is sent mapped (and read
    back as the IPv4 address it is)."""
    header = parse(encode(version, ("::ffff:192.0.2.1", 5), ("192.0.2.2", 6)))
    assert isinstance(header, ProxyHeader)
    assert (header.family, header.source) == ("TCP4", ("192.0.2.1", 5))
    header = parse(encode(version, ("192.0.2.1", 5), ("2001:db8::2", 6)))
    assert isinstance(header, ProxyHeader)
    assert (header.family, header.source) == ("TCP6", ("192.0.2.1", 5))


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
ports = st.integers(0, 65535)


@given(
    version=st.sampled_from(["v1", "v2"]),
    family=st.sampled_from([ipv4, ipv6]),
    data=st.data(),
    source_port=ports,
    destination_port=ports,
    rest=st.binary(max_size=32),
)
def test_round_trip(
    version: str,
    family: st.SearchStrategy[str],
    data: st.DataObject,
    source_port: int,
    destination_port: int,
    rest: bytes,
) -> None:
    """Whatever is encoded parses back to the same addresses, and the
    stream after the header is untouched."""
    source = data.draw(family)
    destination = data.draw(family)
    encoded = encode(version, (source, source_port), (destination, destination_port))
    header = parse(encoded + rest)
    assert isinstance(header, ProxyHeader)
    assert header.version == int(version[1])
    assert header.command == "PROXY"
    assert header.source == (ipaddress.ip_address(source).compressed, source_port)
    assert header.destination == (
        ipaddress.ip_address(destination).compressed,
        destination_port,
    )
    assert header.length == len(encoded)


@given(st.binary(max_size=64))
def test_parse_never_fails_otherwise(data: bytes) -> None:
    """Arbitrary bytes give a header, a need for more, or ProxyHeaderError;
    never another exception."""
    with contextlib.suppress(ProxyHeaderError):
        parse(data)


@given(st.binary(min_size=1, max_size=64))
def test_arbitrary_bytes_after_a_signature(data: bytes) -> None:
    """Whatever follows a signature never raises anything but
    ProxyHeaderError."""
    for prefix in (b"PROXY ", V2_SIGNATURE):
        with contextlib.suppress(ProxyHeaderError):
            parse(prefix + data)


def test_ipv4_mapped_sources_are_read_as_ipv4() -> None:
    """
    A TCP6 header carrying an IPv4-mapped address gives the IPv4 address,
    as the client is known everywhere else.
    """
    v1 = parse(b"PROXY TCP6 ::ffff:198.51.100.7 ::ffff:10.0.0.1 5000 80\r\n")
    assert isinstance(v1, ProxyHeader)
    assert (v1.source, v1.destination) == (("198.51.100.7", 5000), ("10.0.0.1", 80))
    v2 = parse(encode("v2", ("::ffff:198.51.100.7", 5000), ("2001:db8::1", 80)))
    assert isinstance(v2, ProxyHeader)
    assert v2.source == ("198.51.100.7", 5000)
