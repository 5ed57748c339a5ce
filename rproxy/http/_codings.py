"""The decisions of response compression: which coding a request accepts
(L{choose_coding}, RFC 9110 §12.5.3), which media types are compressed
(L{MediaTypes}), which responses must go as they are (L{scan_response}),
and the fields a coded response gets (L{add_vary}, L{weaken_etag}).  Pure
functions, no I/O; the encoders are in L{rproxy.http._encoders}.

Choosing a coding, in detail:

  - Several C{Accept-Encoding} fields are read as one comma-joined list
    (RFC 9110 §5.3).  No field at all means identity: the RFC allows any
    coding then, but clients that send none (scripts, C{curl} without
    C{--compressed}) mostly cannot decode one.  An empty field means
    identity too.
  - Coding names ignore case; C{x-gzip} is C{gzip} (RFC 9110 §8.4.1.3).
  - A coding not listed takes the weight of C{*}, if listed, else 0.
  - A coding listed twice takes the lowest weight given, so a C{q=0}
    anywhere refuses it; an element whose weight is not a valid qvalue is
    ignored.
  - The coding of highest weight wins, ties going to the earlier of
    C{prefer}; identity wins only if its own weight (or that of C{*}) is
    higher than the best coding's.  Identity is never refused in practice:
    when the client refused it (C{identity;q=0}) and no coding is left, the
    response goes as it is rather than as a 406.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "CODINGS",
    "DIGESTS",
    "LEVELS",
    "MediaTypes",
    "accept_weights",
    "add_vary",
    "choose_coding",
    "media_range",
    "scan_response",
    "tokens",
    "weaken_etag",
]

#: the codings rproxy can apply, and the levels each accepts (zstd stops at
#: 19: higher levels' windows pass the 8 MiB RFC 9659 allows in HTTP).
LEVELS = {"gzip": range(1, 10), "br": range(0, 12), "zstd": range(1, 20)}
CODINGS = tuple(LEVELS)
#: digests of a body's bytes as sent, wrong once the body is coded anew.
DIGESTS = frozenset({b"content-digest", b"repr-digest", b"digest", b"content-md5"})

Fields = list[tuple[bytes, bytes]]

_ALIASES = {"x-gzip": "gzip"}
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", re.ASCII)
#: a weight, in thousandths.
_FULL = 1000
#: the only names these fields may list in a response that is compressed
#: (the empty name: an empty value, or an empty list element).
_ALLOWED = {
    b"content-encoding": frozenset({b"", b"identity"}),
    b"transfer-encoding": frozenset({b"", b"chunked"}),
}
# RFC 9110 token characters but "*".
_NAME = r"[!#$%&'+\-.^_`|~0-9a-z]+"
_MEDIA_RANGE = re.compile(rf"{_NAME}/(?:{_NAME}|\*|\*\+{_NAME})", re.ASCII)


def _qvalue(text: str) -> int | None:
    """
    A qvalue (C{"0.5"}, C{"1"}, C{"0.125"}) in thousandths, or None if it is
    not one (RFC 9110 §12.4.2).
    """
    if _QVALUE.fullmatch(text) is None:
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * _FULL + int(fraction.ljust(3, "0"))


def accept_weights(values: Iterable[bytes]) -> dict[str, int]:
    """
    The weight (thousandths) given to each coding named in the
    C{Accept-Encoding} field C{values}, names lowercased, aliases resolved.
    """
    weights: dict[str, int] = {}
    for value in values:
        for element in value.decode("latin-1").split(","):
            name, *params = element.split(";")
            coding = name.strip().lower()
            if not coding:
                continue
            weight: int | None = _FULL
            for param in params:
                key, _, text = param.strip().partition("=")
                if key.strip().lower() == "q":
                    weight = _qvalue(text.strip())
            if weight is None:
                continue
            coding = _ALIASES.get(coding, coding)
            weights[coding] = min(weight, weights.get(coding, _FULL))
    return weights


def choose_coding(values: Sequence[bytes], prefer: Sequence[str]) -> str | None:
    """
    The coding of C{prefer} to apply for a request with the
    C{Accept-Encoding} field C{values} (as the module docstring says), or
    None for identity.
    """
    if not values:
        return None
    weights = accept_weights(values)
    anything = weights.get("*", 0)
    best, best_weight = None, 0
    for coding in prefer:
        weight = weights.get(coding, anything)
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is None:
        return None
    identity = weights.get("identity", weights.get("*", 0))
    return None if identity > best_weight else best


def media_range(value: object) -> str:
    """
    C{"type/subtype"}, C{"type/*"} or C{"type/*+suffix"}, lowercased.
    """
    text = value.strip().lower() if isinstance(value, str) else ""
    if _MEDIA_RANGE.fullmatch(text) is None:
        raise ValueError(
            "must be a media type ('application/json'), all of a type ('text/*')"
            f" or a structured suffix ('application/*+json'), got {value!r}"
        )
    return text


class MediaTypes:
    """The media ranges of some settings, to test a media type against."""

    __slots__ = ("exact", "kinds", "suffixes")

    def __init__(self, ranges: Iterable[str]) -> None:
        ranges = tuple(ranges)
        self.exact = frozenset(one for one in ranges if "*" not in one)
        self.kinds = frozenset(one[:-2] for one in ranges if one.endswith("/*"))
        self.suffixes = frozenset(
            (one.partition("/")[0], one.partition("+")[2])
            for one in ranges
            if "/*+" in one
        )

    def __contains__(self, media_type: str) -> bool:
        if media_type in self.exact:
            return True
        kind, _, subtype = media_type.partition("/")
        if kind in self.kinds:
            return True
        suffix = subtype.rpartition("+")[2] if "+" in subtype else None
        return suffix is not None and (kind, suffix) in self.suffixes


def tokens(value: bytes) -> list[bytes]:
    """The lowercased names in a comma-separated field value (parameters,
    as in C{max-age=60}, left out)."""
    return [one.split(b"=", 1)[0].strip().lower() for one in value.split(b",")]


def scan_response(headers: Fields) -> tuple[str | None, bool]:
    """
    Whether a response with C{headers} must go as it is (it has
    C{Cache-Control: no-transform}, a C{Content-Encoding} but identity, a
    C{Content-Range}, or a transfer coding but chunked), and if not, its
    media type (None if it states none).
    """
    media_type = None
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-type":
            if media_type is None:
                media_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            continue
        if lname == b"content-range" or (
            lname == b"cache-control" and b"no-transform" in tokens(value)
        ):
            return media_type, True
        allowed = _ALLOWED.get(lname)
        if allowed is not None and not allowed.issuperset(tokens(value)):
            return media_type, True
    return media_type, False


def add_vary(headers: Fields) -> None:
    """
    Make C{headers} say the response varies on C{Accept-Encoding}, merged
    into the first C{Vary} field if there is one.
    """
    first = None
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            names = tokens(value)
            if b"*" in names or b"accept-encoding" in names:
                return
            if first is None:
                first = index
    if first is None:
        headers.append((b"Vary", b"Accept-Encoding"))
        return
    name, value = headers[first]
    value = value.strip()
    headers[first] = (
        name,
        value + b", Accept-Encoding" if value else b"Accept-Encoding",
    )


def weaken_etag(headers: Fields) -> None:
    """
    Make a strong C{ETag} of C{headers} weak: C{"x"} becomes C{W/"x"}.
    """
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"etag" and value.startswith(b'"'):
            headers[index] = (name, b"W/" + value)
