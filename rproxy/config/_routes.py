"""The C{[[listeners.routes]]} of an http listener: L{parse_routes} reads and
checks them (each field on its own key path, so that L{Route}'s complaints
land where they belong), and L{check_pool} checks a pool name a listener or a
route gives."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from rproxy.config._admission import ACCESS_KEYS, parse_address_lists
from rproxy.config._auth import parse_auth
from rproxy.config._compress import parse_compress
from rproxy.config._headers import HEADER_KEYS, parse_header_rules
from rproxy.config._limits import LimitConfig, parse_limit_names
from rproxy.config._validate import Table, boolean, did_you_mean, item, quoted, string
from rproxy.http.routing import Route

if TYPE_CHECKING:
    from rproxy.config import PoolConfig

__all__ = ["check_pool", "parse_routes"]

# A pool name that only lets a Route be built to check its other fields.
_PROBE = "-"

_ROUTE_KEYS = (
    "host",
    "path_prefix",
    "strip_prefix",
    "pool",
    "cache",
    "compress",
    "limit",
    "auth",
    "rules",
    *HEADER_KEYS,
    *ACCESS_KEYS,
)


def parse_routes(
    table: Table,
    pools: Mapping[str, PoolConfig | None],
    named: tuple[Collection[str], Collection[str]],
    limits: Mapping[str, LimitConfig | None],
) -> list[Route]:
    """
    The C{routes} of an http listener's C{table}, each checked against the
    C{pools}, the caches and rule sets C{named} and the C{limits} the file
    declares; a route with a problem is reported and left out.
    """
    if "routes" not in table:
        return []
    raw = table.data["routes"]
    if not isinstance(raw, list):
        table.report("routes", "must be an array of tables, as [[listeners.routes]]")
        return []
    path = f"{table.path}.routes"
    routes: list[Route] = []
    first_use: dict[tuple[str | None, str | None], int] = {}
    for index, entry in enumerate(raw):
        route_table = Table.open(table.problems, item(path, index), entry, _ROUTE_KEYS)
        route = (
            None if route_table is None else _route(route_table, pools, named, limits)
        )
        if route is None:
            continue
        key = (route.host, route.path_prefix)
        if key in first_use:
            table.problems.add(
                item(path, index),
                f"same host and path_prefix as routes[{first_use[key]}], "
                "so it would never be used",
            )
            continue
        first_use[key] = index
        routes.append(route)
    return routes


def _route(
    table: Table,
    pools: Mapping[str, PoolConfig | None],
    named: tuple[Collection[str], Collection[str]],
    limits: Mapping[str, LimitConfig | None],
) -> Route | None:
    """
    One route, its fields checked one by one so that L{Route}'s complaints
    land on the key they are about; C{named} are the caches and the rule
    sets the file declares.
    """
    caches, rule_sets = named
    found = len(table.problems.lines)
    host = table.get("host", string, None)
    prefix = table.get("path_prefix", string, None)
    strip = table.get("strip_prefix", boolean, False)
    pool = table.require("pool", string)
    headers = parse_header_rules(table)
    cache = table.get("cache", string, None)
    if cache is not None and cache not in caches:
        hint = did_you_mean(cache, caches) or (
            f"caches are {quoted(caches)}" if caches else "there is no [caches.NAME]"
        )
        table.report("cache", f"no cache named {cache!r}; {hint}")
    compress = parse_compress(table)
    limit = parse_limit_names(table, limits, listener=False)
    access = parse_address_lists(table)
    auth = parse_auth(table)
    rules = _named(table, "rules", rule_sets, "[rules.NAME]")
    _try_route(table, "host", lambda: Route(_PROBE, host=host))
    prefix_ok = prefix is not None or "path_prefix" not in table
    if prefix_ok and _try_route(
        table, "path_prefix", lambda: Route(_PROBE, path_prefix=prefix)
    ):
        _try_route(
            table,
            "strip_prefix",
            lambda: Route(_PROBE, path_prefix=prefix, strip_prefix=strip),
        )
    if pool is not None:
        check_pool(table, pool, pools, tcp=False)
    if pool is None or len(table.problems.lines) != found:
        return None
    return Route(
        pool,
        host,
        prefix,
        strip,
        headers=headers,
        cache=cache,
        compress=compress,
        limit=limit,
        access=access or None,
        auth=auth,
        rules=rules,
    )


def _named(table: Table, key: str, names: Collection[str], how: str) -> str | None:
    """
    The name C{key} gives, reported unless it is one of C{names}.
    """
    name = table.get(key, string, None)
    if name is not None and name not in names:
        hint = did_you_mean(name, names) or (
            f"the names are {quoted(names)}" if names else f"there is no {how}"
        )
        table.report(key, f"no {key} set named {name!r}; {hint}")
    return name


def _try_route(table: Table, key: str, build: Callable[[], Route]) -> bool:
    try:
        build()
    except ValueError as e:
        table.report(key, str(e).removeprefix(f"{key} "))
        return False
    return True


def check_pool(
    table: Table, name: str, pools: Mapping[str, PoolConfig | None], *, tcp: bool
) -> None:
    """
    Report C{table}'s C{pool} if there is no such pool, or if it hashes on a
    header a C{tcp} listener cannot see.
    """
    if name not in pools:
        hint = did_you_mean(name, pools) or (
            f"pools are {quoted(pools)}" if pools else ""
        )
        table.report("pool", f"no pool named {name!r}" + (f"; {hint}" if hint else ""))
        return
    pool = pools[name]
    if pool and tcp and pool.hash_key.startswith("header:"):
        table.report(
            "pool",
            f"pool {name!r} hashes on {pool.hash_key!r}, "
            "but a tcp listener cannot see headers",
        )
