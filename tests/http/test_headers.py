"""Tests for rproxy.http.headers: hop-by-hop removal and forwarding headers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rproxy.http.headers import (
    HOP_BY_HOP,
    PROTECTED,
    ForwardingPolicy,
    connection_tokens,
    forward_request_headers,
    forward_response_headers,
    strip_hop_by_hop,
)

Headers = list[tuple[bytes, bytes]]

TRUSTED = ForwardingPolicy(trusted=("10.0.0.0/8", "127.0.0.1", "2001:db8::/32"))
UNTRUSTED_V4 = "203.0.113.7"
UNTRUSTED_V6 = "2001:db9::7"


def names(headers: Headers) -> list[bytes]:
    return [name.lower() for name, _ in headers]


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def forward(
    headers: Headers,
    *,
    client_ip: str = UNTRUSTED_V4,
    policy: ForwardingPolicy = TRUSTED,
    host: bytes | None = b"example.com",
    scheme: bytes = b"https",
    **kwargs: object,
) -> Headers:
    return forward_request_headers(
        headers,
        client_ip=client_ip,
        scheme=scheme,
        host=host,
        policy=policy,
        **kwargs,  # type: ignore[arg-type]
    )


# -- Connection and the fixed hop-by-hop set ----------------------------------


def test_connection_tokens_from_every_connection_header_lowercased() -> None:
    """Tokens come from all Connection fields, comma lists, any case, no blanks."""
    headers = [
        (b"Connection", b"Keep-Alive, X-Foo"),
        (b"Host", b"a"),
        (b"connection", b" ,x-BAR ,\tUpgrade"),
    ]
    assert connection_tokens(headers) == {b"keep-alive", b"x-foo", b"x-bar", b"upgrade"}


def test_fixed_hop_by_hop_set_is_removed() -> None:
    """Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade go."""
    headers = [
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"Expires"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"Accept", b"*/*"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Accept", b"*/*")]


def test_hop_by_hop_constant_is_lowercase() -> None:
    """HOP_BY_HOP holds the lowercase names callers compare against."""
    assert all(name == name.lower() for name in HOP_BY_HOP)
    assert {b"connection", b"keep-alive", b"te", b"upgrade"} <= HOP_BY_HOP


def test_headers_named_in_connection_are_removed_case_insensitively() -> None:
    """Every header a Connection field lists is removed, whatever its case."""
    headers = [
        (b"X-Secret", b"1"),
        (b"Connection", b"x-secret, X-OTHER"),
        (b"x-other", b"2"),
        (b"Connection", b"X-Third"),
        (b"X-THIRD", b"3"),
        (b"Accept", b"*/*"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Accept", b"*/*")]


def test_connection_cannot_remove_framing_or_host() -> None:
    """Host, Content-Length and Transfer-Encoding stay even if Connection lists
    them: removing framing on a client's say-so would desync the body."""
    headers = [
        (b"Host", b"example.com"),
        (b"Content-Length", b"5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"Host, content-length, TRANSFER-ENCODING"),
    ]
    assert strip_hop_by_hop(headers) == headers[:3]


def test_upgrade_removed_unless_asked() -> None:
    """Upgrade goes by default; with keep_upgrade it stays with Connection: upgrade."""
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade, HTTP2-Settings"),
        (b"HTTP2-Settings", b"AAA"),
        (b"Sec-WebSocket-Key", b"k"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Sec-WebSocket-Key", b"k")]
    assert strip_hop_by_hop(headers, keep_upgrade=True) == [
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Connection", b"upgrade"),
    ]


def test_keep_upgrade_without_upgrade_header_adds_no_connection() -> None:
    """Connection: upgrade is only emitted when an Upgrade header is kept."""
    assert strip_hop_by_hop([(b"A", b"1")], keep_upgrade=True) == [(b"A", b"1")]


def test_order_and_case_of_other_headers_preserved() -> None:
    """Kept headers keep their order, name case and repeats; input is untouched."""
    headers = [
        (b"Accept", b"a"),
        (b"Connection", b"close"),
        (b"x-Custom", b"1"),
        (b"Set-Thing", b"2"),
        (b"x-Custom", b"3"),
    ]
    before = list(headers)
    assert strip_hop_by_hop(headers) == [
        (b"Accept", b"a"),
        (b"x-Custom", b"1"),
        (b"Set-Thing", b"2"),
        (b"x-Custom", b"3"),
    ]
    assert headers == before


header_name = st.sampled_from(
    b"Connection connection Upgrade TE Keep-Alive X-A Proxy-Connection Trailer"
    b" x-b Host Content-Length".split()
).map(lambda n: n.swapcase() if len(n) % 2 else n)
token = st.sampled_from([b"x-a", b"X-B", b"close", b"keep-alive", b"Host", b"te"])
header_value = st.lists(token, max_size=3).map(b", ".join)


@given(st.lists(st.tuples(header_name, header_value), max_size=12))
def test_no_hop_by_hop_header_survives_strip(headers: Headers) -> None:
    """Property: nothing in HOP_BY_HOP, nothing Connection lists (bar PROTECTED)
    survives, and everything else survives in order."""
    listed = connection_tokens(headers) - PROTECTED
    out = strip_hop_by_hop(headers)
    assert not set(names(out)) & (HOP_BY_HOP | listed)
    expected = [h for h in headers if h[0].lower() not in HOP_BY_HOP | listed]
    assert out == expected


# -- trust ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("10.1.2.3", True),
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("::ffff:10.0.0.1", True),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::1", False),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_is_trusted_matches_ipv4_and_ipv6_networks(ip: str, trusted: bool) -> None:
    """Peers in the trusted networks (v4, v6, v4-mapped v6) are trusted, others not."""
    assert TRUSTED.is_trusted(ip) is trusted


def test_policy_parses_network_strings_and_caches_bounded() -> None:
    """Strings become networks (host bits masked); the verdict cache is bounded."""
    policy = ForwardingPolicy(trusted=["10.0.0.1/8", "::1/128"])
    assert policy.trusted == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    for i in range(3000):
        policy.is_trusted(f"192.0.{i // 256}.{i % 256}")
    assert len(policy._verdicts) <= 1024
    assert policy.is_trusted("::1")
    assert policy == ForwardingPolicy(trusted=["10.0.0.0/8", "::1"])


def test_policy_rejects_bad_network() -> None:
    """A malformed network string fails when the policy is built."""
    with pytest.raises(ValueError):
        ForwardingPolicy(trusted=["10.0.0.0/33"])


# -- X-Forwarded-* -----------------------------------------------------------------


def test_xff_spoofing_from_untrusted_peer_dropped() -> None:
    """An untrusted peer's X-Forwarded-* are replaced by what the proxy saw."""
    headers = [
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil"),
        (b"Accept", b"*/*"),
    ]
    out = forward(headers, client_ip=UNTRUSTED_V4, scheme=b"http")
    assert out == [
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", UNTRUSTED_V4.encode()),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"example.com"),
    ]


def test_xff_spoofing_from_untrusted_ipv6_peer_dropped() -> None:
    """An untrusted IPv6 peer's XFF is dropped; its address is added as is."""
    out = forward([(b"X-Forwarded-For", b"1.2.3.4")], client_ip=UNTRUSTED_V6)
    assert values(out, b"x-forwarded-for") == [UNTRUSTED_V6.encode()]


@pytest.mark.parametrize("peer", ["10.9.8.7", "2001:db8::5"])
def test_xff_from_trusted_peer_kept_and_appended(peer: str) -> None:
    """A trusted peer's XFF lines are kept in order, the peer appended, one line."""
    headers = [
        (b"X-Forwarded-For", b"198.51.100.1, 2001:db8:cafe::17"),
        (b"x-forwarded-for", b"192.0.2.9"),
    ]
    out = forward(headers, client_ip=peer)
    assert out == [
        (
            b"X-Forwarded-For",
            b"198.51.100.1, 2001:db8:cafe::17, 192.0.2.9, " + peer.encode(),
        ),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"example.com"),
    ]


def test_proto_and_host_from_trusted_peer_keep_first_item() -> None:
    """From a trusted peer the first X-Forwarded-Proto/-Host item wins."""
    headers = [
        (b"X-Forwarded-Proto", b"https, http"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"public.example"),
    ]
    out = forward(headers, client_ip="10.0.0.1", scheme=b"http", host=b"internal")
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"public.example"]


def test_proto_and_host_from_trusted_peer_default_to_ours() -> None:
    """A trusted peer that sent no X-Forwarded-Proto/-Host gets ours."""
    out = forward([], client_ip="10.0.0.1", scheme=b"http", host=b"h:8080")
    assert values(out, b"x-forwarded-proto") == [b"http"]
    assert values(out, b"x-forwarded-host") == [b"h:8080"]


def test_no_forwarded_host_without_a_host() -> None:
    """With no request Host (HTTP/1.0) there is no X-Forwarded-Host."""
    assert b"x-forwarded-host" not in names(forward([], host=None))


def test_connection_cannot_hide_forwarding_headers_from_trusted_peer() -> None:
    """Connection: X-Forwarded-For does not strip a trusted chain (CVE-2024-45410)."""
    headers = [
        (b"Connection", b"X-Forwarded-For, X-Forwarded-Proto"),
        (b"X-Forwarded-For", b"192.0.2.1"),
        (b"X-Forwarded-Proto", b"https"),
    ]
    out = forward(headers, client_ip="10.0.0.1", scheme=b"http")
    assert values(out, b"x-forwarded-for") == [b"192.0.2.1, 10.0.0.1"]
    assert values(out, b"x-forwarded-proto") == [b"https"]


def test_x_forwarded_off_drops_untrusted_and_passes_trusted() -> None:
    """With x_forwarded off nothing is added; untrusted values still go,
    trusted ones pass through untouched in place."""
    policy = ForwardingPolicy(trusted=["10.0.0.0/8"], x_forwarded=False)
    headers = [(b"X-Forwarded-For", b"1.2.3.4"), (b"A", b"1")]
    assert forward(headers, policy=policy) == [(b"A", b"1")]
    assert forward(headers, policy=policy, client_ip="10.0.0.1") == headers


# -- Forwarded (RFC 7239) ----------------------------------------------------------

FWD = ForwardingPolicy(trusted=["10.0.0.0/8"], x_forwarded=False, forwarded=True)


def test_forwarded_element_for_ipv4() -> None:
    """Forwarded is for=ip;proto=scheme;host=host, the host quoted if needed."""
    out = forward([], policy=FWD, host=b"example.com:8443")
    assert out == [
        (b"Forwarded", b'for=203.0.113.7;proto=https;host="example.com:8443"'),
    ]


def test_forwarded_quotes_and_brackets_ipv6() -> None:
    """IPv6 nodes are written for="[addr]" (RFC 7239 section 6)."""
    out = forward([], policy=FWD, client_ip="2001:db8::1", host=b"h")
    assert out == [(b"Forwarded", b'for="[2001:db8::1]";proto=https;host=h')]


def test_forwarded_host_cannot_inject_elements() -> None:
    """Quotes and backslashes in the host are escaped inside the quoted-string."""
    out = forward([], policy=FWD, host=b'a",for=1.2.3.4;x="\\')
    assert values(out, b"forwarded") == [
        b'for=203.0.113.7;proto=https;host="a\\",for=1.2.3.4;x=\\"\\\\"'
    ]


def test_forwarded_appended_to_trusted_and_replaced_from_untrusted() -> None:
    """A trusted peer's Forwarded list is extended; an untrusted one's replaced."""
    headers = [(b"Forwarded", b"for=192.0.2.43"), (b"forwarded", b'for="_x"')]
    trusted = forward(headers, policy=FWD, client_ip="10.0.0.2", host=None)
    assert trusted == [
        (b"Forwarded", b'for=192.0.2.43, for="_x", for=10.0.0.2;proto=https'),
    ]
    untrusted = forward(headers, policy=FWD, host=None)
    assert untrusted == [(b"Forwarded", b"for=203.0.113.7;proto=https")]


# -- Via -----------------------------------------------------------------------------


def test_via_appended_to_incoming_via() -> None:
    """policy.via is appended after any incoming Via, as one line."""
    policy = ForwardingPolicy(x_forwarded=False, via=b"1.1 rproxy")
    out = forward([(b"Via", b"1.0 fred"), (b"A", b"1")], policy=policy)
    assert out == [(b"A", b"1"), (b"Via", b"1.0 fred, 1.1 rproxy")]


def test_via_untouched_when_not_configured() -> None:
    """Without policy.via an incoming Via passes through in place."""
    policy = ForwardingPolicy(x_forwarded=False)
    headers = [(b"Via", b"1.0 fred"), (b"A", b"1")]
    assert forward(headers, policy=policy) == headers


# -- Host ----------------------------------------------------------------------------


def test_host_preserved_by_default() -> None:
    """The client's Host goes to the backend unchanged by default."""
    out = forward([(b"Host", b"example.com")], backend_host=b"10.0.0.5:8080")
    assert values(out, b"host") == [b"example.com"]


def test_host_replaced_by_backend_host_in_place() -> None:
    """Without preserve_host the backend's host replaces Host in place, and
    X-Forwarded-Host carries the client's."""
    policy = ForwardingPolicy(preserve_host=False)
    headers = [(b"A", b"1"), (b"host", b"example.com"), (b"B", b"2")]
    out = forward(headers, policy=policy, backend_host=b"10.0.0.5:8080")
    assert out[:3] == [(b"A", b"1"), (b"host", b"10.0.0.5:8080"), (b"B", b"2")]
    assert values(out, b"x-forwarded-host") == [b"example.com"]


def test_backend_host_added_when_request_had_none() -> None:
    """A request without Host gets the backend's first when not preserving."""
    policy = ForwardingPolicy(x_forwarded=False, preserve_host=False)
    out = forward([(b"A", b"1")], policy=policy, host=None, backend_host=b"b")
    assert out == [(b"Host", b"b"), (b"A", b"1")]


def test_backend_host_required_when_not_preserving() -> None:
    """Not preserving Host without a backend_host is a caller error."""
    with pytest.raises(ValueError, match="backend_host"):
        forward([], policy=ForwardingPolicy(preserve_host=False))


def test_request_forwarding_strips_hop_by_hop_and_keeps_upgrade_on_request() -> None:
    """forward_request_headers strips like strip_hop_by_hop, honouring keep_upgrade."""
    policy = ForwardingPolicy(x_forwarded=False)
    headers = [
        (b"Connection", b"Upgrade, X-Drop"),
        (b"Upgrade", b"websocket"),
        (b"X-Drop", b"1"),
        (b"TE", b"trailers"),
    ]
    assert forward(headers, policy=policy) == []
    assert forward(headers, policy=policy, keep_upgrade=True) == [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"upgrade"),
    ]


# -- responses -----------------------------------------------------------------------


def test_response_removes_named_headers_case_insensitively() -> None:
    """remove={b"Server"} hides Server in any case, with hop-by-hop fields."""
    headers = [
        (b"server", b"nginx/1.2"),
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"keep-alive, X-Internal"),
        (b"X-Internal", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"SERVER", b"again"),
        (b"Content-Length", b"2"),
    ]
    out = forward_response_headers(headers, remove=frozenset({b"Server"}))
    assert out == [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")]


def test_response_via_appended_and_upgrade_kept_on_101() -> None:
    """Responses get Via appended; a passed 101 keeps Upgrade with Connection."""
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Via", b"1.1 backend"),
        (b"Sec-WebSocket-Accept", b"x"),
    ]
    out = forward_response_headers(headers, via=b"1.1 rproxy", keep_upgrade=True)
    assert out == [
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Accept", b"x"),
        (b"Via", b"1.1 backend, 1.1 rproxy"),
        (b"Connection", b"upgrade"),
    ]
    assert forward_response_headers(headers) == headers[2:]
