"""Cache directives (RFC 9111 §5.2): C{Cache-Control} parsed into a mapping,
targeted fields such as C{CDN-Cache-Control} (RFC 9213, Structured Field
dictionaries, RFC 8941), and which of them governs a response.

Decisions worth knowing:

  - A directive given twice keeps its first value (RFC 9111 §4.2.1 allows
    the first occurrence, or treating the response as stale).
  - An item that is not C{token [= token / quoted-string]} (C{max-age =5},
    C{max-age='5'}) is ignored, as is the rest of it up to the next comma
    outside a quoted string; a quoted argument is unquoted, so
    C{max-age="5"} is 5 and C{extension="max-age=5"} holds no max-age.
  - delta-seconds are digits only (C{003600} is 3600; C{5.0}, C{-1}, C{a5}
    are invalid, which the freshness rules read as stale), capped at 2**31.
  - A targeted field that is not a valid dictionary, or whose C{max-age},
    C{s-maxage}, C{stale-while-revalidate} or C{stale-if-error} is not an
    Integer, is ignored (RFC 9213 §2.1: the next target, then
    C{Cache-Control}, applies); a boolean false member is absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from attrs import frozen

__all__ = [
    "DELTA_MAX",
    "Directives",
    "Policy",
    "delta_seconds",
    "field_values",
    "parse_cache_control",
    "parse_targeted",
    "response_policy",
]

Fields = Sequence[tuple[bytes, bytes]]
#: directive name (lower case) -> its argument (unquoted), None for none.
Directives = dict[bytes, bytes | None]

#: the greatest delta-seconds a cache need represent (RFC 9111 §1.2.2).
DELTA_MAX = 2**31

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_OWS = b" \t"
_DIGITS = re.compile(rb"[0-9]+")
#: targeted-field directives whose value must be an Integer (RFC 9213 §2.2).
_INTEGERS = frozenset(
    {b"max-age", b"s-maxage", b"stale-while-revalidate", b"stale-if-error"}
)


def field_values(headers: Fields, name: bytes) -> list[bytes]:
    """
    The values of every field line called C{name} (lower case), in order.
    """
    return [value for key, value in headers if key.lower() == name]


def delta_seconds(argument: bytes | None) -> int | None:
    """
    A directive's delta-seconds argument as an int (at most L{DELTA_MAX}),
    or C{None} when it is missing or not digits.
    """
    if argument is None or _DIGITS.fullmatch(argument) is None:
        return None
    return min(int(argument), DELTA_MAX)


def parse_cache_control(values: Iterable[bytes]) -> Directives:
    """
    The directives of C{Cache-Control} field values (one per field line).
    """
    out: Directives = {}
    for value in values:
        for name, argument in _items(value):
            out.setdefault(name, argument)
    return out


def _items(value: bytes) -> Iterable[tuple[bytes, bytes | None]]:
    i, end = 0, len(value)
    while i < end:
        while i < end and value[i : i + 1] in (b" ", b"\t", b","):
            i += 1
        if i >= end:
            return
        m = _TOKEN.match(value, i)
        good = m is not None
        argument: bytes | None = None
        if m is not None:
            name = m[0].lower()
            i = m.end()
            if value[i : i + 1] == b"=":
                arg = _QUOTED.match(value, i + 1) or _TOKEN.match(value, i + 1)
                if arg is None:
                    good = False
                else:
                    argument = (
                        re.sub(rb"\\(.)", rb"\1", arg[1])
                        if arg[0][:1] == b'"'
                        else arg[0]
                    )
                    i = arg.end()
            while i < end and value[i : i + 1] in (b" ", b"\t"):
                i += 1
            if i < end and value[i : i + 1] != b",":
                good = False
        if not good:
            i = _skip_item(value, i)
            continue
        yield name, argument


def _skip_item(value: bytes, i: int) -> int:
    """The index of the comma ending the item around C{i} (outside quotes)."""
    quoted = False
    while i < len(value):
        c = value[i : i + 1]
        if quoted and c == b"\\":
            i += 2
            continue
        if c == b'"':
            quoted = not quoted
        elif c == b"," and not quoted:
            return i
        i += 1
    return i


# Structured Field dictionaries (RFC 8941 §4.2.2), enough to tell a valid
# targeted field and read its members.

_KEY = re.compile(rb"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(rb"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_NUMBER = re.compile(rb"-?[0-9]{1,15}(\.[0-9]{1,3})?")
_SF_STRING = re.compile(rb'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_SF_BINARY = re.compile(rb":[A-Za-z0-9+/=]*:")

#: a member's value: an integer, a decimal, bytes (a string or token),
#: True/False, or None for an inner list or binary (never a directive).
_Value = int | float | bytes | bool | None


class _InvalidError(ValueError):
    pass


def parse_targeted(values: Sequence[bytes]) -> Directives | None:
    """
    The directives of a targeted field's values (RFC 9213), or C{None} when
    they are empty or not a valid dictionary (the field is then ignored).
    """
    text = b",".join(values).strip(_OWS)
    if not text:
        return None
    try:
        members = _sf_dictionary(text)
    except _InvalidError:
        return None
    out: Directives = {}
    for key, value in members.items():
        if key in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
            return None
        if value is True:
            out[key] = None
        elif value is False or value is None:
            continue
        elif isinstance(value, bytes):
            out[key] = value
        elif isinstance(value, int):
            out[key] = b"%d" % value if value >= 0 else b"-"
        else:
            out[key] = repr(value).encode("ascii")
    return out


def _sf_dictionary(text: bytes) -> dict[bytes, _Value]:
    members: dict[bytes, _Value] = {}
    i, end = 0, len(text)
    while True:
        m = _KEY.match(text, i)
        if m is None:
            raise _InvalidError("bad key")
        key, i = m[0], m.end()
        value: _Value = True
        if text[i : i + 1] == b"=":
            value, i = _sf_member(text, i + 1)
        i = _sf_parameters(text, i)
        members[key] = value  # a later duplicate wins (RFC 8941)
        while i < end and text[i : i + 1] in (b" ", b"\t"):
            i += 1
        if i >= end:
            return members
        if text[i : i + 1] != b",":
            raise _InvalidError("no comma")
        i += 1
        while i < end and text[i : i + 1] in (b" ", b"\t"):
            i += 1
        if i >= end:
            raise _InvalidError("trailing comma")


def _sf_member(text: bytes, i: int) -> tuple[_Value, int]:
    if text[i : i + 1] == b"(":
        i += 1
        while True:
            while text[i : i + 1] == b" ":
                i += 1
            if text[i : i + 1] == b")":
                return None, _sf_parameters(text, i + 1)
            if i >= len(text):
                raise _InvalidError("open inner list")
            _, i = _sf_bare(text, i)
            i = _sf_parameters(text, i)
            if text[i : i + 1] not in (b" ", b")"):
                raise _InvalidError("bad inner list")
    return _sf_bare(text, i)


def _sf_bare(text: bytes, i: int) -> tuple[_Value, int]:
    c = text[i : i + 1]
    if c == b"?":
        flag = text[i + 1 : i + 2]
        if flag not in (b"0", b"1"):
            raise _InvalidError("bad boolean")
        return flag == b"1", i + 2
    if c == b'"':
        m = _SF_STRING.match(text, i)
        if m is None:
            raise _InvalidError("bad string")
        return re.sub(rb"\\(.)", rb"\1", m[1]), m.end()
    if c == b":":
        m = _SF_BINARY.match(text, i)
        if m is None:
            raise _InvalidError("bad binary")
        return None, m.end()
    if c == b"-" or c.isdigit():
        m = _SF_NUMBER.match(text, i)
        if m is None or (m[1] is None and len(m[0].lstrip(b"-")) > 15):
            raise _InvalidError("bad number")
        if m[1] is not None:
            if len(m[0].lstrip(b"-").split(b".")[0]) > 12:
                raise _InvalidError("bad decimal")
            return float(m[0]), m.end()
        return int(m[0]), m.end()
    m = _SF_TOKEN.match(text, i)
    if m is None:
        raise _InvalidError("bad item")
    return m[0], m.end()


def _sf_parameters(text: bytes, i: int) -> int:
    while text[i : i + 1] == b";":
        i += 1
        while text[i : i + 1] == b" ":
            i += 1
        m = _KEY.match(text, i)
        if m is None:
            raise _InvalidError("bad parameter")
        i = m.end()
        if text[i : i + 1] == b"=":
            _, i = _sf_bare(text, i + 1)
    return i


@frozen
class Policy:
    """
    The directives that govern one response in a cache.

    @ivar directives: from the first valid targeted field, else from
        C{Cache-Control}.
    @ivar targeted: they came from a targeted field (then C{Expires} and
        C{Cache-Control} do not count for caching).
    """

    directives: Directives
    targeted: bool = False

    def __contains__(self, name: bytes) -> bool:
        return name in self.directives

    def seconds(self, name: bytes) -> int | None:
        """
        A delta-seconds directive's value; C{None} if absent or invalid.
        """
        return delta_seconds(self.directives.get(name))


def response_policy(headers: Fields, targets: Sequence[bytes] = ()) -> Policy:
    """
    The caching policy of a response with C{headers}, for a cache that obeys
    the targeted fields C{targets} (lower-case names, in precedence order).
    """
    for target in targets:
        values = field_values(headers, target)
        if values:
            directives = parse_targeted(values)
            if directives is not None:
                return Policy(directives, targeted=True)
    return Policy(parse_cache_control(field_values(headers, b"cache-control")))
