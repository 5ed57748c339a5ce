"""The pools part of the config: timeouts, health checks, keep-alive,
backends and pools, their models and how C{[pools.NAME]} tables are read.

L{rproxy.config} calls L{parse_timeouts} and L{parse_pools}; problems go to
the shared L{Problems} under their key paths.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen, validators

from rproxy.backends import format_address, parse_address
from rproxy.balancing import BALANCERS
from rproxy.config._discovery import DISCOVERY_KEYS, DiscoveryConfig, parse_discovery
from rproxy.config._outlier import parse_outlier
from rproxy.config._tls import (
    BackendTLSConfig,
    parse_backend_tls,
)
from rproxy.config._validate import (
    TOKEN,
    Problems,
    Table,
    boolean,
    fraction,
    http_path,
    item,
    model_keys,
    non_negative_int,
    non_negative_number,
    one_of,
    port_number,
    positive_int,
    positive_number,
    show,
    status_range,
    string,
)
from rproxy.policy import HashKey, OutlierPolicy
from rproxy.proxyprotocol import VERSIONS

__all__ = [
    "BALANCE_NAMES",
    "CHECK_KINDS",
    "TIMEOUT_KEYS",
    "BackendConfig",
    "HealthConfig",
    "KeepAliveConfig",
    "PoolConfig",
    "Timeouts",
    "parse_pools",
    "parse_timeouts",
]

#: Balancing strategies a pool may name: those L{rproxy.balancing} makes.
BALANCE_NAMES = tuple(BALANCERS)
#: Kinds of active health check.
CHECK_KINDS = ("tcp", "http", "none")
_positive = validators.gt(0)
_positive_float = validators.gt(0.0)


@frozen
class Timeouts:
    """
    How long, in seconds, to wait for things before giving up on them.

    @ivar connect: for a backend to accept a connection.
    @ivar idle: for either side of a TCP connection to send anything.
    @ivar request_head: for an HTTP client to send a whole request head.
    @ivar request_body: for an HTTP client to send more of its request body
        (the longest gap between two reads; else 408).
    @ivar keep_alive: for an idle keep-alive HTTP client to send a request.
    @ivar response: for a backend to start its response (else 504).
    @ivar tunnel: for either side of an upgraded (WebSocket) connection to
        send anything.
    @ivar client_hello: for a client of an SNI-routing listener to send its
        whole TLS ClientHello.
    @ivar proxy_header: for a client of a listener with C{accept_proxy} to
        send its whole PROXY protocol header.
    """

    connect: float = field(default=5.0, validator=_positive_float)
    idle: float = field(default=300.0, validator=_positive_float)
    request_head: float = field(default=10.0, validator=_positive_float)
    request_body: float = field(default=30.0, validator=_positive_float)
    keep_alive: float = field(default=60.0, validator=_positive_float)
    response: float = field(default=60.0, validator=_positive_float)
    tunnel: float = field(default=3600.0, validator=_positive_float)
    client_hello: float = field(default=5.0, validator=_positive_float)
    proxy_header: float = field(default=5.0, validator=_positive_float)


@frozen
class KeepAliveConfig:
    """
    Which idle HTTP connections to a pool's backends are kept for reuse.

    @ivar max_idle: at most this many per backend; 0 keeps none.
    @ivar idle_timeout: seconds after which an idle one is closed; keep it
        below the backends' own keep-alive timeout.
    """

    max_idle: int = field(default=256, validator=validators.ge(0))
    idle_timeout: float = field(default=30.0, validator=_positive_float)


def _check_status_range(_: object, __: object, value: tuple[int, int]) -> None:
    lo, hi = value
    if not 100 <= lo <= hi <= 599:
        raise ValueError(f"expect_status must lie within 100-599, got {value}")


@frozen
class HealthConfig:
    """
    Active health checks for every backend of a pool.

    A backend goes down after C{fall} failed checks in a row and comes back
    after C{rise} passed ones.  C{path}, C{expect_status} and C{host} (the
    Host header; None for the backend's address) apply to C{check = "http"};
    C{port}, if set, is probed instead of each backend's traffic port.
    """

    check: str = field(default="tcp", validator=validators.in_(CHECK_KINDS))
    interval: float = field(default=2.0, validator=_positive_float)
    timeout: float = field(default=1.0, validator=_positive_float)
    rise: int = field(default=2, validator=_positive)
    fall: int = field(default=3, validator=_positive)
    path: str = "/"
    expect_status: tuple[int, int] = field(
        default=(200, 399), validator=_check_status_range
    )
    host: str | None = None
    port: int | None = None


@frozen
class BackendConfig:
    """
    One backend as configured: C{address} as written, C{host} and C{port}
    parsed from it, and C{name} (the address unless given) unique in its pool.
    """

    address: str
    host: str
    port: int
    name: str
    weight: int = field(default=1, validator=_positive)
    max_connections: int | None = field(
        default=None, validator=validators.optional(_positive)
    )
    backup: bool = False


@frozen
class PoolConfig:
    """
    A named set of backends with its balancing, health checks and timeouts.

    C{hash_key} is what C{balance = "hash"} hashes: C{"client_ip"} or
    C{"header:NAME"}.  C{connect_tries} is how many backends a new connection
    tries before giving up.  C{keep_alive} applies to HTTP listeners only.
    C{tls}, if set, is how connections to the backends are encrypted.
    C{send_proxy}, if set (C{"v1"} or C{"v2"}), is the PROXY protocol
    header version every connection to a backend starts with.
    C{panic_threshold} is the fraction (0 to 1) of the enabled primaries
    below which passive health takes no more backends out.  C{queue_max},
    C{queue_timeout}, C{slow_start}, C{retry_budget}, C{min_retries} and
    C{outlier} protect the backends (see L{rproxy.policy.PoolPolicy}).
    C{discover}, if set, is where in DNS the backends are found (then
    C{backends} is empty: L{rproxy.discovery} fills the running pool).
    """

    name: str
    backends: tuple[BackendConfig, ...]
    balance: str = field(default="round_robin", validator=validators.in_(BALANCE_NAMES))
    hash_key: str = "client_ip"
    health: HealthConfig = field(factory=HealthConfig)
    timeouts: Timeouts = field(factory=Timeouts)
    connect_tries: int = field(default=3, validator=_positive)
    keep_alive: KeepAliveConfig = field(factory=KeepAliveConfig)
    tls: BackendTLSConfig | None = None
    send_proxy: str | None = field(
        default=None, validator=validators.optional(validators.in_(VERSIONS))
    )
    panic_threshold: float = field(
        default=0.5, validator=[validators.ge(0.0), validators.le(1.0)]
    )
    queue_max: int = field(default=128, validator=validators.ge(0))
    queue_timeout: float = field(default=5.0, validator=_positive_float)
    slow_start: float = field(default=0.0, validator=validators.ge(0.0))
    retry_budget: float | None = None
    min_retries: int = field(default=3, validator=validators.ge(0))
    outlier: OutlierPolicy | None = None
    discover: DiscoveryConfig | None = None


TIMEOUT_KEYS = model_keys(Timeouts)
_HEALTH_KEYS = model_keys(HealthConfig)
_KEEP_ALIVE_KEYS = model_keys(KeepAliveConfig)
_BACKEND_KEYS = model_keys(BackendConfig, "host", "port")
_POOL_KEYS = model_keys(PoolConfig, "name") + DISCOVERY_KEYS


def parse_timeouts(table: Table | None, defaults: Timeouts) -> Timeouts:
    if table is None:
        return defaults
    return Timeouts(
        connect=table.get("connect", positive_number, defaults.connect),
        idle=table.get("idle", positive_number, defaults.idle),
        request_head=table.get("request_head", positive_number, defaults.request_head),
        request_body=table.get("request_body", positive_number, defaults.request_body),
        keep_alive=table.get("keep_alive", positive_number, defaults.keep_alive),
        response=table.get("response", positive_number, defaults.response),
        tunnel=table.get("tunnel", positive_number, defaults.tunnel),
        client_hello=table.get("client_hello", positive_number, defaults.client_hello),
        proxy_header=table.get("proxy_header", positive_number, defaults.proxy_header),
    )


def parse_pools(top: Table, timeouts: Timeouts) -> dict[str, PoolConfig | None]:
    """
    Every pool declared, by name; None for one that is not even a table.

    A pool with problems is still returned (and the problems reported) so
    that listeners naming it are checked against it.
    """
    raw = top.nonempty("pools", dict, "define at least one pool, as [pools.NAME]")
    if raw is None:
        return {}
    # Any key of [pools] is a pool name.
    names = Table(top.problems, "pools", raw, known=raw.keys())
    return {name: _pool(names, name, timeouts) for name in raw}


def _pool(pools: Table, name: str, timeouts: Timeouts) -> PoolConfig | None:
    table = pools.table(name, _POOL_KEYS)
    if table is None:
        return None
    balance = table.get("balance", one_of(BALANCE_NAMES), "round_robin")
    hash_key = table.get("hash_key", _hash_key, "client_ip")
    connect_tries = table.get("connect_tries", positive_int, 3)
    discover = parse_discovery(table)
    backends = [] if "discover" in table.data else _backends(table)
    health = _health(table.table("health", _HEALTH_KEYS))
    timeouts = parse_timeouts(table.table("timeouts", TIMEOUT_KEYS), timeouts)
    keep_alive = _keep_alive(table.table("keep_alive", _KEEP_ALIVE_KEYS))
    tls = parse_backend_tls(table, pools.problems.source)
    send_proxy = table.get("send_proxy", one_of(VERSIONS), None)
    panic_threshold = table.get("panic_threshold", fraction, 0.5)
    queue_max = table.get("queue_max", non_negative_int, 128)
    queue_timeout = table.get("queue_timeout", positive_number, 5.0)
    slow_start = table.get("slow_start", non_negative_number, 0.0)
    retry_budget = table.get("retry_budget", fraction, None)
    min_retries = table.get("min_retries", non_negative_int, 3)
    if not name:
        pools.report(name, "a pool name must not be empty")
    return PoolConfig(
        name=name,
        backends=tuple(backends),
        balance=balance,
        hash_key=hash_key,
        health=health,
        timeouts=timeouts,
        connect_tries=connect_tries,
        keep_alive=keep_alive,
        tls=tls,
        send_proxy=send_proxy,
        panic_threshold=panic_threshold,
        queue_max=queue_max,
        queue_timeout=queue_timeout,
        slow_start=slow_start,
        retry_budget=retry_budget,
        min_retries=min_retries,
        outlier=parse_outlier(table),
        discover=discover,
    )


def _keep_alive(table: Table | None) -> KeepAliveConfig:
    default = KeepAliveConfig()
    if table is None:
        return default
    return KeepAliveConfig(
        max_idle=table.get("max_idle", non_negative_int, default.max_idle),
        idle_timeout=table.get("idle_timeout", positive_number, default.idle_timeout),
    )


def _hash_key(value: object) -> str:
    if isinstance(value, str):
        try:
            key = HashKey.parse(value)
        except ValueError:
            pass
        else:
            if key.header is None or TOKEN.fullmatch(value.partition(":")[2]):
                return value
    raise ValueError(
        f"must be 'client_ip' or 'header:NAME' with NAME a header name, "
        f"got {show(value)}"
    )


def _backends(pool: Table) -> list[BackendConfig]:
    path = f"{pool.path}.backends"
    raw = pool.nonempty("backends", list, "a pool needs at least one backend")
    if raw is None:
        return []
    backends = []
    first_use: dict[str, int] = {}
    for index, entry in enumerate(raw):
        backend = _backend(pool.problems, item(path, index), entry)
        if backend is None:
            continue
        if backend.name in first_use:
            pool.problems.add(
                item(path, index),
                f"duplicate backend name {backend.name!r}, also used by "
                f"backends[{first_use[backend.name]}]; give one a distinct name",
            )
            continue
        first_use[backend.name] = index
        backends.append(backend)
    return backends


def _backend(problems: Problems, path: str, entry: object) -> BackendConfig | None:
    if isinstance(entry, str):
        entry = {"address": entry}
    elif not isinstance(entry, Mapping):
        problems.add(path, f"must be an address string or a table, got {show(entry)}")
        return None
    table = Table(problems, path, entry, _BACKEND_KEYS)
    address = table.require("address", string)
    name = table.get("name", string, None)
    weight = table.get("weight", positive_int, 1)
    max_connections = table.get("max_connections", positive_int, None)
    backup = table.get("backup", boolean, False)
    if address is None:
        return None
    try:
        host, port = parse_address(address)
    except ValueError as e:
        table.report("address", str(e))
        return None
    return BackendConfig(
        address=address,
        host=host,
        port=port,
        name=name or format_address(host, port),
        weight=weight,
        max_connections=max_connections,
        backup=backup,
    )


def _health(table: Table | None) -> HealthConfig:
    default = HealthConfig()
    if table is None:
        return default
    return HealthConfig(
        check=table.get("check", one_of(CHECK_KINDS), default.check),
        interval=table.get("interval", positive_number, default.interval),
        timeout=table.get("timeout", positive_number, default.timeout),
        rise=table.get("rise", positive_int, default.rise),
        fall=table.get("fall", positive_int, default.fall),
        path=table.get("path", http_path, default.path),
        expect_status=table.get("expect_status", status_range, default.expect_status),
        host=table.get("host", string, None),
        port=table.get("port", port_number, None),
    )
