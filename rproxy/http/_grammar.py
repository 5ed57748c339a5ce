"""HTTP/1.1 grammar (RFC 9110, RFC 9112) as precompiled patterns and the
field-section, Content-Length and Transfer-Encoding rules built on them.

Private to L{rproxy.http.framing}; nothing here does I/O.
"""

from __future__ import annotations

import re

from mypy_extensions import mypyc_attr

__all__ = [
    "HTTPError",
    "framing_fields",
    "parse_chunk_size",
    "parse_content_length",
    "parse_fields",
    "parse_transfer_encoding",
    "parse_version",
    "token_list",
]

# tchar (RFC 9110 §5.6.2), without the brackets so it can be combined.
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# field-value characters: VCHAR / obs-text / SP / HTAB, nothing else.
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
# One pass over a whole field section: field-name ":" OWS field-value CRLF.
# obs-fold, whitespace before the colon, CTLs and bare CR all fail to match.
FIELD_SECTION = re.compile(rb"(?:[" + _TCHAR + rb"]+:" + _VALUE + rb"\r\n)*")
_match_section = FIELD_SECTION.fullmatch
_FIELD_LINE = re.compile(rb"[" + _TCHAR + rb"]+:" + _VALUE)
_QUOTED_STRING = rb'"(?:[\t !\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
# chunk = chunk-size [ chunk-ext ] (RFC 9112 §7.1, §7.1.1); size bounded.
CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*["
    + _TCHAR
    + rb"]+(?:[ \t]*=[ \t]*(?:["
    + _TCHAR
    + rb"]+|"
    + _QUOTED_STRING
    + rb"))?)*)"
)
# request-target characters we forward: VCHAR except "#" (never sent).
TARGET_CHARS = re.compile(rb"[\x21\x22\x24-\x7e]*")
# uri-host [ ":" port ] for Host and authority-form (no userinfo).
AUTHORITY = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
    rb"|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?"
)
ABSOLUTE_FORM = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?]*)(.*)")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: (" + _VALUE + rb"))?")
_MAX_CONTENT_LENGTH_DIGITS = 18


# Interpreted code may subclass it when this module is compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
class HTTPError(Exception):
    """
    A message that cannot be framed or is refused.

    @ivar status: the status code to answer with (400, 413, 431, 502, ...).
    @ivar reason: a short fixed phrase, safe to show a client; never contains
        any of the received bytes.
    """

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


def parse_fields(
    section: bytes, max_fields: int, bad_status: int, too_many_status: int = 431
) -> list[tuple[bytes, bytes]]:
    """
    Split a field section (lines each ending in CRLF, without the final
    empty line) into C{(name, value)} pairs, values stripped of OWS.

    @raise HTTPError: C{bad_status} for any grammar violation,
        C{too_many_status} for more than C{max_fields} lines.
    """
    if not section:
        return []
    if section.count(b"\n") > max_fields:
        raise HTTPError(too_many_status, "too many header fields")
    if _match_section(section) is None:
        raise HTTPError(bad_status, _diagnose(section))
    fields = []
    for line in section[:-2].split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


def _diagnose(section: bytes) -> str:
    """Name the first problem in a field section that failed to match."""
    for line in section.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding"
        name, colon, _ = line.partition(b":")
        if not colon:
            return "header line without a colon"
        if name[-1:] in (b" ", b"\t"):
            return "whitespace before colon"
        if TOKEN.fullmatch(name) is None:
            return "invalid header name"
        if _FIELD_LINE.fullmatch(line) is None:
            return "invalid character in header value"
    return "malformed header section"


def token_list(value: bytes) -> list[bytes]:
    """The lowercased, non-empty elements of a comma-separated list."""
    if b"," not in value:
        value = value.strip(b" \t").lower()
        return [value] if value else []
    return [e for e in (e.strip(b" \t").lower() for e in value.split(b",")) if e]


def parse_content_length(values: list[bytes], bad_status: int) -> int:
    """
    The one length all Content-Length values agree on.

    A list of identical values (C{5, 5}, or two fields both C{5}) is accepted,
    as RFC 9110 §8.6 allows; anything else than 1*DIGIT, or values that
    differ, is refused.
    """
    length = -1
    for value in values:
        for element in value.split(b","):
            element = element.strip(b" \t")
            if (
                not element.isdigit()
                or len(element) > _MAX_CONTENT_LENGTH_DIGITS
                or (length >= 0 and int(element) != length)
            ):
                raise HTTPError(bad_status, "invalid Content-Length")
            length = int(element)
    return length


def parse_transfer_encoding(
    values: list[bytes], bad_status: int, unsupported_status: int = 501
) -> bool:
    """
    Whether the codings end in C{chunked}, the only framing we decode.

    C{chunked} anywhere but last, twice, or a coding that is not a token is
    refused with C{bad_status}.  Other codings before a final C{chunked}
    are refused with C{unsupported_status} (RFC 9112 §6.1: a coding we do
    not implement).

    @return: C{True} for a lone final C{chunked}, C{False} when the codings
        do not end in C{chunked} (a request must refuse that; a response is
        then read until the connection closes).
    """
    codings = token_list(b",".join(values))
    if not codings:
        raise HTTPError(bad_status, "empty Transfer-Encoding")
    for coding in codings:
        if TOKEN.fullmatch(coding) is None:
            raise HTTPError(bad_status, "invalid Transfer-Encoding")
    if b"chunked" in codings[:-1]:
        raise HTTPError(bad_status, "chunked must be the final coding, once")
    if codings[-1] != b"chunked":
        return False
    if len(codings) > 1:
        raise HTTPError(unsupported_status, "transfer coding not implemented")
    return True


def parse_version(text: bytes) -> tuple[int, int]:
    """
    An HTTP version outside the common two, read as 1.0 or 1.1.

    @raise HTTPError: 400 if malformed, 505 if not HTTP/1.x.
    """
    m = VERSION.fullmatch(text)
    if m is None:
        raise HTTPError(400, "invalid request line")
    if m[1] != b"1":
        raise HTTPError(505, "HTTP version not supported")
    return (1, 0) if m[2] == b"0" else (1, 1)


def framing_fields(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The Content-Length and Transfer-Encoding values and Connection tokens."""
    lengths, codings, connection = [], [], []
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            lengths.append(value)
        elif lname == b"transfer-encoding":
            codings.append(value)
        elif lname == b"connection":
            connection.extend(token_list(value))
    return lengths, codings, connection


def parse_chunk_size(line: bytes, bad_status: int) -> int:
    """The size from a chunk-size line ending in CR, extensions checked."""
    if line[-1:] != b"\r":
        raise HTTPError(bad_status, "invalid chunk size line")
    m = CHUNK_LINE.fullmatch(line, 0, len(line) - 1)
    if m is None:
        raise HTTPError(bad_status, "invalid chunk size or extension")
    return int(m[1], 16)
