"""The C{[[listeners]]} part of the config: the L{ListenerConfig} model and its checks.

L{rproxy.config} re-exports L{ListenerConfig} and L{PROTOCOLS} and calls
L{parse_listeners} with the pools already read, so that every pool a listener
or route names can be checked.  Problems go to the shared L{Problems}, each
under its key path (C{listeners[0].routes[1].host}).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import TYPE_CHECKING

from attrs import Attribute, field, frozen, validators

from rproxy.config._admission import (
    ADMISSION_KEYS,
    AdmissionConfig,
    parse_admission,
)
from rproxy.config._headers import HEADER_KEYS, parse_header_rules
from rproxy.config._limits import LimitConfig, parse_limit_names
from rproxy.config._routes import check_pool, parse_routes
from rproxy.config._tls import ListenerTLSConfig, parse_listener_tls, parse_sni_routes
from rproxy.config._validate import (
    Table,
    boolean,
    header_name,
    ip_network,
    item,
    model_keys,
    non_negative_number,
    one_of,
    positive_int,
    quoted,
    server_endpoint,
    string,
)
from rproxy.http.filters.headers import HeaderRules
from rproxy.http.routing import Route

if TYPE_CHECKING:
    from rproxy.config import PoolConfig

__all__ = ["HTTP_ONLY_KEYS", "PROTOCOLS", "ListenerConfig", "parse_listeners"]

#: Listener protocols accepted now.
PROTOCOLS = ("tcp", "http")
#: Listener keys that mean something only to C{protocol = "http"}.
HTTP_ONLY_KEYS = (
    "routes",
    "http2",
    "h2c",
    "x_forwarded",
    "forwarded",
    "via",
    "preserve_host",
    "remove_response_headers",
    "set_request_headers",
    "remove_request_headers",
    "add_response_headers",
    "max_body",
    "min_body_rate",
    "max_header_size",
    "max_headers",
    "max_target",
    "limit",
)

# Response headers that frame the body: removing them would desynchronise it.
_FRAMING = ("content-length", "transfer-encoding")

_positive = validators.gt(0)


def _check_shape(
    listener: ListenerConfig, attribute: Attribute[tuple[Route, ...]], value: object
) -> None:
    if listener.protocol == "tcp":
        if (listener.pool is None and not listener.sni_routes) or listener.routes:
            raise ValueError("a tcp listener needs a pool or sni_routes, and no routes")
        if listener.sni_routes and listener.tls is not None:
            raise ValueError("a tcp listener either terminates TLS or routes by SNI")
    elif listener.sni_routes:
        raise ValueError("sni_routes are for tcp listeners")
    elif not listener.routes:
        raise ValueError("an http listener needs at least one route")
    elif listener.pool is not None and listener.routes[-1] != Route(listener.pool):
        raise ValueError("an http listener's pool must be its last route")


def _check_accept(
    listener: ListenerConfig, attribute: Attribute[bool], value: bool
) -> None:
    if value and not listener.trusted_proxies:
        raise ValueError("accept_proxy needs trusted_proxies")


@frozen
class ListenerConfig:
    """
    Where to accept connections (a Twisted server endpoint string), how to
    speak on them and which pools serve them.

    A tcp listener sends every connection to C{pool}; one with
    C{sni_routes} reads the server name of each client's TLS ClientHello
    (without decrypting anything) and sends the connection to the pool of
    the first route whose name matches, exact names before wildcards, or to
    C{pool} if none does.  An http listener
    routes each request with C{Router(routes)}: the file's
    C{[[listeners.routes]]} in order, then, if the file gives the listener a
    C{pool}, C{Route(pool=pool)} as the default for requests no route
    matches.  C{pool} stays set for information; C{routes} is complete.

    @ivar tls: terminate TLS with these certificates (either protocol).
    @ivar sni_routes: (server name, pool) pairs; tcp listeners only.
    @ivar accept_proxy: every connection starts with a PROXY protocol header
        (v1 or v2, before any TLS) from one of C{trusted_proxies}, whose
        source address is then the client's; any other connection is closed.
    @ivar admission: connection limits and address lists, enforced as each
        connection arrives (either protocol).
    @ivar trusted_proxies: addresses and networks (C{"10.0.0.0/8"},
        C{"::1"}), as written, of the proxies in front: those allowed to
        send a PROXY header (C{accept_proxy}) and, on http listeners, those
        whose forwarding headers are kept (the C{trusted} of
        L{rproxy.http.headers.ForwardingPolicy}).  Required with
        C{accept_proxy}; on a tcp listener, only used with it.

    The rest apply to http listeners only:

    @ivar x_forwarded: add C{X-Forwarded-For}, C{-Proto} and C{-Host}.
    @ivar forwarded: add an RFC 7239 C{Forwarded} element.
    @ivar via: add C{Via: 1.1 rproxy} to requests and responses.
    @ivar preserve_host: send the client's C{Host}; if false, the backend's
        C{host:port}.
    @ivar remove_response_headers: header names, lowercase, without
        duplicates, removed from every response.
    @ivar headers: the listener's other header rewriting (request fields
        set and removed, response fields added); routes have their own.
    @ivar max_body: the largest request body in bytes, or None for no limit.
    @ivar min_body_rate: bytes per second a request body must average
        after its first five seconds (else 408, as Apache's
        C{mod_reqtimeout MinRate}); 0 for no minimum.
    @ivar max_header_size: the largest request head in bytes (431 above).
    @ivar max_headers: the most header fields in a request (431 above).
    @ivar max_target: the longest request target in bytes (414 above).
    @ivar limit: the names of the rate limits every request is checked
        against, before it is routed (a route's own follow).
    @ivar http2: a TLS listener offers HTTP/2 (ALPN C{h2}) besides
        HTTP/1.1.
    @ivar h2c: a listener without TLS takes HTTP/2 with prior knowledge
        (a connection that opens with the HTTP/2 preface).
    """

    name: str
    listen: str
    pool: str | None = None
    protocol: str = field(default="tcp", validator=validators.in_(PROTOCOLS))
    routes: tuple[Route, ...] = field(default=(), kw_only=True, validator=_check_shape)
    tls: ListenerTLSConfig | None = field(default=None, kw_only=True)
    sni_routes: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)
    trusted_proxies: tuple[str, ...] = field(default=(), kw_only=True)
    accept_proxy: bool = field(default=False, kw_only=True, validator=_check_accept)
    admission: AdmissionConfig = field(factory=AdmissionConfig, kw_only=True)
    x_forwarded: bool = field(default=True, kw_only=True)
    forwarded: bool = field(default=False, kw_only=True)
    via: bool = field(default=False, kw_only=True)
    preserve_host: bool = field(default=True, kw_only=True)
    remove_response_headers: tuple[str, ...] = field(default=(), kw_only=True)
    headers: HeaderRules = field(factory=HeaderRules, kw_only=True)
    http2: bool = field(default=True, kw_only=True)
    h2c: bool = field(default=False, kw_only=True)
    max_body: int | None = field(
        default=None, kw_only=True, validator=validators.optional(_positive)
    )
    min_body_rate: float = field(
        default=500.0, kw_only=True, validator=validators.ge(0.0)
    )
    max_header_size: int = field(default=16384, kw_only=True, validator=_positive)
    max_headers: int = field(default=100, kw_only=True, validator=_positive)
    max_target: int = field(default=8192, kw_only=True, validator=_positive)
    limit: tuple[str, ...] = field(default=(), kw_only=True)


_LISTENER_KEYS = (
    *model_keys(ListenerConfig, "headers", "admission"),
    *HEADER_KEYS[:3],
    *ADMISSION_KEYS,
)


def parse_listeners(
    top: Table,
    pools: Mapping[str, PoolConfig | None],
    caches: Collection[str] = (),
    rules: Collection[str] = (),
    limits: Mapping[str, LimitConfig | None] | None = None,
    *,
    acme: bool = False,
) -> list[ListenerConfig]:
    """
    Every valid listener in the C{listeners} array of C{top}; the problems
    of the others are reported.  C{pools} are the pools declared, by name.
    """
    raw = top.nonempty("listeners", list, "define at least one [[listeners]]")
    if raw is None:
        return []
    listeners = []
    first_use: dict[str, int] = {}
    for index, entry in enumerate(raw):
        table = Table.open(
            top.problems, item("listeners", index), entry, _LISTENER_KEYS
        )
        if table is None:
            continue
        found = len(top.problems.lines)
        name = table.require("name", string)
        if name is not None:
            if name in first_use:
                table.report(
                    "name",
                    f"duplicate listener name {name!r}, also used by "
                    f"listeners[{first_use[name]}]",
                )
            else:
                first_use[name] = index
        listener = _listener(table, name, pools, (caches, rules), limits or {}, acme)
        # One with problems is not built: the model could refuse it.
        if listener is not None and len(top.problems.lines) == found:
            listeners.append(listener())
    return listeners


def _listener(
    table: Table,
    name: str | None,
    pools: Mapping[str, PoolConfig | None],
    named: tuple[Collection[str], Collection[str]],
    limits: Mapping[str, LimitConfig | None],
    acme: bool,
) -> Callable[[], ListenerConfig] | None:
    """
    Check the rest of one listener; return what builds its model if it has
    the keys to build one.
    """
    protocol = table.get("protocol", one_of(PROTOCOLS), None)
    listen = table.require("listen", server_endpoint)
    if protocol is None:
        # Absent means tcp; a wrong one is reported, then checked as http
        # rather than reporting every http key on it as well.
        protocol = "http" if "protocol" in table else "tcp"
    source = table.problems.source
    tls = parse_listener_tls(table, source, http=protocol == "http", acme=acme)
    admission = parse_admission(table)
    if protocol == "tcp":
        for key in HTTP_ONLY_KEYS:
            if key in table:
                table.report(key, 'only for protocol = "http" listeners')
        sni_routes = parse_sni_routes(table)
        for server_name, route_pool in sni_routes:
            if route_pool not in pools:
                table.report(
                    "sni_routes",
                    f"{server_name!r}: no pool named {route_pool!r}",
                )
            elif _encrypts(pools[route_pool]):
                table.report("sni_routes", _double_tls(repr(server_name), route_pool))
        if sni_routes and tls is not None:
            table.report(
                "sni_routes",
                "a listener either terminates TLS ([listeners.tls]) or routes "
                "TLS by SNI without decrypting it (sni_routes), not both",
            )
        pool = (
            table.get("pool", string, None)
            if sni_routes
            else table.require("pool", string)
        )
        if pool is not None:
            check_pool(table, pool, pools, tcp=True)
            if sni_routes and _encrypts(pools.get(pool)):
                table.report("pool", _double_tls("the default", pool))
        accept_proxy, trusted = _accept_proxy(table, tcp=True)
        if name is None or listen is None or (pool is None and not sni_routes):
            return None
        return partial(
            ListenerConfig,
            name,
            listen,
            pool,
            protocol,
            tls=tls,
            sni_routes=sni_routes,
            accept_proxy=accept_proxy,
            trusted_proxies=trusted,
            admission=admission,
        )
    if "sni_routes" in table:
        table.report("sni_routes", 'only for protocol = "tcp" listeners')

    pool = table.get("pool", string, None)
    if pool is not None:
        check_pool(table, pool, pools, tcp=False)
    routes = parse_routes(table, pools, named, limits)
    if "pool" not in table and not table.data.get("routes"):
        table.report(
            "pool",
            "missing: an http listener needs a pool, [[listeners.routes]] or both",
        )
    if pool is not None:
        for index, route in enumerate(routes):
            if route.host is None and route.path_prefix is None:
                table.report(
                    "pool",
                    f"routes[{index}] is already the default route (no host, "
                    "no path_prefix), so this pool would never be used; drop one",
                )
        routes.append(Route(pool))
    remove = table.array("remove_response_headers", _removable_header)
    accept_proxy, trusted = _accept_proxy(table, tcp=False)
    build = partial(
        ListenerConfig,
        routes=tuple(routes),
        tls=tls,
        accept_proxy=accept_proxy,
        trusted_proxies=trusted,
        admission=admission,
        x_forwarded=table.get("x_forwarded", boolean, True),
        forwarded=table.get("forwarded", boolean, False),
        via=table.get("via", boolean, False),
        preserve_host=table.get("preserve_host", boolean, True),
        remove_response_headers=tuple(dict.fromkeys(remove)),
        headers=parse_header_rules(table, remove_response=()),
        max_body=table.get("max_body", positive_int, None),
        min_body_rate=table.get("min_body_rate", non_negative_number, 500.0),
        max_header_size=table.get("max_header_size", positive_int, 16384),
        max_headers=table.get("max_headers", positive_int, 100),
        max_target=table.get("max_target", positive_int, 8192),
        limit=parse_limit_names(table, limits, listener=True),
        http2=table.get("http2", boolean, True),
        h2c=table.get("h2c", boolean, False),
    )
    if tls is not None and "h2c" in table:
        table.report("h2c", "is for listeners without tls (with tls, see http2)")
    if name is None or listen is None:
        return None
    return partial(build, name, listen, pool, protocol)


def _accept_proxy(table: Table, *, tcp: bool) -> tuple[bool, tuple[str, ...]]:
    """
    A listener's C{accept_proxy} and C{trusted_proxies}.  Accepting PROXY
    headers from anyone is a choice to spell out (C{["0.0.0.0/0", "::/0"]}):
    with no trusted proxy every connection would be refused.
    """
    accept = table.get("accept_proxy", boolean, False)
    trusted = table.array("trusted_proxies", ip_network)
    if accept and not trusted and "trusted_proxies" not in table:
        table.report(
            "accept_proxy",
            "needs trusted_proxies, the addresses of the proxies allowed to "
            "send PROXY headers: without them every connection would be "
            "refused",
        )
    elif accept and not trusted and not table.data["trusted_proxies"]:
        table.report(
            "trusted_proxies",
            "is empty, so with accept_proxy every connection would be refused; "
            "list the proxies that send PROXY headers",
        )
    if tcp and "trusted_proxies" in table and not accept:
        table.report(
            "trusted_proxies",
            "on a tcp listener, only used with accept_proxy = true (a tcp "
            "listener reads no forwarding headers)",
        )
    return accept, trusted


def _encrypts(pool: PoolConfig | None) -> bool:
    return pool is not None and pool.tls is not None


def _double_tls(route: str, pool: str) -> str:
    return (
        f"{route} route's pool {pool!r} has tls, but SNI routing passes the "
        "client's own TLS through: the backends must terminate it"
    )


def _removable_header(value: object) -> str:
    name = header_name(value).lower()
    if name in _FRAMING:
        raise ValueError(
            f"cannot remove {value!r}: it frames the response body; "
            f"the headers that cannot be removed are {quoted(_FRAMING)}"
        )
    return name
