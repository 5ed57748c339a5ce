"""The route model: L{Route} (one C{[[listeners.routes]]} table, checked as
it is built) and L{Match} (what routing one request gave).  Kept apart from
the router, which is compiled with mypyc: attrs classes are not."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from attrs import Attribute, field, frozen

from rproxy.http.filters.headers import HeaderRules

__all__ = ["Match", "Route"]

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
    @ivar cache: the name of the cache (C{[caches.NAME]}) its responses go
        through; the service puts the cache's filter in C{filters}.
    @ivar compress: its response compression settings
        (L{rproxy.http.filters.compress.CompressSettings}), likewise.
    @ivar limit: the names of the rate limits (C{[limits.NAME]}) its
        requests are checked against, likewise.
    @ivar access: its allow and deny lists
        (L{rproxy.config._admission.AddressListsConfig}), checked on each
        request's client address; the service puts their filter
        (L{rproxy.http.filters.access.ClientAccess}) first in C{filters}.
    @ivar auth: its forward auth (L{rproxy.http.filters.auth.AuthSettings});
        the service puts its filter (L{rproxy.http.filters.auth.ForwardAuth})
        before the cache's, after the address lists'.
    @ivar rules: the name of the request rule set (C{[rules.NAME]}) its
        requests go through; the service puts its filter first in
        C{filters}.
    """

    pool: str = field(validator=_check_pool)
    host: str | None = field(default=None, converter=_route_host)
    path_prefix: str | None = field(default=None, validator=_check_prefix)
    strip_prefix: bool = field(default=False, validator=_check_strip)
    headers: HeaderRules = field(factory=HeaderRules)
    filters: tuple[Any, ...] = field(default=(), converter=tuple)
    cache: str | None = None
    compress: Any = None
    limit: tuple[str, ...] = ()
    access: Any = None
    auth: Any = None
    rules: str | None = None

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
