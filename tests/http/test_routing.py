"""Tests for rproxy.http.routing: which route, which pool, which target."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from rproxy.http.routing import Match, Route, Router
from rproxy.interfaces import IRouter

ROUTES = [
    Route("api-v1", host="api.example.com", path_prefix="/v1/"),
    Route("api", host="api.example.com"),
    Route("deep", host="*.a.example.com"),
    Route("wild-v1", host="*.example.com", path_prefix="/v1/"),
    Route("wild", host="*.example.com"),
    Route("static", path_prefix="/static/"),
    Route("web"),
]


def pool_for(routes: list[Route], host: bytes | None, target: bytes) -> str | None:
    """
    The pool C{Router(routes)} chooses, or None.
    """
    match = Router(routes).route(host, target)
    return None if match is None else match.pool


@pytest.mark.parametrize(
    ("host", "target", "pool"),
    [
        # exact host, longest prefix first
        (b"api.example.com", b"/v1/users", "api-v1"),
        (b"api.example.com", b"/v2/users", "api"),
        # exact host beats host-less, even with a longer prefix
        (b"api.example.com", b"/static/app.js", "api"),
        # wildcards: prefix within the class, one or more labels
        (b"x.example.com", b"/v1/users", "wild-v1"),
        (b"x.example.com", b"/about", "wild"),
        (b"a.b.example.com", b"/", "wild"),
        # the longest wildcard suffix beats a longer prefix in a shorter one
        (b"x.a.example.com", b"/v1/users", "deep"),
        (b"x.y.a.example.com", b"/", "deep"),
        # "*.a.example.com" needs a label before "a.example.com"
        (b"a.example.com", b"/", "wild"),
        # "*.example.com" never matches "example.com"
        (b"example.com", b"/v1/users", "web"),
        (b"example.com", b"/static/app.js", "static"),
        (b"other.org", b"/static/app.js", "static"),
        (b"other.org", b"/", "web"),
        # no Host: only host-less routes
        (None, b"/v1/users", "web"),
        (None, b"/static/x", "static"),
        (b"", b"/static/x", "static"),
    ],
)
def test_precedence(host: bytes | None, target: bytes, pool: str) -> None:
    """
    Exact host beats wildcard (longest suffix first) beats host-less; within
    a class the longest prefix wins.
    """
    assert pool_for(ROUTES, host, target) == pool


def test_host_whose_prefixes_miss_falls_through_to_wildcard_then_default() -> None:
    """
    A host's routes that all miss on the path leave the request to the
    wildcard routes, then to the host-less ones.
    """
    routes = [
        Route("api", host="api.example.com", path_prefix="/v1/"),
        Route("wild", host="*.example.com", path_prefix="/w/"),
        Route("web"),
    ]
    assert pool_for(routes, b"api.example.com", b"/w/x") == "wild"
    assert pool_for(routes, b"api.example.com", b"/x") == "web"


def test_longer_prefix_wins_whatever_the_config_order() -> None:
    """
    A route with a longer prefix wins over one listed before it.
    """
    routes = [Route("short", path_prefix="/a/"), Route("long", path_prefix="/a/b/")]
    assert pool_for(routes, None, b"/a/b/c") == "long"
    assert pool_for(routes, None, b"/a/c") == "short"


def test_ties_keep_config_order() -> None:
    """
    Of two routes with the same host and prefix, the first listed wins.
    """
    routes = [
        Route("first", host="*.example.com", path_prefix="/x/"),
        Route("second", host="*.example.com", path_prefix="/x/"),
        Route("default-1"),
        Route("default-2"),
    ]
    assert pool_for(routes, b"a.example.com", b"/x/") == "first"
    assert pool_for(routes, b"a.example.com", b"/y") == "default-1"


@pytest.mark.parametrize(
    "host",
    [
        b"API.Example.COM",
        b"api.example.com:8080",
        b"api.example.com.",
        b"Api.Example.Com.:443",
    ],
)
def test_host_ignores_case_port_and_one_trailing_dot(host: bytes) -> None:
    """
    C{Host} matching ignores case, a C{":port"} and one trailing dot.
    """
    assert pool_for([Route("api", host="api.example.com")], host, b"/") == "api"


@pytest.mark.parametrize(
    "host", [b"api.example.com..", b"xapi.example.com", b"api.example", b"api"]
)
def test_host_otherwise_matches_exactly(host: bytes) -> None:
    """
    Other spellings of a host name are other names.
    """
    assert pool_for([Route("api", host="api.example.com")], host, b"/") is None


@pytest.mark.parametrize("route_host", ["::1", "[::1]", "[0:0::1]", "0::0:1"])
@pytest.mark.parametrize("host", [b"[::1]", b"[::1]:8080", b"[0:0:0::1]:80"])
def test_ipv6_literals_match_in_any_spelling(route_host: str, host: bytes) -> None:
    """
    IPv6 literals match whatever their spelling, with or without a port.
    """
    assert pool_for([Route("v6", host=route_host)], host, b"/") == "v6"


@pytest.mark.parametrize("host", [b"[::2]", b"[::1", b"[nonsense]:80", b"::1"])
def test_other_or_broken_ipv6_literals_do_not_match(host: bytes) -> None:
    """
    A different address or a malformed literal matches only host-less routes.
    """
    routes = [Route("v6", host="::1"), Route("web")]
    assert pool_for(routes, host, b"/") == "web"


def test_ipv4_literal_host() -> None:
    """
    An IPv4 address is matched like a name, port ignored.
    """
    assert pool_for([Route("v4", host="10.0.0.1")], b"10.0.0.1:80", b"/") == "v4"


def test_wildcard_needs_a_non_empty_first_label() -> None:
    """
    C{".example.com"} is no name under C{"*.example.com"}.
    """
    routes = [Route("wild", host="*.example.com")]
    assert pool_for(routes, b".example.com", b"/") is None


@pytest.mark.parametrize(
    ("prefix", "target", "matches"),
    [
        (b"/v1/", b"/v1/users", True),
        (b"/v1/", b"/v1/", True),
        (b"/v1/", b"/v1", False),
        (b"/v1/", b"/v1x", False),
        (b"/v1/", b"/V1/users", False),
        (b"/v1/", b"/v1%2Fusers", False),
        (b"/v1/", b"/x?next=/v1/", False),
        (b"/v1", b"/v1x", True),
        (b"/v1", b"/v1?x=1", True),
        (b"/caf%C3%A9/", b"/caf%C3%A9/menu", True),
        (b"/caf%C3%A9/", b"/caf%c3%a9/menu", False),
    ],
)
def test_prefix_is_compared_byte_for_byte_on_the_path(
    prefix: bytes, target: bytes, matches: bool
) -> None:
    """
    A prefix matches the start of the path (before C{"?"}) byte for byte,
    without percent-decoding or case folding.
    """
    routes = [Route("p", path_prefix=prefix.decode())]
    assert (pool_for(routes, None, target) == "p") is matches


def test_asterisk_target_matches_only_routes_without_prefix() -> None:
    """
    C{OPTIONS *} goes to a route without a prefix.
    """
    routes = [Route("root", path_prefix="/"), Route("web")]
    assert pool_for(routes, None, b"*") == "web"
    assert pool_for(routes[:1], None, b"*") is None


@pytest.mark.parametrize(
    ("prefix", "target", "upstream"),
    [
        ("/v1/", b"/v1/users?x=1", b"/users?x=1"),
        ("/v1/", b"/v1/", b"/"),
        ("/v1/", b"/v1/?x=1", b"/?x=1"),
        ("/v1/", b"/v1//x", b"//x"),
        ("/v1/", b"/v1/a?next=/v1/b", b"/a?next=/v1/b"),
        ("/v1", b"/v1", b"/"),
        ("/v1", b"/v1?x=1", b"/?x=1"),
        ("/v1", b"/v1/users", b"/users"),
        ("/v1", b"/v1x", b"/x"),
        ("/", b"/a?b", b"/a?b"),
        ("/a/b/", b"/a/b/c", b"/c"),
    ],
)
def test_strip_prefix_rewrites_the_path_and_keeps_the_query(
    prefix: str, target: bytes, upstream: bytes
) -> None:
    """
    Stripping removes the prefix less its trailing slash, leaves a leading
    slash (C{"/"} if nothing is left) and keeps the query as it was.
    """
    match = Router([Route("p", path_prefix=prefix, strip_prefix=True)]).route(
        None, target
    )
    assert match is not None
    assert match.target == upstream


def test_without_strip_prefix_the_target_is_unchanged() -> None:
    """
    A route that does not strip passes the client's target on as it is.
    """
    route = Route("api", host="api.example.com", path_prefix="/v1/")
    match = Router([route]).route(b"api.example.com", b"/v1/users?x=1")
    assert match == Match(route, b"/v1/users?x=1")
    assert match.pool == "api"


def test_no_matching_route_and_no_default_gives_none() -> None:
    """
    Without a host-less route, a request no route matches gets None.
    """
    routes = [
        Route("api", host="api.example.com"),
        Route("static", path_prefix="/static/"),
    ]
    assert pool_for(routes, b"other.org", b"/") is None
    assert pool_for(routes, None, b"/") is None
    assert pool_for([], b"api.example.com", b"/") is None


def test_router_provides_irouter() -> None:
    """
    L{Router} provides L{IRouter}.
    """
    assert verifyObject(IRouter, Router(ROUTES))


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("API.Example.com", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("*.Example.COM", "*.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("_acme.example", "_acme.example"),
        ("::1", "[::1]"),
        ("[0:0::1]", "[::1]"),
        ("127.0.0.1", "127.0.0.1"),
        (None, None),
    ],
)
def test_route_host_is_stored_normalised(given: str | None, stored: str | None) -> None:
    """
    A route's host is kept lowercase, without a trailing dot, IPv6 in
    brackets and compressed.
    """
    assert Route("p", host=given).host == stored


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "api.*.example.com"}, "whole first label"),
        ({"host": "*example.com"}, "whole first label"),
        ({"host": "*"}, "whole first label"),
        ({"host": "*.*.example.com"}, "whole first label"),
        ({"host": "*.0.0.1"}, "must end in a domain name"),
        ({"host": "a..example.com"}, "host must be a name"),
        ({"host": ""}, "host must be a name"),
        ({"host": "exa mple.com"}, "host must be a name"),
        ({"host": "api.example.com:8080"}, "host must be a name"),
        ({"host": "a" * 64 + ".com"}, "host must be a name"),
        ({"host": "bücher.example"}, "'xn--bcher-kva.example'"),
        ({"path_prefix": "v1/"}, "must start with '/'"),
        ({"path_prefix": ""}, "must start with '/'"),
        ({"path_prefix": "/v1?x"}, "without spaces, '?' or '#'"),
        ({"path_prefix": "/a b"}, "without spaces"),
        ({"path_prefix": "/café"}, "percent-encode"),
        ({"strip_prefix": True}, "strip_prefix needs a path_prefix"),
    ],
)
def test_route_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    """
    A route with a host or prefix it could never match raises ValueError
    saying what is wrong.
    """
    with pytest.raises(ValueError, match=re.escape(message)):
        Route("p", **kwargs)  # type: ignore[arg-type]


def test_route_rejects_empty_pool() -> None:
    """
    A route must name a pool.
    """
    with pytest.raises(ValueError, match="pool must be a non-empty string"):
        Route("")


# Properties -----------------------------------------------------------------

LABELS = ["a", "b", "c"]
names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(".".join)
route_hosts = st.one_of(st.none(), names, names.map(lambda name: "*." + name))
prefixes = st.sampled_from([None, "/", "/a", "/a/", "/a/b", "/a/b/", "/b/"])
routes_strategy = st.lists(
    st.tuples(route_hosts, prefixes, st.booleans()), max_size=8
).map(
    lambda specs: [
        Route(
            f"r{i}", host=host, path_prefix=prefix, strip_prefix=strip and bool(prefix)
        )
        for i, (host, prefix, strip) in enumerate(specs)
    ]
)
request_hosts = st.one_of(
    st.none(),
    st.tuples(names, st.sampled_from(["", ":80", ".", ".:8080"]), st.booleans()).map(
        lambda t: (t[0].upper() if t[2] else t[0]) + t[1]
    ),
)
targets = st.sampled_from(
    ["/", "/a", "/a/", "/a/b", "/a/b/c?x=/a/", "/ab", "/b/c", "/c?a/", "*"]
)


def reference_route(
    routes: list[Route], host: str | None, target: bytes
) -> tuple[str, bytes] | None:
    """
    The documented precedence, by brute force: rank every matching route by
    (host class, -wildcard suffix length, -prefix length, config position).
    """
    name = None if host is None else host.lower().split(":")[0].removesuffix(".")
    path = target.split(b"?")[0]
    ranked = []
    for position, route in enumerate(routes):
        if route.host is None:
            host_rank: tuple[int, int] = (2, 0)
        elif name is None:
            continue
        elif route.host.startswith("*."):
            suffix = route.host[1:]
            if not (name.endswith(suffix) and len(name) > len(suffix)):
                continue
            host_rank = (1, -len(suffix))
        elif route.host == name:
            host_rank = (0, 0)
        else:
            continue
        prefix = (route.path_prefix or "").encode()
        if path.startswith(prefix):
            ranked.append((host_rank, -len(prefix), position, route))
    if not ranked:
        return None
    *_, best = min(ranked)
    upstream = target
    if best.strip_prefix:
        assert best.path_prefix is not None
        upstream = target[len(best.path_prefix.rstrip("/")) :]
        if not upstream.startswith(b"/"):
            upstream = b"/" + upstream
    return best.pool, upstream


def outcome(match: Match | None) -> tuple[str, bytes] | None:
    return None if match is None else (match.pool, match.target)


@given(routes_strategy, request_hosts, targets)
def test_router_agrees_with_brute_force_precedence(
    routes: list[Route], host: str | None, target: str
) -> None:
    """
    The indexed router picks the same route and target as ranking every
    route by the documented precedence.
    """
    request_host = None if host is None else host.encode()
    got = Router(routes).route(request_host, target.encode())
    assert outcome(got) == reference_route(routes, host, target.encode())


@given(routes_strategy, names, names, prefixes, targets)
def test_route_for_another_host_never_changes_the_result(
    routes: list[Route], host: str, other: str, prefix: str | None, target: str
) -> None:
    """
    Adding a route for a host other than the request's, anywhere in the
    list, leaves the result for that request as it was.
    """
    if other == host:
        other = "z." + other
    extra = Route("extra", host=other, path_prefix=prefix)
    before = Router(routes).route(host.encode(), target.encode())
    for position in range(len(routes) + 1):
        changed = [*routes[:position], extra, *routes[position:]]
        after = Router(changed).route(host.encode(), target.encode())
        assert outcome(after) == outcome(before)
