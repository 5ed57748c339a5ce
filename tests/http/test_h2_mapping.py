"""HTTP/2 requests checked and mapped onto the exchange's request head
(RFC 9113 section 8), and responses mapped back; a malformed request
resets its stream only."""

from __future__ import annotations

import h2.errors
import pytest

from rproxy.http.framing import Limits, ResponseHead
from rproxy.http.h2.mapping import (
    Malformed,
    Refused,
    request_head,
    response_headers,
    trailer_fields,
)

from ._h2 import H2Case, frames, get, raw_headers, response

GET = get(b"/p")

MALFORMED = [
    pytest.param([(b":method", b"GET"), (b":scheme", b"http")], id="no-path"),
    pytest.param([(b":method", b"GET"), (b":path", b"/")], id="no-scheme"),
    pytest.param([(b":scheme", b"http"), (b":path", b"/")], id="no-method"),
    pytest.param([*GET, (b":method", b"GET")], id="pseudo-after-regular"),
    pytest.param([*GET[:3], (b":path", b"/"), (b":path", b"/")], id="two-paths"),
    pytest.param([*GET, (b"Upper", b"x")], id="uppercase-name"),
    pytest.param([*GET, (b"connection", b"close")], id="connection"),
    pytest.param([*GET, (b"transfer-encoding", b"chunked")], id="transfer-encoding"),
    pytest.param([*GET, (b"upgrade", b"websocket")], id="upgrade"),
    pytest.param([*GET, (b"te", b"gzip")], id="te-not-trailers"),
    pytest.param([*GET, (b"x", b"a\r\nb")], id="crlf-in-value"),
    pytest.param([*GET, (b"x", b" padded")], id="leading-space"),
    pytest.param([*GET[:4], (b":status", b"200")], id="response-pseudo"),
    pytest.param([*GET[:4], (b":protocol", b"websocket")], id="extended-connect"),
    pytest.param([*GET, (b"content-length", b"1"), (b"content-length", b"2")], id="cl"),
    pytest.param([*GET[:2], (b":authority", b"a@b"), GET[3]], id="userinfo"),
]

REFUSED = [
    pytest.param(
        [(b":method", b"CONNECT"), (b":authority", b"a:443")], 501, id="connect"
    ),
    pytest.param([*GET[:3], (b":path", b"http://a/")], 400, id="absolute-form"),
    pytest.param([*GET[:3], (b":path", b"*")], 400, id="asterisk-not-options"),
    pytest.param([*GET[:3], (b":path", b"/" + b"a" * 9000)], 414, id="long-target"),
    pytest.param([*GET, *[(b"x", b"y")] * 101], 431, id="too-many-fields"),
]


@pytest.mark.parametrize("headers", MALFORMED)
def test_malformed_requests_are_refused_as_malformed(headers: list) -> None:
    """Each malformed header list is a stream error, never a request."""
    with pytest.raises(Malformed):
        request_head(headers, True, Limits())


@pytest.mark.parametrize(("headers", "status"), REFUSED)
def test_requests_rproxy_does_not_serve_get_a_status(
    headers: list, status: int
) -> None:
    """CONNECT, absolute and asterisk forms and oversized requests get a status."""
    with pytest.raises(Refused) as refused:
        request_head(headers, True, Limits())
    assert refused.value.status == status


def test_authority_becomes_host_and_replaces_a_host_field() -> None:
    """:authority wins over a host field and is the head's host."""
    head = request_head([*GET, (b"host", b"other")], True, Limits())
    assert head.host == b"a"
    assert head.headers[0] == (b"Host", b"a")
    assert [n for n, _ in head.headers].count(b"host") == 0
    assert (head.method, head.target, head.version) == (b"GET", b"/p", (2, 0))


def test_host_field_serves_without_authority() -> None:
    """Without :authority, the host field is the host."""
    head = request_head([*GET[:2], GET[3], (b"host", b"h")], True, Limits())
    assert head.host == b"h"


def test_body_framing_follows_end_stream_and_content_length() -> None:
    """No body when HEADERS ended the stream, a length when given, else chunked."""
    assert request_head(GET, True, Limits()).body == "none"
    with_length = request_head([*GET, (b"content-length", b"3")], False, Limits())
    assert (with_length.body, with_length.content_length) == ("length", 3)
    assert request_head(GET, False, Limits()).body == "chunked"
    with pytest.raises(Malformed):
        request_head([*GET, (b"content-length", b"3")], True, Limits())
    with pytest.raises(Refused):
        request_head([*GET, (b"content-length", b"30")], False, Limits(max_body=10))


def test_options_asterisk_is_served() -> None:
    """OPTIONS * is a request."""
    headers = [(b":method", b"OPTIONS"), *GET[1:3], (b":path", b"*")]
    assert request_head(headers, True, Limits()).target == b"*"


def test_response_headers_drop_connection_fields_and_lowercase() -> None:
    """The status goes first; names are lowercased; hop-by-hop ones go."""
    head = ResponseHead(
        200,
        b"OK",
        (1, 1),
        [
            (b"Content-Type", b"text/plain"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close"),
            (b"Keep-Alive", b"5"),
            (b"Proxy-Connection", b"x"),
            (b"Upgrade", b"h2c"),
            (b"TE", b"trailers"),
        ],
    )
    assert response_headers(head) == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
    ]
    assert trailer_fields([(b"Grpc-Status", b"0"), (b"Connection", b"x")]) == [
        (b"grpc-status", b"0")
    ]


class StreamErrorTests(H2Case):
    def test_malformed_request_resets_its_stream_only(self) -> None:
        """RST_STREAM PROTOCOL_ERROR for the malformed one; the connection
        goes on and serves the next stream."""
        # Raw frames: the h2 client would not send a connection field.
        client = self.connect()
        encoder = client.conn.encoder
        client.send_raw(
            raw_headers(1, [*GET, (b"connection", b"close")], encoder=encoder)
        )
        (reset,) = frames(client.transport.value())
        client.transport.clear()
        self.assertEqual((reset.type, reset.stream_id), (0x3, 1))
        self.assertEqual(reset.error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        client.send_raw(raw_headers(3, get(), encoder=encoder))
        self.backend_responds(response(b"ok"))
        sent = frames(client.transport.value())
        self.assertEqual([(f.type, f.stream_id) for f in sent], [(0x1, 3), (0x0, 3)])
        self.assertEqual(sent[1].data, b"ok")
        self.assertEqual(self.factory.h2_stats.stream_errors, 1)

    def test_content_length_not_matching_data_is_refused(self) -> None:
        """DATA longer than content-length is malformed (RFC 9113 8.1.1); the
        h2 library makes it a connection error: GOAWAY PROTOCOL_ERROR, and
        nothing reaches a backend but the head."""
        client = self.connect()
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, [*get(), (b"content-length", b"2")])
        client.conn.send_data(stream, b"abc", end_stream=True)
        client.send()
        client.receive()
        self.assertEqual(
            client.goaway().error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR
        )
        self.assertTrue(client.transport.disconnecting)

    def test_connect_gets_501(self) -> None:
        """CONNECT is refused with a 501 on its stream."""
        client = self.connect()
        stream = client.request([(b":method", b"CONNECT"), (b":authority", b"a:443")])
        client.receive()
        self.assertEqual(client.response(stream)[0][b":status"], b"501")
        self.assertEqual(self.endpoints.attempts, [])
