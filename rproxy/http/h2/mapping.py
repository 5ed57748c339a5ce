"""HTTP/2 header lists to and from the exchange's heads (RFC 9113 section
8): L{request_head} checks a request's header list and maps its
pseudo-header fields onto a L{RequestHead} (C{:authority} as the Host);
L{response_headers} turns a L{ResponseHead} into a header list without the
fields HTTP/2 forbids.

Pure functions, no I/O.  A malformed request (section 8.1.1) raises
L{Malformed}, which the codec answers with RST_STREAM (PROTOCOL_ERROR); a
well-formed one rproxy will not serve raises L{Refused} with the status to
answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rproxy.http._grammar import AUTHORITY, TARGET_CHARS, TOKEN
from rproxy.http.framing import Body, Limits, RequestHead, ResponseHead

__all__ = [
    "Malformed",
    "Refused",
    "request_head",
    "response_headers",
    "trailer_fields",
]

#: fields connection-specific in HTTP/1.1 that HTTP/2 forbids (section
#: 8.2.2); C{te} is allowed only as C{trailers}.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding"}
    | {b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_LOWER_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# A field value may not hold NUL, CR or LF, nor start or end with
# whitespace (section 8.2.1).
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


class Malformed(Exception):  # noqa: N818 (a verdict, not an error of rproxy's)
    """A malformed request (RFC 9113 section 8.1.1): a stream error."""


class Refused(Exception):  # noqa: N818 (a verdict, not an error of rproxy's)
    """
    A well-formed request rproxy does not serve: answer C{status}.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def request_head(
    headers: Iterable[tuple[bytes, bytes]], ended: bool, limits: Limits
) -> RequestHead:
    """
    The L{RequestHead} of an HTTP/2 request whose header list is
    C{headers}; C{ended} when its HEADERS frame ended the stream (no body).
    A body without C{content-length} is sent to the backend chunked.

    @raise Malformed: see section 8.1.1 and 8.3.1.
    @raise Refused: CONNECT (501), a target too long (414), too many
        fields (431), an absolute or asterisk form where it cannot be, a
        body larger than C{limits.max_body} (413).
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    hosts: list[bytes] = []
    lengths: set[bytes] = set()
    te_trailers = False
    for name, value in headers:
        if _BAD_VALUE.search(value):
            raise Malformed(f"bad value for {name!r}")
        if name.startswith(b":"):
            if fields or cookies or hosts:
                raise Malformed("a pseudo-header field after a regular one")
            if name == b":protocol":
                # Extended CONNECT (RFC 8441) is not offered.
                raise Malformed(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
            if name not in _REQUEST_PSEUDO or name in pseudo:
                raise Malformed(f"pseudo-header field {name!r}")
            pseudo[name] = value
            continue
        if not _LOWER_TOKEN.fullmatch(name):
            raise Malformed(f"field name {name!r}")
        if name in CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("te other than trailers")
            te_trailers = True
        elif name == b"cookie":
            cookies.append(value)
            continue
        elif name == b"host":
            hosts.append(value)
            continue
        elif name == b"content-length":
            lengths.add(value)
        fields.append((name, value))
    method = pseudo.get(b":method")
    if method is None or not TOKEN.fullmatch(method):
        raise Malformed("no valid :method")
    if method == b"CONNECT":
        raise Refused(501, "CONNECT not supported")
    path, scheme = pseudo.get(b":path"), pseudo.get(b":scheme")
    if not path or scheme is None:
        raise Malformed("no :path or no :scheme")
    if path == b"*":
        if method != b"OPTIONS":
            raise Refused(400, "* is for OPTIONS only")
    elif not path.startswith(b"/"):
        raise Refused(400, "not an origin-form :path")
    if len(path) > limits.max_target:
        raise Refused(414, "target too long")
    if not TARGET_CHARS.fullmatch(path) or b"#" in path:
        raise Refused(400, "bad characters in :path")
    host = pseudo.get(b":authority", hosts[0] if hosts else None)
    if host is not None and (not host or not AUTHORITY.fullmatch(host)):
        raise Malformed("bad :authority")
    if b"@" in (host or b""):
        raise Malformed("userinfo in :authority")
    if cookies:
        # Several cookie fields become one for HTTP/1.1 (section 8.2.3).
        fields.append((b"cookie", b"; ".join(cookies)))
    if len(fields) > limits.max_headers:
        raise Refused(431, "too many header fields")
    if host is not None:
        fields.insert(0, (b"Host", host))
    length = _content_length(lengths)
    body: Body
    if ended:
        if length:
            raise Malformed("content-length but no DATA")
        body = "none"
    elif length is not None:
        body = "length" if length else "none"
    else:
        body = "chunked"
    if length is not None and limits.max_body is not None and length > limits.max_body:
        raise Refused(413, "body too large")
    return RequestHead(
        method,
        path,
        (2, 0),
        fields,
        host=host,
        body=body,
        content_length=length,
        te_trailers=te_trailers,
    )


def _content_length(values: set[bytes]) -> int | None:
    if not values:
        return None
    if len(values) > 1:
        raise Malformed("content-length values differ")
    value = next(iter(values))
    if not value.isdigit() or len(value) > 18:
        raise Malformed("content-length not a number")
    return int(value)


def response_headers(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """
    The HTTP/2 header list of C{head} (its fields already forwarded): the
    C{:status} first, names lowercased, connection-specific fields and a
    C{te} dropped; the C{content-length} kept where the body has one.
    """
    out = [(b":status", b"%d" % head.status)]
    append = out.append
    for name, value in head.headers:
        lname = name.lower()
        if lname in CONNECTION_SPECIFIC or lname == b"te":
            continue
        append((lname, value))
    return out


def trailer_fields(
    trailers: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """
    Response trailers for HTTP/2: names lowercased, connection-specific
    fields and pseudo-headers dropped.
    """
    return [
        (name.lower(), value)
        for name, value in trailers
        if name.lower() not in CONNECTION_SPECIFIC
        and name.lower() != b"te"
        and not name.startswith(b":")
    ]
