"""HTTP-dates (RFC 9110 §5.6.7): parsing the three formats a recipient must
accept, and writing the preferred one."""

from __future__ import annotations

import calendar
import re
from email.utils import formatdate

__all__ = ["format_date", "parse_date"]

_MONTHS = {
    name: number
    for number, name in enumerate(
        b"jan feb mar apr may jun jul aug sep oct nov dec".split(), 1
    )
}
_DAY = rb"(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = rb"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_TIME = rb"(\d\d):(\d\d):(\d\d)"
_MONTH = rb"([a-z]{3})"
#: IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(_DAY + rb", (\d\d) " + _MONTH + rb" (\d{4}) " + _TIME + rb" gmt")
#: obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(
    _LONG_DAY + rb", (\d\d)-" + _MONTH + rb"-(\d\d) " + _TIME + rb" gmt"
)
#: obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(_DAY + rb" " + _MONTH + rb" ([ \d]\d) " + _TIME + rb" (\d{4})")


def parse_date(value: bytes | None) -> float | None:
    """
    The time (seconds since the epoch) an HTTP-date stands for, or C{None}
    for no value or one that is not an HTTP-date.  Names are matched in any
    case; a zone other than GMT is not an HTTP-date.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if (m := _IMF.fullmatch(text)) is not None:
        day, month, year, hour, minute, second = m.groups()
    elif (m := _RFC850.fullmatch(text)) is not None:
        day, month, short, hour, minute, second = m.groups()
        # RFC 9110: a two-digit year more than 50 years ahead is in the past.
        year = b"%d" % ((1900 if int(short) >= 70 else 2000) + int(short))
    elif (m := _ASCTIME.fullmatch(text)) is not None:
        month, day, hour, minute, second, year = m.groups()
    else:
        return None
    number = _MONTHS.get(month)
    if number is None:
        return None
    fields = (int(year), number, int(day), int(hour), int(minute), int(second))
    if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60):
        return None
    if fields[5] > 60:
        return None
    return float(calendar.timegm((*fields, 0, 0, 0)))


def format_date(when: float) -> bytes:
    """
    C{when} (seconds since the epoch) as an IMF-fixdate.
    """
    return formatdate(int(when), usegmt=True).encode("ascii")
