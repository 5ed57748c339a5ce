"""HTTP routing: which pool serves a request, chosen by its Host and path.

A L{Route} is one C{[[listeners.routes]]} table; a L{Router} holds a
listener's routes and answers C{route(host, target)} with a L{Match} (the
route, its pool and the target to send upstream) or C{None}.  Pure: no I/O,
no clock, no logging.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from attrs import Attribute, field, frozen
from zope.interface import implementer

from rproxy.http.filters.headers import HeaderRules
from rproxy.interfaces import IRouter

__all__ = ["Match", "Route", "Router"]

_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# Printable ASCII but space, "?" and "#": what can stand in a request path.
_PATH = re.compile(r"/[!\"$->@-~]*")


def _route_host(value: str | None) -> str | None:
    """
    Normalise a route's host: lowercase, no trailing dot, IPv6 literals as
    C{"[compressed]"}.

    @raise ValueError: if it is no host name, C{*.} wildcard or IP literal.
    """
    if value is None:
        return None
    usage = "host must be a name ('api.example.com'), a wildcard ('*.example.com')"
    usage += f" or an IP address, got {value!r}"
    if not isinstance(value, str):
        raise ValueError(usage)
    host = value.lower().removesuffix(".")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise ValueError(usage) from None
        return f"[{address.compressed}]"
    if not host.isascii():
        try:
            label = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(usage) from None
        raise ValueError(f"host must be ASCII; write {value!r} as {label!r}")
    name = host.removeprefix("*.")
    if "*" in name:
        raise ValueError(
            f"a wildcard must be the whole first label ('*.example.com'), got {value!r}"
        )
    labels = name.split(".")
    if len(name) > 253 or not all(map(_LABEL.fullmatch, labels)):
        raise ValueError(usage)
    if name != host and labels[-1].isdigit():
        raise ValueError(f"a wildcard must end in a domain name, got {value!r}")
    return host


def _check_prefix(
    route: Route, attribute: Attribute[str | None], value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        raise ValueError(
            "path_prefix must start with '/' and be printable ASCII without"
            f" spaces, '?' or '#' (percent-encode the rest), got {value!r}"
        )


def _check_pool(route: Route, attribute: Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"pool must be a non-empty string, got {value!r}")


def _check_strip(route: Route, attribute: Attribute[bool], value: bool) -> None:
    if value and route.path_prefix is None:
        raise ValueError("strip_prefix needs a path_prefix")


@frozen
class Route:
    """
    Send requests for C{host} whose path starts with C{path_prefix} to
    C{pool}; a route with neither is the listener's default.

    @ivar host: an exact name (C{"api.example.com"}), a wildcard whose
        C{"*."} stands for one or more whole labels (C{"*.example.com"}) or
        an IP address.  Stored lowercase without a trailing dot; IPv6
        literals as C{"[::1]"}.  Must be ASCII: international names are
        written as IDNA A-labels (C{"xn--bcher-kva.example"}), as they
        arrive in the C{Host} header.
    @ivar path_prefix: compared byte for byte with the start of the path
        (the target before any C{"?"}), without percent-decoding or dot
        segment removal: C{"/v1/"} matches C{"/v1/users"} but not C{"/v1"},
        C{"/v1x"} or C{"/V1/"}.  It also matches C{"/v1/../admin"}, so a
        prefix is no access control unless the server normalises paths.
    @ivar strip_prefix: send the target upstream without the prefix (less
        its trailing C{"/"}), keeping a leading C{"/"} and the query.
    @ivar headers: the route's header rewriting (from the config), run
        before its C{filters}.
    @ivar filters: filters (L{rproxy.http.filters.IHTTPFilter}) for the
        requests this route takes, after the listener's.
    """

    pool: str = field(validator=_check_pool)
    host: str | None = field(default=None, converter=_route_host)
    path_prefix: str | None = field(default=None, validator=_check_prefix)
    strip_prefix: bool = field(default=False, validator=_check_strip)
    headers: HeaderRules = field(factory=HeaderRules)
    filters: tuple[Any, ...] = field(default=(), converter=tuple)

    def all_filters(self) -> tuple[Any, ...]:
        """
        The filters of requests taking this route: its header rewriting,
        then its own filters.
        """
        return self.headers.filters() + self.filters


@frozen
class Match:
    """
    The outcome of routing one request.

    @ivar route: the route that matched.
    @ivar target: the request target to send upstream: the client's, or with
        the route's prefix stripped.
    """

    route: Route
    target: bytes

    @property
    def pool(self) -> str:
        """The name of the pool that serves the request."""
        return self.route.pool


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
