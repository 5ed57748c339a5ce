"""Tests for rproxy.http.framing: strict HTTP/1.1 heads and chunked bodies."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rproxy.http.chunked import (
    LAST_CHUNK,
    ChunkedDecoder,
    ChunkEvent,
    End,
    Trailers,
    encode_chunk,
    encode_last_chunk,
)
from rproxy.http.framing import (
    HTTPError,
    Limits,
    RequestHead,
    check_incomplete_head,
    find_head_end,
    parse_request_head,
    parse_response_head,
)

HOST = b"Host: example.com\r\n"


def parse(raw: bytes, limits: Limits | None = None) -> RequestHead:
    """Find the head in C{raw}, which must be exactly one head, and parse it."""
    end = find_head_end(raw)
    if end < 0:
        check_incomplete_head(raw, 0, limits or Limits())
        raise AssertionError("head never completes")
    assert end == len(raw)
    return parse_request_head(raw, limits or Limits())


def status_of(raw: bytes, limits: Limits | None = None) -> int:
    """The status C{raw} is refused with, or 0 if it is accepted."""
    try:
        parse(raw, limits)
    except HTTPError as e:
        return e.status
    return 0


def get(headers: bytes = HOST, target: bytes = b"/", version: bytes = b"1.1") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\n" + headers + b"\r\n"


def post(headers: bytes) -> bytes:
    return b"POST /upload HTTP/1.1\r\n" + HOST + headers + b"\r\n"


P = pytest.param
REQUESTS = [
    # Accepted.
    P(get(), 0, id="plain-get"),
    P(get(b"", version=b"1.0"), 0, id="http10-without-host"),
    P(get(HOST + b"X-A: \t v \t\r\n"), 0, id="ows-around-value"),
    P(get(HOST + b"X-A:\r\n"), 0, id="empty-value"),
    P(get(HOST + b"X-A: caf\xc3\xa9\r\n"), 0, id="obs-text-in-value"),
    P(get(b"Host: [::1]:8080\r\n"), 0, id="ipv6-host-with-port"),
    P(b"\r\n\r\n" + get(), 0, id="empty-lines-before-request-line"),
    P(post(b"Content-Length: 5, 5\r\n"), 0, id="content-length-list-identical"),
    P(post(b"Content-Length: 5\r\nContent-Length: 5\r\n"), 0, id="cl-fields-same"),
    P(post(b"Transfer-Encoding: Chunked\r\n"), 0, id="chunked-any-case"),
    P(b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 0, id="options-asterisk"),
    P(get(target=b"http://example.com/a?b"), 0, id="absolute-form"),
    P(get(target=b"/a?q={x}|[y]"), 0, id="lenient-vchar-target"),
    P(get(version=b"1.2"), 0, id="http12-read-as-11"),
    # Framing: Content-Length and Transfer-Encoding.
    P(post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), 400, id="cl-te"),
    P(post(b"Content-Length: 3\r\nContent-Length: 4\r\n"), 400, id="cl-differ"),
    P(post(b"Content-Length: 3, 4\r\n"), 400, id="cl-list-differ"),
    P(post(b"Content-Length: +3\r\n"), 400, id="cl-sign"),
    P(post(b"Content-Length: 0x3\r\n"), 400, id="cl-hex"),
    P(post(b"Content-Length:\r\n"), 400, id="cl-empty"),
    P(post(b"Content-Length: 1" + b"0" * 20 + b"\r\n"), 400, id="cl-huge"),
    P(post(b"Transfer-Encoding: gzip\r\n"), 400, id="te-not-chunked"),
    P(post(b"Transfer-Encoding: chunked, gzip\r\n"), 400, id="te-chunked-not-last"),
    P(post(b"Transfer-Encoding: chunked, chunked\r\n"), 400, id="te-chunked-twice"),
    P(
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        400,
        id="te-chunked-twice-in-two-fields",
    ),
    P(post(b"Transfer-Encoding: gzip, chunked\r\n"), 501, id="te-gzip-chunked"),
    P(post(b"Transfer-Encoding: \r\n"), 400, id="te-empty"),
    P(post(b"Transfer-Encoding: chunked;x\r\n"), 400, id="te-not-a-token"),
    P(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, id="te-http10"),
    # Field syntax.
    P(get(HOST + b"X-A: 1\r\n 2\r\n"), 400, id="obs-fold-space"),
    P(get(HOST + b"X-A: 1\r\n\t2\r\n"), 400, id="obs-fold-tab"),
    P(get(HOST + b"X-A: 1\r2\r\n"), 400, id="bare-cr-in-value"),
    P(get(HOST + b"X-A: 1\n2\r\n"), 400, id="bare-lf-in-value"),
    P(b"GET / HTTP/1.1\n" + HOST + b"\r\n", 400, id="bare-lf-after-request-line"),
    P(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, id="bare-lf-after-field"),
    P(b"GET / HTTP/1.1\r\r\n" + HOST + b"\r\n", 400, id="bare-cr-in-request-line"),
    P(get(HOST + b"X-A : 1\r\n"), 400, id="space-before-colon"),
    P(get(HOST + b"X-A\t: 1\r\n"), 400, id="tab-before-colon"),
    P(get(HOST + b"X(A): 1\r\n"), 400, id="non-tchar-in-name"),
    P(get(HOST + b": 1\r\n"), 400, id="empty-name"),
    P(get(HOST + b"NoColon\r\n"), 400, id="no-colon"),
    P(get(HOST + b"X-A: 1\x012\r\n"), 400, id="ctl-in-value"),
    P(get(HOST + b"X-A: 1\x002\r\n"), 400, id="nul-in-value"),
    P(get(HOST + b"X-A: 1\x7f\r\n"), 400, id="del-in-value"),
    # Request line and target.
    P(b"GET /\r\n\r\n", 400, id="http09"),
    P(b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="double-space"),
    P(b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n", 400, id="trailing-space"),
    P(b"GET / http/1.1\r\n" + HOST + b"\r\n", 400, id="lowercase-version"),
    P(b"GET / HTTP/1.10\r\n" + HOST + b"\r\n", 400, id="two-digit-minor"),
    P(get(version=b"2.0"), 505, id="http20"),
    P(get(version=b"0.9"), 505, id="http09-with-version"),
    P(b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="method-not-token"),
    P(get(target=b"example.com:80"), 400, id="authority-form-without-connect"),
    P(b"CONNECT example.com:443 HTTP/1.1\r\n" + HOST + b"\r\n", 501, id="connect"),
    P(b"CONNECT / HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="connect-origin-form"),
    P(get(target=b"*"), 400, id="asterisk-without-options"),
    P(get(target=b"foo"), 400, id="relative-target"),
    P(get(target=b"/a#frag"), 400, id="fragment"),
    P(get(target=b"/caf\xc3\xa9"), 400, id="non-ascii-target"),
    P(get(target=b"http:///a"), 400, id="absolute-form-empty-authority"),
    P(get(target=b"http://user@example.com/"), 400, id="absolute-form-userinfo"),
    P(get(target=b"ftp://example.com/"), 400, id="absolute-form-other-scheme"),
    # Host.
    P(get(b""), 400, id="missing-host-http11"),
    P(get(HOST + HOST), 400, id="two-host-fields"),
    P(get(b"Host: a b\r\n"), 400, id="invalid-host"),
    P(get(b"Host: a@b\r\n"), 400, id="host-with-userinfo"),
]


@pytest.mark.parametrize(("raw", "status"), REQUESTS)
def test_request_head_is_accepted_or_refused_per_rule(raw: bytes, status: int) -> None:
    """Each request head is accepted (0) or refused with the status its rule names."""
    assert status_of(raw) == status


def test_refusal_reason_never_echoes_input() -> None:
    """An HTTPError's reason is a fixed phrase, never the bytes received."""
    with pytest.raises(HTTPError) as e:
        parse(get(HOST + b"<script>: x\r\n"))
    assert e.value.status == 400
    assert "<" not in e.value.reason
    assert str(e.value) == f"400 {e.value.reason}"


def test_parses_method_target_version_and_fields() -> None:
    """Fields keep their received name case and lose surrounding OWS."""
    req = parse(get(b"hOsT:  example.com \r\nX-A: 1\r\n"))
    assert (req.method, req.target, req.version) == (b"GET", b"/", (1, 1))
    assert req.headers == [(b"hOsT", b"example.com"), (b"X-A", b"1")]
    assert req.host == b"example.com"
    assert (req.body, req.content_length) == ("none", None)


def test_http12_is_framed_as_http11() -> None:
    """A higher 1.x minor version is read as HTTP/1.1 (RFC 9110 §2.5)."""
    assert parse(get(version=b"1.2")).version == (1, 1)


@pytest.mark.parametrize(
    ("headers", "body", "length"),
    [
        (b"Content-Length: 5\r\n", "length", 5),
        (b"Content-Length: 5, 5\r\n", "length", 5),
        (b"Content-Length: 0\r\n", "none", 0),
        (b"Transfer-Encoding: chunked\r\n", "chunked", None),
        (b"", "none", None),
    ],
)
def test_request_body_framing(headers: bytes, body: str, length: int | None) -> None:
    """The body is none, Content-Length delimited or chunked."""
    req = parse(post(headers))
    assert (req.body, req.content_length) == (body, length)


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: keep-alive, Close\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: Keep-Alive\r\n", True),
        (b"1.0", b"Connection: keep-alive, close\r\n", False),
    ],
)
def test_keep_alive_rules(version: bytes, connection: bytes, keep_alive: bool) -> None:
    """HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive"."""
    assert parse(get(HOST + connection, version=version)).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"http://example.org/a/b?c=d", b"/a/b?c=d"),
        (b"HTTPS://example.org:8443", b"/"),
        (b"http://example.org?x=1", b"/?x=1"),
    ],
)
def test_absolute_form_becomes_origin_form(target: bytes, path: bytes) -> None:
    """An absolute-form target is normalised and its authority replaces Host."""
    req = parse(get(b"Host: other\r\nX-A: 1\r\n", target=target))
    authority = target.split(b"//")[1].split(b"/")[0].split(b"?")[0]
    assert req.target == path
    assert req.host == authority
    assert req.headers == [(b"Host", authority), (b"X-A", b"1")]


def test_absolute_form_needs_no_host_field() -> None:
    """An HTTP/1.1 absolute-form request without Host takes the authority."""
    assert parse(get(b"", target=b"http://a.example/")).host == b"a.example"


def test_upgrade_only_when_connection_lists_it() -> None:
    """Upgrade is reported only with Connection: upgrade, and never in 1.0."""
    up = b"Upgrade: websocket\r\n"
    assert parse(get(HOST + up + b"Connection: Upgrade\r\n")).upgrade == b"websocket"
    assert parse(get(HOST + up)).upgrade is None
    conn = b"Connection: upgrade\r\n"
    assert parse(get(HOST + up + conn, version=b"1.0")).upgrade is None


def test_expect_continue_only_in_http11() -> None:
    """Expect: 100-continue is honoured in HTTP/1.1 and ignored in 1.0."""
    expect = b"Expect: 100-Continue\r\n"
    assert parse(get(HOST + expect)).expect_continue
    assert not parse(get(HOST)).expect_continue
    assert not parse(get(expect, version=b"1.0")).expect_continue


def test_te_trailers() -> None:
    """TE: trailers is reported; other TE values are not."""
    assert parse(get(HOST + b"TE: gzip, Trailers\r\n")).te_trailers
    assert not parse(get(HOST + b"TE: gzip\r\n")).te_trailers


# Limits.


def test_head_over_max_head_is_431() -> None:
    """A complete head longer than max_head is refused with 431."""
    raw = get(HOST + b"X-A: " + b"a" * 200 + b"\r\n")
    assert status_of(raw, Limits(max_head=len(raw))) == 0
    assert status_of(raw, Limits(max_head=len(raw) - 1)) == 431


def test_incomplete_head_over_max_head_is_431() -> None:
    """A head still incomplete but already over max_head is refused with 431."""
    partial = b"GET / HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 100
    check_incomplete_head(partial, 0, Limits(max_head=len(partial)))
    with pytest.raises(HTTPError) as e:
        check_incomplete_head(partial, 0, Limits(max_head=len(partial) - 1))
    assert e.value.status == 431


def test_incomplete_head_with_bare_lf_is_400() -> None:
    """A head using bare LF line ends is refused before it could ever complete."""
    with pytest.raises(HTTPError) as e:
        check_incomplete_head(b"GET / HTTP/1.1\nHost: a\n\n", 0, Limits())
    assert e.value.status == 400


def test_too_many_headers_is_431() -> None:
    """max_headers fields are accepted, one more is refused with 431."""
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(9))
    assert status_of(get(HOST + fields), Limits(max_headers=10)) == 0
    assert status_of(get(HOST + fields + b"X: 1\r\n"), Limits(max_headers=10)) == 431


def test_long_target_is_414() -> None:
    """A request-target longer than max_target is refused with 414."""
    limits = Limits(max_target=100)
    assert status_of(get(target=b"/" + b"a" * 99), limits) == 0
    assert status_of(get(target=b"/" + b"a" * 100), limits) == 414


def test_incomplete_long_request_line_is_414() -> None:
    """A request line longer than any allowed target is refused before its end."""
    partial = b"GET /" + b"a" * 300
    check_incomplete_head(partial, 0, Limits(max_target=1000))
    with pytest.raises(HTTPError) as e:
        check_incomplete_head(partial, 0, Limits(max_target=200))
    assert e.value.status == 414


def test_content_length_over_max_body_is_413() -> None:
    """A declared body longer than max_body is refused with 413."""
    assert status_of(post(b"Content-Length: 10\r\n"), Limits(max_body=10)) == 0
    assert status_of(post(b"Content-Length: 11\r\n"), Limits(max_body=10)) == 413


def test_find_head_end() -> None:
    """find_head_end points past CRLFCRLF, from start, skipping empty lines."""
    raw = get() + b"rest"
    assert find_head_end(raw) == len(raw) - 4
    assert find_head_end(raw[:-6]) == -1
    assert find_head_end(b"xx\r\n" + raw, 4) == len(raw)
    assert find_head_end(b"\r\n\r\n" + raw) == len(raw)


# Response heads.

RESPONSES = [
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"GET",
        ("length", 5, True),
        id="content-length",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"GET",
        ("none", 0, True),
        id="content-length-zero",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET",
        ("chunked", None, True),
        id="chunked",
    ),
    P(b"HTTP/1.1 200 OK\r\n\r\n", b"GET", ("close", None, False), id="close-delimited"),
    P(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET",
        ("close", None, False),
        id="te-not-chunked-reads-to-close",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HEAD",
        ("none", 5, True),
        id="head",
    ),
    P(b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", ("none", None, True), id="204"),
    P(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        b"GET",
        ("none", 9, True),
        id="304",
    ),
    P(b"HTTP/1.1 100 Continue\r\n\r\n", b"POST", ("none", None, True), id="100"),
    P(
        b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n",
        b"GET",
        ("length", 1, True),
        id="no-reason",
    ),
    P(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        b"GET",
        ("length", 1, False),
        id="http10",
    ),
    P(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
        b"GET",
        ("length", 1, True),
        id="http10-keep-alive",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
        b"GET",
        ("length", 1, False),
        id="connection-close",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET",
        502,
        id="cl-te",
    ),
    P(
        b"HTTP/1.1 204 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET",
        502,
        id="cl-te-even-without-body",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET",
        502,
        id="cl-differ",
    ),
    P(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET",
        502,
        id="te-chunked-not-last",
    ),
    P(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET",
        502,
        id="te-http10",
    ),
    P(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n", b"GET", 502, id="obs-fold"),
    P(b"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n", b"GET", 502, id="space-before-colon"),
    P(b"HTTP/2.0 200 OK\r\n\r\n", b"GET", 502, id="http2"),
    P(b"HTTP/1.1 20 OK\r\n\r\n", b"GET", 502, id="short-status"),
    P(b"HTTP/1.1 099 OK\r\n\r\n", b"GET", 502, id="status-below-100"),
    P(b"SSH-2.0-OpenSSH\r\n\r\n", b"GET", 502, id="garbage"),
    P(b"HTTP/1.1 200 OK\n\r\n", b"GET", 502, id="bare-lf"),
]


@pytest.mark.parametrize(("raw", "method", "expected"), RESPONSES)
def test_response_head_framing(
    raw: bytes, method: bytes, expected: tuple[str, int | None, bool] | int
) -> None:
    """Each response gets its RFC 9112 §6.3 body framing, or is refused with 502."""
    try:
        resp = parse_response_head(raw, method)
    except HTTPError as e:
        assert e.status == expected
    else:
        assert (resp.body, resp.content_length, resp.keep_alive) == expected


def test_response_status_reason_and_fields() -> None:
    """A response head yields its status, reason, version and fields."""
    resp = parse_response_head(b"HTTP/1.1 404 Not Found\r\nX-A: 1\r\n\r\n", b"GET")
    assert (resp.status, resp.reason, resp.version) == (404, b"Not Found", (1, 1))
    assert resp.headers == [(b"X-A", b"1")]


def test_response_too_many_headers_is_502() -> None:
    """A backend sending more fields than allowed gets a 502, not a 431."""
    raw = b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
    with pytest.raises(HTTPError) as e:
        parse_response_head(raw, b"GET", Limits(max_headers=2))
    assert e.value.status == 502


# Chunked bodies.


def decode(
    pieces: list[bytes], decoder: ChunkedDecoder | None = None
) -> tuple[bytes, list[ChunkEvent]]:
    """
    Feed pieces until the end; return the joined payload and the other
    events, L{End} carrying every byte after the body.
    """
    decoder = decoder or ChunkedDecoder()
    payload, others = [], []
    for i, piece in enumerate(pieces):
        for event in decoder.feed(piece):
            if isinstance(event, bytes):
                payload.append(event)
            elif isinstance(event, End):
                others.append(End(event.rest + b"".join(pieces[i + 1 :])))
                return b"".join(payload), others
            else:
                others.append(event)
    return b"".join(payload), others


BODY = (
    b'5;name=value;q="a \\" b"\r\nhello\r\n'
    b"1A \t; ext\r\n" + b"x" * 26 + b"\r\n"
    b"0\r\nTrailer-A: 1\r\nTrailer-B:  2 \r\n\r\n"
    b"GET /next"
)


def test_decodes_chunks_extensions_and_trailers() -> None:
    """Payload, trailers and the bytes after the body come out in order."""
    payload, others = decode([BODY])
    assert payload == b"hello" + b"x" * 26
    assert others == [
        Trailers([(b"Trailer-A", b"1"), (b"Trailer-B", b"2")]),
        End(b"GET /next"),
    ]


def test_split_at_every_byte_boundary() -> None:
    """Feeding the body in two pieces, split anywhere, decodes the same."""
    expected = decode([BODY])
    for i in range(len(BODY) + 1):
        assert decode([BODY[:i], BODY[i:]]) == expected, i


def test_byte_at_a_time() -> None:
    """Feeding one byte at a time decodes the same."""
    assert decode([BODY[i : i + 1] for i in range(len(BODY))]) == decode([BODY])


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    trailers=st.lists(
        st.tuples(
            st.from_regex(rb"\A[A-Za-z0-9-]{1,10}\Z"),
            st.from_regex(rb"\A[!-~]{0,10}\Z"),
        ),
        max_size=3,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8),
)
def test_any_split_yields_the_same_payload(
    chunks: list[bytes], trailers: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    """Any split of a valid encoded body decodes to its payload and trailers."""
    body = b"".join(map(encode_chunk, chunks)) + encode_last_chunk(trailers) + b"tail"
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(points)]
    payload, others = decode(pieces)
    assert payload == b"".join(chunks)
    expected: list[ChunkEvent] = [Trailers(trailers)] if trailers else []
    assert others == [*expected, End(b"tail")]


@pytest.mark.parametrize(
    "line",
    [
        b"-5",
        b"+5",
        b" 5",
        b"0x5",
        b"5 ",
        b"",
        b"g",
        b"1" * 17,
        b"5;",
        b"5;=v",
        b"5;a=",
        b'5;a="open',
        b"5;a=b c",
        b"5;a(b)",
        b'5;a="\x01"',
        b"5\r",
    ],
)
def test_invalid_chunk_size_line_is_400(line: bytes) -> None:
    """A chunk-size line outside RFC 9112 §7.1 grammar is refused with 400."""
    with pytest.raises(HTTPError) as e:
        decode([line + b"\r\nhello\r\n0\r\n\r\n"])
    assert e.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"5\nhello\r\n0\r\n\r\n", id="bare-lf-after-size"),
        pytest.param(b"5\r\nhelloX\r\n0\r\n\r\n", id="data-longer-than-size"),
        pytest.param(b"5\r\nhello\n0\r\n\r\n", id="bare-lf-after-data"),
        pytest.param(b"0\r\nX-A : 1\r\n\r\n", id="bad-trailer-field"),
        pytest.param(b"0\r\nX-A: 1\n\r\n", id="bare-lf-in-trailers"),
        pytest.param(b"0\r\n\n", id="bare-lf-ending-trailers"),
    ],
)
def test_malformed_chunked_framing_is_400(body: bytes) -> None:
    """Missing CRLFs and bad trailer fields are refused with 400."""
    with pytest.raises(HTTPError) as e:
        decode([body])
    assert e.value.status == 400


def test_oversize_trailer_section_is_refused() -> None:
    """A trailer section past max_head is refused, even before it ends."""
    decoder = ChunkedDecoder(Limits(max_head=100))
    decoder.feed(b"0\r\n" + b"X-A: 1\r\n" * 12)
    with pytest.raises(HTTPError) as e:
        decoder.feed(b"X-A: 1\r\n")
    assert e.value.status == 400


def test_endless_chunk_size_line_is_refused() -> None:
    """A chunk-size line that never ends is refused once past 4 KiB."""
    decoder = ChunkedDecoder()
    decoder.feed(b"5;a=" + b"b" * 4000)
    with pytest.raises(HTTPError):
        decoder.feed(b"b" * 100)


def test_large_chunk_is_streamed_not_buffered() -> None:
    """Payload of a huge chunk is handed out as it arrives, the fed object itself."""
    decoder = ChunkedDecoder()
    assert decoder.feed(b"10000000000\r\n") == []
    piece = b"x" * 65536
    for _ in range(4):
        [event] = decoder.feed(piece)
        assert event is piece


def test_chunked_body_over_max_body_is_413() -> None:
    """A chunk that takes the payload past max_body is refused with 413."""
    decoder = ChunkedDecoder(Limits(max_body=10))
    decoder.feed(b"5\r\nhello\r\n5\r\nworld\r\n")
    with pytest.raises(HTTPError) as e:
        decoder.feed(b"1\r\n")
    assert e.value.status == 413


def test_backend_decoder_raises_502() -> None:
    """A decoder for a backend's body refuses malformed framing with 502."""
    with pytest.raises(HTTPError) as e:
        ChunkedDecoder(bad_status=502).feed(b"zz\r\n")
    assert e.value.status == 502


def test_feed_after_end_is_an_error() -> None:
    """Once End is returned the decoder takes nothing more."""
    decoder = ChunkedDecoder()
    assert decoder.feed(LAST_CHUNK) == [End()]
    assert decoder.done
    with pytest.raises(RuntimeError):
        decoder.feed(b"x")


def test_encode_chunk() -> None:
    """encode_chunk frames data in hex; empty data is never a last chunk."""
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert encode_chunk(b"") == b""
    assert encode_last_chunk([(b"A", b"1")]) == b"0\r\nA: 1\r\n\r\n"
