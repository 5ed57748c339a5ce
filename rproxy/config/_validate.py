"""Generic checks for parsed TOML: types, ranges, unknown keys, collected problems.

L{rproxy.config} reads each table through a L{Table}, which reports every
problem to a shared L{Problems} instead of stopping at the first one.  A
converter is a plain function that returns the checked value or raises
C{ValueError} with a message fit for the user (C{"must be ..., got ..."}).
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from attrs import fields_dict
from twisted.internet.endpoints import serverFromString

T = TypeVar("T")
D = TypeVar("D")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STATUS_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", re.ASCII)
#: RFC 9110 token characters: what a header name is made of.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Problems:
    """
    Every problem found in one config source, each as C{"SOURCE: PATH: problem"}.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, problem: str) -> None:
        self.lines.append(f"{self.source}: {path}: {problem}")


def child(path: str, key: str) -> str:
    """
    The path of C{key} inside the table at C{path}; odd keys are quoted as
    TOML would (C{pools."a.b"}).
    """
    name = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{name}" if path else name


def item(path: str, index: int) -> str:
    """
    The path of element C{index} of the array at C{path}.
    """
    return f"{path}[{index}]"


def show(value: object) -> str:
    """
    Render a TOML value for a message, as the user wrote it where possible.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date/time ({value})"
    return repr(value)


def quoted(words: Collection[str]) -> str:
    """
    C{'a', 'b', 'c'}.
    """
    return ", ".join(repr(word) for word in words)


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """
    C{"did you mean 'x'?"} for the closest of C{choices}, or C{""}.
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def model_keys(cls: type, *computed: str) -> tuple[str, ...]:
    """
    The file keys of an attrs model class: its fields, less those C{computed}.
    """
    return tuple(key for key in fields_dict(cls) if key not in computed)


# Converters -----------------------------------------------------------------


def string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {show(value)}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {show(value)}")
    return value


def positive_int(value: object) -> int:
    # bool is a subclass of int, but "weight = true" is a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {show(value)}")
    return value


def non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {show(value)}")
    return value


_SIZE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?\s*", re.ASCII)
_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


def byte_size(value: object) -> int:
    """
    A size in bytes: a positive integer, or a string with a unit
    (C{"256MiB"}, C{"10GiB"}, C{"512KiB"}, C{"1GB"}).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        size = int(match[1]) * _UNITS[match[2]]
        if size > 0:
            return size
    raise ValueError(
        "must be a size in bytes: a positive integer or a string such as "
        f"'512KiB', '256MiB' or '10GiB', got {show(value)}"
    )


def fraction(value: object) -> float:
    """
    A share from 0 to 1 (a percentage is refused, naming the fraction it
    meant).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 0 <= value <= 1:
            return float(value)
        if 1 < value <= 100:
            raise ValueError(
                f"must be a fraction from 0 to 1, got {show(value)}; "
                f"for {value:g}% write {value / 100:g}"
            )
    raise ValueError(f"must be a fraction from 0 to 1 (0.5: half), got {show(value)}")


def port_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"must be a port number 1-65535, got {show(value)}")
    return value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def positive_number(value: object) -> float:
    number = _number(value)
    if number is None or number <= 0:
        raise ValueError(f"must be a positive number, got {show(value)}")
    return number


def non_negative_number(value: object) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise ValueError(f"must be a number >= 0, got {show(value)}")
    return number


def one_of(choices: Sequence[str]) -> Callable[[object], str]:
    """
    A converter that accepts exactly one of the strings C{choices}.
    """

    def convert(value: object) -> str:
        if isinstance(value, str) and value in choices:
            return value
        message = f"must be one of {quoted(choices)}, got {show(value)}"
        if isinstance(value, str) and (hint := did_you_mean(value, choices)):
            message += f"; {hint}"
        raise ValueError(message)

    return convert


def http_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be a path starting with '/', got {show(value)}")
    return value


def status_range(value: object) -> tuple[int, int]:
    """
    C{200}, C{"200"} or C{"200-399"} as an inclusive range.
    """
    usage = f"must be a status (200) or a range ('200-399'), got {show(value)}"
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (match := _STATUS_RANGE.fullmatch(value)):
        lo, hi = int(match[1]), int(match[2] or match[1])
    else:
        raise ValueError(usage)
    if not (100 <= lo <= 599 and 100 <= hi <= 599):
        raise ValueError(f"status codes must be 100-599, got {show(value)}")
    if lo > hi:
        raise ValueError(f"range start {lo} is above its end {hi}")
    return lo, hi


def header_name(value: object) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise ValueError(
            f"must be a header name (an RFC 9110 token), got {show(value)}"
        )
    return value


def ip_network(value: object) -> str:
    """
    An IP address or network (C{"10.0.0.0/8"}, C{"::1"}), as written; host
    bits may be set (C{"10.0.0.1/8"} means 10.0.0.0/8).
    """
    if isinstance(value, str):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(
        f"must be an IP address or network ('10.0.0.0/8', '::1'), got {show(value)}"
    )


def server_endpoint(value: object) -> str:
    text = string(value)
    try:
        serverFromString(None, text)
    except Exception as e:
        raise ValueError(f"invalid endpoint {text!r}: {e}") from None
    return text


# Tables ---------------------------------------------------------------------


class Table:
    """
    Typed reads from one TOML table, reporting problems under its path.

    Unknown keys are reported on construction.  A key whose value is wrong is
    reported and read as its default, so that checking can go on.
    """

    def __init__(
        self,
        problems: Problems,
        path: str,
        data: Mapping[str, object],
        known: Collection[str],
    ) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        for key in data:
            if key not in known:
                hint = did_you_mean(key, known)
                self.problems.add(
                    child(path, key),
                    f"unknown key, {hint}"
                    if hint
                    else f"unknown key; known keys are {quoted(known)}",
                )

    @classmethod
    def open(
        cls,
        problems: Problems,
        path: str,
        data: object,
        known: Collection[str],
    ) -> Table | None:
        """
        A L{Table} over C{data}, or None (with a problem) if it is no table.
        """
        if not isinstance(data, Mapping):
            problems.add(path, f"must be a table, got {show(data)}")
            return None
        return cls(problems, path, data, known)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def report(self, key: str, problem: str) -> None:
        """
        Report a problem with the value of C{key}.
        """
        self.problems.add(child(self.path, key), problem)

    def get(self, key: str, convert: Callable[[object], T], default: D) -> T | D:
        """
        The value of C{key} passed through C{convert}, or C{default} if it is
        missing or wrong.
        """
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except ValueError as e:
            self.report(key, str(e))
            return default

    def require(self, key: str, convert: Callable[[object], T]) -> T | None:
        """
        Like L{get}, but a missing key is a problem too.
        """
        if key not in self.data:
            self.report(key, "missing required key")
            return None
        return self.get(key, convert, None)

    def nonempty(self, key: str, kind: type[T], need: str) -> T | None:
        """
        The value of C{key} if it is a C{kind} (C{list} or C{dict}) with
        something in it; None, with a problem ending in C{need}, if not.
        """
        if key not in self.data:
            self.report(key, f"missing: {need}")
            return None
        value = self.data[key]
        if not isinstance(value, kind):
            noun = "an array" if kind is list else "a table"
            self.report(key, f"must be {noun}, got {show(value)}")
            return None
        if not value:
            self.report(key, f"is empty: {need}")
            return None
        return value

    def array(self, key: str, convert: Callable[[object], T]) -> tuple[T, ...]:
        """
        Every element of the array C{key} passed through C{convert}; C{()} if
        it is missing.  A value that is no array, and each wrong element
        (under its own path, C{key[i]}), is reported and left out.
        """
        if key not in self.data:
            return ()
        value = self.data[key]
        if not isinstance(value, list):
            self.report(key, f"must be an array, got {show(value)}")
            return ()
        path = child(self.path, key)
        converted = []
        for index, element in enumerate(value):
            try:
                converted.append(convert(element))
            except ValueError as e:
                self.problems.add(item(path, index), str(e))
        return tuple(converted)

    def named(
        self,
        key: str,
        noun: str,
        known: Collection[str],
        build: Callable[[Table, str], T | None],
    ) -> dict[str, T | None]:
        """
        The C{[KEY.NAME]} tables, each read by C{build(table, name)}, by
        name; a broken one is None, so that what names it is not reported
        too.  C{noun} names them in the problem when C{key} is no table.
        """
        found: dict[str, T | None] = {}
        if key not in self.data:
            return found
        raw = self.data[key]
        if not isinstance(raw, dict):
            self.report(key, f"must be a table of named {noun}, as [{key}.NAME]")
            return found
        for name, data in raw.items():
            table = Table.open(self.problems, child(key, name), data, known)
            found[name] = None if table is None else build(table, name)
        return found

    def table(self, key: str, known: Collection[str]) -> Table | None:
        """
        The sub-table C{key}, or None if it is missing or no table.
        """
        if key not in self.data:
            return None
        return Table.open(self.problems, child(self.path, key), self.data[key], known)
