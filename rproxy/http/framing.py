"""HTTP/1.1 message heads (RFC 9112): strict request and response head
parsing and body framing.  Pure functions and small classes, no I/O; the
chunked coding itself is in L{rproxy.http.chunked}.

Every ambiguity a proxy could be smuggled through is refused, never guessed
at: the caller answers L{HTTPError.status} and closes the connection.
Decisions worth knowing:

  - C{Content-Length: 5, 5} (or two fields both C{5}) is accepted as 5
    (RFC 9110 §8.6); differing or non-digit values are 400.
  - C{Transfer-Encoding: gzip, chunked} is 501 (we decode only chunked);
    C{chunked} not last, or twice, is 400; any Transfer-Encoding with
    Content-Length, or in an HTTP/1.0 request, is 400.
  - CONNECT with an authority-form target is 501: a reverse proxy does not
    tunnel.  Authority-form with another method, or C{*} with a method other
    than OPTIONS, is 400.
  - An absolute-form target (C{http://host/path}) becomes origin-form, and
    its authority replaces the Host field.
  - HTTP/1.x with x > 1 is read as HTTP/1.1 (RFC 9110 §2.5); other majors are
    505; a request line without a version (HTTP/0.9) is 400.
  - Empty lines before a request line are skipped (RFC 9112 §2.2).
  - Origin-form targets may hold any VCHAR except C{#}; percent-encoding is
    the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mypy_extensions import mypyc_attr

from rproxy.http._grammar import (
    ABSOLUTE_FORM,
    AUTHORITY,
    STATUS_LINE,
    TARGET_CHARS,
    TOKEN,
    HTTPError,
    framing_fields,
    parse_content_length,
    parse_fields,
    parse_transfer_encoding,
    parse_version,
    token_list,
)

__all__ = [
    "HTTPError",
    "Limits",
    "RequestHead",
    "ResponseHead",
    "check_incomplete_head",
    "copy_head",
    "find_head_end",
    "parse_request_head",
    "parse_response_head",
]

Body = Literal["none", "length", "chunked"]
ResponseBody = Literal["none", "length", "chunked", "close"]
Headers = list[tuple[bytes, bytes]]

_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}
_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
)
_NO_BODY_STATUS = frozenset({204, 304})
_FRAMING = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection"}
    | {b"upgrade", b"expect", b"te"}
)
# Room for a method, two spaces and a version around a request-target.
_REQUEST_LINE_SLACK = 64


# Interpreted code may subclass it when this module is compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Limits:
    """
    Bounds on what a client may send.

    @ivar max_head: bytes in a request head (and a trailer section) -> 431.
    @ivar max_headers: header fields in a head or trailer section -> 431.
    @ivar max_target: bytes in a request-target -> 414.
    @ivar max_body: bytes in a request body, C{None} for no limit -> 413.
    """

    max_head: int = 16384
    max_headers: int = 100
    max_target: int = 8192
    max_body: int | None = None


@dataclass(slots=True)
class RequestHead:
    """
    A parsed request head, with the framing facts a proxy needs.

    @ivar target: origin-form (absolute-form is normalised), authority-form
        never (CONNECT is refused), or C{*} for C{OPTIONS *}.
    @ivar headers: fields as received, names in their original case, values
        stripped of OWS; an absolute-form authority has replaced Host.
    @ivar body: C{"none"} when no body bytes follow (including
        C{Content-Length: 0}), C{"length"} or C{"chunked"}.
    @ivar upgrade: the Upgrade value when Connection lists C{upgrade}.
    @ivar te_trailers: the client sent C{TE: trailers}.
    """

    method: bytes
    target: bytes
    version: tuple[int, int]
    headers: Headers
    host: bytes | None = None
    body: Body = "none"
    content_length: int | None = None
    keep_alive: bool = True
    upgrade: bytes | None = None
    expect_continue: bool = False
    te_trailers: bool = False


@dataclass(slots=True)
class ResponseHead:
    """
    A parsed response head.

    @ivar body: C{"none"} (1xx, 204, 304, a response to HEAD, or
        C{Content-Length: 0}), C{"length"}, C{"chunked"}, or C{"close"}:
        read until the backend closes.
    """

    status: int
    reason: bytes
    version: tuple[int, int]
    headers: Headers
    body: ResponseBody = "none"
    content_length: int | None = None
    keep_alive: bool = True


def copy_head(head: ResponseHead) -> ResponseHead:
    """
    A copy of C{head} that may be changed without changing C{head} (its
    field list copied too).
    """
    return ResponseHead(
        head.status,
        head.reason,
        head.version,
        list(head.headers),
        head.body,
        head.content_length,
        head.keep_alive,
    )


def find_head_end(
    buffer: bytes | bytearray, start: int = 0, search_from: int = 0
) -> int:
    """
    The index just past the CRLFCRLF ending the head that begins at
    C{start}, or -1.  Empty lines before a request line are skipped, so
    C{buffer[start:end]} is what L{parse_request_head} takes.

    @param search_from: where a previous search of the same head stopped
        (to avoid rescanning); empty lines are still only skipped at
        C{start}.
    """
    i = start
    while buffer.startswith(b"\r\n", i):
        i += 2
    end = buffer.find(b"\r\n\r\n", max(i, search_from))
    return -1 if end < 0 else end + 4


def check_incomplete_head(
    buffer: bytes | bytearray, start: int, limits: Limits
) -> None:
    """
    Refuse a head that is not complete yet but already cannot be accepted;
    call it when L{find_head_end} returned -1.

    @raise HTTPError: 414 for a request line longer than any allowed
        request-target, 431 past C{limits.max_head}, 400 for a bare LF.
    """
    pending = len(buffer) - start
    line_end = buffer.find(b"\n", start)
    if line_end < 0 and pending > limits.max_target + _REQUEST_LINE_SLACK:
        raise HTTPError(414, "request-target too long")
    if pending > limits.max_head:
        raise HTTPError(431, "request head too large")
    if buffer.count(b"\n", start) != buffer.count(b"\r\n", start):
        raise HTTPError(400, "bare LF in request head")


def parse_request_head(head: bytes, limits: Limits) -> RequestHead:
    """
    Parse and check a request head ending in CRLFCRLF.

    @raise HTTPError: with the status to answer; the connection must close.
    """
    if len(head) > limits.max_head:
        raise HTTPError(431, "request head too large")
    i = 0
    while head.startswith(b"\r\n", i):
        i += 2
    line_end = head.find(b"\r\n", i)
    if line_end < 0 or not head.endswith(b"\r\n\r\n"):
        raise HTTPError(400, "incomplete request head")
    parts = head[i:line_end].split(b" ")
    if len(parts) != 3:
        raise HTTPError(400, "invalid request line")
    method, target, version_text = parts
    if len(target) > limits.max_target:
        raise HTTPError(414, "request-target too long")
    version = _VERSIONS.get(version_text) or parse_version(version_text)
    if method not in _METHODS and TOKEN.fullmatch(method) is None:
        raise HTTPError(400, "invalid request line")
    headers = parse_fields(head[line_end + 2 : -2], limits.max_headers, 400)
    req = RequestHead(method, target, version, headers)

    authority = None
    if target[:1] == b"/":
        if TARGET_CHARS.fullmatch(target) is None:
            raise HTTPError(400, "invalid request-target")
    elif (a := ABSOLUTE_FORM.fullmatch(target)) is not None:
        authority, rest = a[1], a[2]
        if not authority or AUTHORITY.fullmatch(authority) is None:
            raise HTTPError(400, "invalid request-target")
        if TARGET_CHARS.fullmatch(rest) is None:
            raise HTTPError(400, "invalid request-target")
        req.target = rest if rest[:1] == b"/" else b"/" + rest
    elif target == b"*":
        if method != b"OPTIONS":
            raise HTTPError(400, "asterisk-form is only for OPTIONS")
    elif method == b"CONNECT":
        raise HTTPError(501, "CONNECT not supported")
    else:
        raise HTTPError(400, "invalid request-target")
    if method == b"CONNECT":
        raise HTTPError(400, "CONNECT needs an authority-form target")

    _request_fields(req, limits)
    if authority is not None:
        req.host = authority
        req.headers = [(b"Host", authority)] + [
            (n, v) for n, v in req.headers if n.lower() != b"host"
        ]
    elif req.host is None and version == (1, 1):
        raise HTTPError(400, "missing Host")
    return req


def _request_fields(req: RequestHead, limits: Limits) -> None:
    """Fill in the framing facts of C{req} from its fields."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    upgrade = None
    hosts = 0
    http11 = req.version == (1, 1)
    for name, value in req.headers:
        lname = name.lower()
        if lname not in _FRAMING:
            continue
        if lname == b"host":
            hosts += 1
            if AUTHORITY.fullmatch(value) is None:
                raise HTTPError(400, "invalid Host")
            req.host = value
        elif lname == b"content-length":
            lengths.append(value)
        elif lname == b"transfer-encoding":
            codings.append(value)
        elif lname == b"connection":
            connection.extend(token_list(value))
        elif lname == b"upgrade":
            upgrade = value
        elif lname == b"expect":
            if http11 and b"100-continue" in token_list(value):
                req.expect_continue = True
        elif b"trailers" in token_list(value):  # lname == b"te"
            req.te_trailers = True
    if hosts > 1:
        raise HTTPError(400, "several Host fields")
    if codings:
        if lengths:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if not http11:
            raise HTTPError(400, "Transfer-Encoding in HTTP/1.0")
        if not parse_transfer_encoding(codings, 400):
            raise HTTPError(400, "chunked must be the final coding")
        req.body = "chunked"
    elif lengths:
        length = parse_content_length(lengths, 400)
        if limits.max_body is not None and length > limits.max_body:
            raise HTTPError(413, "request body too large")
        req.content_length = length
        req.body = "length" if length else "none"
    req.keep_alive = _keeps_alive(req.version, connection)
    if http11 and upgrade is not None and b"upgrade" in connection:
        req.upgrade = upgrade


def _keeps_alive(version: tuple[int, int], connection: list[bytes]) -> bool:
    """HTTP/1.1 persists unless told to close; HTTP/1.0 only if asked to."""
    if b"close" in connection:
        return False
    return version == (1, 1) or b"keep-alive" in connection


def parse_response_head(
    head: bytes, request_method: bytes, limits: Limits | None = None
) -> ResponseHead:
    """
    Parse and check a backend's response head ending in CRLFCRLF, and work
    out how its body is delimited (RFC 9112 §6.3).

    @param limits: C{max_head} and C{max_headers} apply; defaults if C{None}.
    @raise HTTPError: 502 for anything malformed or ambiguous.
    """
    limits = limits or _DEFAULT_LIMITS
    if len(head) > limits.max_head:
        raise HTTPError(502, "response head too large")
    line_end = head.find(b"\r\n")
    if line_end < 0 or not head.endswith(b"\r\n\r\n"):
        raise HTTPError(502, "incomplete response head")
    m = STATUS_LINE.fullmatch(head, 0, line_end)
    if m is None:
        raise HTTPError(502, "invalid status line")
    if m[1] != b"1":
        raise HTTPError(502, "unsupported HTTP version")
    version = (1, 0) if m[2] == b"0" else (1, 1)
    status = int(m[3])
    if status < 100:
        raise HTTPError(502, "invalid status code")
    headers = parse_fields(head[line_end + 2 : -2], limits.max_headers, 502, 502)
    resp = ResponseHead(status, m[4] or b"", version, headers)
    lengths, codings, connection = framing_fields(headers)
    if codings and lengths:
        raise HTTPError(502, "both Content-Length and Transfer-Encoding")
    if codings and version == (1, 0):
        raise HTTPError(502, "Transfer-Encoding in HTTP/1.0")
    if lengths:
        resp.content_length = parse_content_length(lengths, 502)
    resp.keep_alive = _keeps_alive(version, connection)

    if status < 200 or status in _NO_BODY_STATUS or request_method == b"HEAD":
        resp.body = "none"
    elif codings:
        chunked = parse_transfer_encoding(codings, 502, 502)
        resp.body = "chunked" if chunked else "close"
    elif resp.content_length is not None:
        resp.body = "length" if resp.content_length else "none"
    else:
        resp.body = "close"
    if resp.body == "close":
        resp.keep_alive = False
    return resp


_DEFAULT_LIMITS = Limits()
