"""HTTP routing: which pool serves a request, chosen by its Host and path.

A L{Route} is one C{[[listeners.routes]]} table; a L{Router} holds a
listener's routes and answers C{route(host, target)} with a L{Match} (the
route, its pool and the target to send upstream) or C{None}.  Pure: no I/O,
no clock, no logging.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from zope.interface import implementer

from rproxy.http._route import Match, Route
from rproxy.interfaces import IRouter

__all__ = ["Match", "Route", "Router"]

# (prefix, bytes to cut when stripping or -1 to keep the target, route)
_Entry = tuple[bytes, int, Route]


def _entries(routes: Sequence[Route]) -> list[_Entry]:
    """Longest prefix first; equal lengths keep config order (sort is stable)."""
    entries = []
    for route in routes:
        prefix = (route.path_prefix or "").encode("ascii")
        cut = len(prefix.rstrip(b"/")) if route.strip_prefix else -1
        entries.append((prefix, cut, route))
    entries.sort(key=lambda entry: -len(entry[0]))
    return entries


def _scan(entries: list[_Entry], path: bytes, target: bytes) -> Match | None:
    for prefix, cut, route in entries:
        if path.startswith(prefix):
            if cut < 0:
                return Match(route, target)
            rest = target[cut:]
            return Match(route, rest if rest[:1] == b"/" else b"/" + rest)
    return None


def _host_name(host: bytes) -> bytes:
    """
    The name in a C{Host} header value as routes store it: lowercase, without
    port or one trailing dot; IPv6 literals compressed.
    """
    host = host.lower()
    if host[:1] == b"[":
        return _ipv6_name(host[: host.find(b"]") + 1])
    colon = host.find(b":")
    if colon >= 0:
        host = host[:colon]
    return host[:-1] if host[-1:] == b"." else host


@lru_cache(maxsize=64)
def _ipv6_name(literal: bytes) -> bytes:
    """C{b"[0:0::1]"} as C{b"[::1]"}; anything else as it is."""
    try:
        address = ipaddress.IPv6Address(literal[1:-1].decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one too
        return literal
    return b"[%s]" % address.compressed.encode("ascii")


@implementer(IRouter)
class Router:
    """
    A listener's routes, indexed for one short lookup per request.

    The first of these that matches wins:

      1. routes for the exact host;
      2. wildcard routes, the longest suffix first (C{"*.a.example.com"}
         before C{"*.example.com"}); C{"*.example.com"} matches
         C{"x.example.com"} and C{"a.b.example.com"}, never C{"example.com"};
      3. routes without a host (the only ones a request without a C{Host}
         can match).

    Within each, the longest C{path_prefix} goes first (no prefix counts as
    empty) and routes with the same prefix keep config order, so a later
    duplicate is never used.  A host whose routes' prefixes all miss falls
    through to the next class.  Host matching ignores case, a C{":port"} and
    one trailing dot.  The target should be in origin-form (the server turns
    absolute-form into C{Host} plus path first); anything else, such as
    C{"*"}, matches only routes without a prefix.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        exact: dict[bytes, list[Route]] = {}
        wildcard: dict[bytes, list[Route]] = {}
        default: list[Route] = []
        for route in self.routes:
            if route.host is None:
                default.append(route)
            elif route.host.startswith("*."):
                wildcard.setdefault(route.host[2:].encode("ascii"), []).append(route)
            else:
                exact.setdefault(route.host.encode("ascii"), []).append(route)
        self._exact = {name: _entries(group) for name, group in exact.items()}
        self._wildcard = {name: _entries(group) for name, group in wildcard.items()}
        self._default = _entries(default)

    def route(self, host: bytes | None, target: bytes) -> Match | None:
        query = target.find(b"?")
        path = target if query < 0 else target[:query]
        if host:
            name = _host_name(host)
            entries = self._exact.get(name)
            if entries and (match := _scan(entries, path, target)):
                return match
            if self._wildcard:
                # Each suffix after a dot, longest first; the first label
                # must not be empty.
                dot = name.find(b".", 1)
                while dot > 0:
                    entries = self._wildcard.get(name[dot + 1 :])
                    if entries and (match := _scan(entries, path, target)):
                        return match
                    dot = name.find(b".", dot + 1)
        return _scan(self._default, path, target)
