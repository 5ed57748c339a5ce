"""Compiled conditions: the tests built from L{Condition}s
(L{compile_condition}), each a small function of a L{RequestView}.

Regular expressions and lists run in RE2 (C{google-re2}), whose matching
time is linear in the text whatever the pattern, so no rule can be made into
a ReDoS.  They match bytes in Latin-1 mode: each byte is one character, so an
invalid UTF-8 byte cannot make C{.} stop matching; non-ASCII text in a
pattern matches its UTF-8 bytes.  The patterns of a rule set on one subject
share one RE2 set (L{PatternBank}): one pass over the text answers them all.

A bank remembers what it answered for its most recent short texts
(L{MEMO_ENTRIES} texts of up to L{MEMO_TEXT} bytes, least recently used
out first): the same User-Agent, path or query comes again and again, and
a call into RE2 costs ten times a dict lookup.  The bound holds whatever
the texts; a flood of distinct ones only misses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from ipaddress import ip_network
from operator import attrgetter
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

from rproxy.admission.networks import AddressList
from rproxy.http.filters.rules._model import Condition
from rproxy.http.filters.rules._view import MEMO_ENTRIES, MEMO_TEXT, RequestView

__all__ = [
    "MEMO_ENTRIES",
    "MEMO_TEXT",
    "Check",
    "PatternBank",
    "Patterns",
    "compile_condition",
    "compile_list",
    "compile_regex",
    "read_list",
]

#: one compiled condition.
Check = Callable[[RequestView], bool]
#: one compiled comparison of a subject's bytes.
Compare = Callable[[bytes], bool]

_OPTIONS = re2.Options()
_OPTIONS.encoding = re2.Options.Encoding.LATIN1
_OPTIONS.never_capture = True  # only whether it matches is asked
_OPTIONS.log_errors = False  # a bad pattern is a config error, not stderr noise

#: the text of each subject a text condition may test.
_SUBJECTS: dict[str, Callable[[RequestView], bytes]] = {
    "method": attrgetter("head.method"),
    "path": attrgetter("path"),
    "query": attrgetter("query"),
    "sni": attrgetter("sni"),
}


def _reason(error: Exception, default: str) -> str:
    reason = error.args[0] if error.args else default
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason


def compile_regex(pattern: str) -> Compare:
    """
    Whether a RE2 C{pattern} occurs in a text (anchor it with C{^} and
    C{$} to match the whole).

    @raise ValueError: saying what is wrong with C{pattern}.
    """
    try:
        compiled = re2.compile(pattern.encode("utf-8"), _OPTIONS)
    except re2.error as error:
        reason = _reason(error, "not a pattern")
        raise ValueError(f"invalid regex {pattern!r}: {reason}") from None
    search = compiled.search
    return lambda text: search(text) is not None


def _list_pattern(values: Iterable[str]) -> bytes | None:
    """One RE2 alternation finding any of C{values}, ignoring ASCII case."""
    escaped = [re2.escape(value.encode("utf-8")) for value in values]
    return b"(?i)(?:" + b"|".join(escaped) + b")" if escaped else None


def compile_list(values: Iterable[str]) -> Compare:
    """
    Whether a text contains any of C{values}, ignoring ASCII case.

    @raise ValueError: if the list is too large for RE2 to compile.
    """
    pattern = _list_pattern(values)
    if pattern is None:
        return lambda text: False
    try:
        search = re2.compile(pattern, _OPTIONS).search
    except re2.error as error:  # too large for RE2's memory budget
        reason = _reason(error, "cannot be compiled")
        raise ValueError(f"the list cannot be compiled: {reason}") from None
    return lambda text: search(text) is not None


def read_list(path: str) -> tuple[str, ...]:
    """
    The entries of a list file: one per line, stripped, blank lines and
    lines starting with C{#} left out.

    @raise ValueError: if it cannot be read or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 (byte {error.start})") from None
    stripped = (line.strip() for line in lines)
    return tuple(line for line in stripped if line and not line.startswith("#"))


class PatternBank:
    """
    The regexes and lists of a rule set that test one subject, in one RE2
    set.  A bank that several conditions share keeps what it found in the
    request's view, so the text is searched once.

    @ivar users: the conditions that test with it (counted before they are
        compiled: a bank of one needs no sharing).
    """

    def __init__(self, texts: Callable[[RequestView], list[bytes]]) -> None:
        self._set = re2.Set.SearchSet(_OPTIONS)
        #: the indexes of the patterns a text matches (empty or None when
        #: none does): the bound method of the wrapped RE2 set itself,
        #: the wrapper's own only converts str, and costs a call.
        self.match: Callable[[bytes], list[int] | None] = getattr(
            self._set, "_set", self._set
        ).Match
        self.texts = texts
        self.users = 0
        self.size = 0
        #: whether any of its patterns matches an empty text (no query, an
        #: empty field): then no search is needed.
        self.on_empty = False
        #: whether a short text matches any pattern, remembered.
        self.found: Callable[[bytes], bool] = lru_cache(maxsize=MEMO_ENTRIES)(
            self._found
        )
        #: the indexes of the patterns a short text matches, remembered.
        self.which: Callable[[bytes], frozenset[int]] = lru_cache(maxsize=MEMO_ENTRIES)(
            self._which
        )

    def _found(self, text: bytes) -> bool:
        return bool(self.match(text))

    def _which(self, text: bytes) -> frozenset[int]:
        return frozenset(self.match(text) or ())

    def any(self, text: bytes) -> bool:
        """Whether any of its patterns matches C{text}."""
        if not text:
            return self.on_empty
        if len(text) <= MEMO_TEXT:
            return self.found(text)
        return bool(self.match(text))

    def add(self, pattern: bytes) -> int:
        """Add C{pattern}; its index in what L{matches} returns."""
        try:
            index: int = self._set.Add(pattern)
        except re2.error:
            raise ValueError(f"RE2 refuses {pattern!r}") from None
        self.size += 1
        return index

    def compile(self) -> None:
        """
        Ready it for matching, once every pattern is added.

        @raise ValueError: if RE2 cannot fit them in its memory budget.
        """
        if not self.size:
            return
        try:
            self._set.Compile()
        except re2.error:
            raise ValueError(
                "the patterns on one subject are too large for RE2 to compile"
            ) from None
        self.on_empty = bool(self.match(b""))

    def matches(self, view: RequestView) -> set[int]:
        """The indexes of the patterns that match the subject of C{view}."""
        cache = view.matched
        if cache is None:
            cache = view.matched = {}
        found = cache.get(self)
        if found is None:
            match, which = self.match, self.which
            union: set[int] = set()
            for text in self.texts(view):
                if len(text) <= MEMO_TEXT:
                    union.update(which(text))
                else:
                    union.update(match(text) or ())
            found = cache[self] = union
        return found


class Patterns:
    """
    The pattern banks of one rule set, one per subject (and field name).
    Conditions are L{reserve}d first, then compiled, then the banks.
    """

    def __init__(self) -> None:
        self._banks: dict[tuple[str, str | None], PatternBank] = {}

    def bank(self, condition: Condition) -> PatternBank:
        """The bank of C{condition}'s subject."""
        subject, name = condition.subject, condition.name
        key = (subject, name.lower() if subject == "header" and name else name)
        found = self._banks.get(key)
        if found is None:
            if subject == "header":
                field = (name or "").lower().encode("ascii")
                found = PatternBank(lambda view: view.fields(field))
            elif subject == "cookie":
                cookie = (name or "").encode("ascii")
                found = PatternBank(lambda view: view.cookies(cookie))
            else:
                get = _SUBJECTS[subject]
                found = PatternBank(lambda view: [get(view)])
            self._banks[key] = found
        return found

    def reserve(self, condition: Condition) -> None:
        """Count C{condition} as a user of its bank if it has patterns."""
        if condition.operator in ("regex", "list"):
            self.bank(condition).users += 1

    def compile(self) -> None:
        for bank in self._banks.values():
            bank.compile()

    def banks(self) -> list[PatternBank]:
        """Its banks, one per subject (and field name) with patterns."""
        return [bank for bank in self._banks.values() if bank.size]


def _pattern_check(patterns: Patterns, condition: Condition) -> Check:
    """A regex or list condition, through its subject's bank."""
    bank = patterns.bank(condition)
    if condition.operator == "regex":
        for pattern in condition.values:
            compile_regex(pattern)  # a message that names the pattern
        indexes = [bank.add(pattern.encode("utf-8")) for pattern in condition.values]
    else:
        alternation = _list_pattern(condition.values)
        if alternation is None:
            return lambda view: False
        indexes = [bank.add(alternation)]
    if bank.users > 1:
        if len(indexes) == 1:
            (index,) = indexes
            return lambda view: index in bank.matches(view)
        return lambda view: not bank.matches(view).isdisjoint(indexes)
    # The bank is this condition's alone: any match is one of its patterns.
    found = bank.any
    if condition.subject in _SUBJECTS:
        get = _SUBJECTS[condition.subject]
        return lambda view: found(get(view))
    texts = bank.texts

    def any_field(view: RequestView) -> bool:
        for text in texts(view):  # noqa: SIM110 (a generator costs more)
            if found(text):
                return True
        return False

    return any_field


def _compare(condition: Condition) -> Compare:
    operator = condition.operator
    values = [value.encode("utf-8") for value in condition.values]
    fold = condition.ignore_case
    if fold:
        values = [value.lower() for value in values]
    if operator == "equals":
        members = frozenset(values)
        if fold:
            return lambda text: text.lower() in members
        return members.__contains__
    if operator == "prefix":
        prefixes = tuple(values)
        if fold:
            return lambda text: text.lower().startswith(prefixes)
        return lambda text: text.startswith(prefixes)
    if operator == "contains":
        if fold:
            return lambda text: any(value in text.lower() for value in values)
        if len(values) == 1:
            (one,) = values
            return lambda text: one in text
        return lambda text: any(value in text for value in values)
    raise ValueError(f"unknown operator {operator!r}")


def _text_check(condition: Condition) -> Check:
    get = _SUBJECTS[condition.subject]
    if condition.operator == "equals" and not condition.ignore_case:
        members = frozenset(value.encode("utf-8") for value in condition.values)
        return lambda view: get(view) in members
    compare = _compare(condition)
    return lambda view: compare(get(view))


def _field_check(condition: Condition) -> Check:
    assert condition.name is not None
    name = condition.name.encode("ascii")
    if condition.subject == "header":
        name = name.lower()
    values_of: Any = (
        RequestView.fields if condition.subject == "header" else RequestView.cookies
    )
    if condition.operator == "present":
        flag = condition.flag
        return lambda view: bool(values_of(view, name)) is flag
    test = _compare(condition)
    return lambda view: any(test(value) for value in values_of(view, name))


def compile_condition(condition: Condition, patterns: Patterns | None = None) -> Check:
    """
    The test C{condition} describes (a body-size condition is not one: the
    rule set counts bodies itself).  Its regexes and lists go into
    C{patterns}, whose conditions were all L{Patterns.reserve}d first and
    which the caller compiles once every condition is in; by default into
    banks of its own, compiled at once.

    @raise ValueError: for a bad regex or network, saying which.
    """
    if patterns is None:
        patterns = Patterns()
        patterns.reserve(condition)
        check = compile_condition(condition, patterns)
        patterns.compile()
        return check
    subject, operator = condition.subject, condition.operator
    if operator in ("regex", "list") and (
        subject in _SUBJECTS or subject in ("header", "cookie")
    ):
        return _pattern_check(patterns, condition)
    if subject in _SUBJECTS:
        return _text_check(condition)
    if subject in ("header", "cookie"):
        return _field_check(condition)
    if subject == "client":
        # A deny-only list: it refuses exactly the addresses in a network.
        networks = AddressList(
            deny=[ip_network(value, strict=False) for value in condition.values]
        )
        refusal = networks.refusal
        return lambda view: refusal(view.client) is not None
    if subject == "traversal":
        flag = condition.flag
        return lambda view: view.traversal is flag
    if subject == "header_count":
        limit = condition.limit
        return lambda view: len(view.head.headers) > limit
    if subject == "header_bytes":
        limit = condition.limit
        return lambda view: view.header_bytes > limit
    raise ValueError(f"no test for {subject!r}")
