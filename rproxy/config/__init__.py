"""The config file: TOML in, a validated frozen attrs model out.

Nothing else in rproxy reads TOML.  L{load_config} reads a file and
L{parse_config} checks already-parsed data; both collect every problem before
raising one L{ConfigError} whose lines each name the file, the key path and
the problem::

    examples/bad.toml: pools.db.backends[1].weight: must be a positive integer, got -2
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping

from attrs import field, frozen, validators

from rproxy.config._admin import AdminConfig, parse_admin
from rproxy.config._caches import CacheConfig, DiskTierConfig, parse_caches
from rproxy.config._limits import LimitConfig, parse_limits
from rproxy.config._listeners import PROTOCOLS, ListenerConfig, parse_listeners
from rproxy.config._pools import (
    BALANCE_NAMES,
    CHECK_KINDS,
    TIMEOUT_KEYS,
    BackendConfig,
    HealthConfig,
    KeepAliveConfig,
    PoolConfig,
    Timeouts,
    parse_pools,
    parse_timeouts,
)
from rproxy.config._rules import parse_rules
from rproxy.config._tls import (
    AcmeConfig,
    BackendTLSConfig,
    CertificateConfig,
    ListenerTLSConfig,
    _base,
    _path,
    parse_acme,
)
from rproxy.config._validate import (
    Problems,
    Table,
    non_negative_number,
    one_of,
    string,
)
from rproxy.config._workers import parse_workers
from rproxy.http.filters.rules import RuleSetConfig

__all__ = [
    "ACCESS_LOG_FORMATS",
    "BALANCE_NAMES",
    "CHECK_KINDS",
    "PROTOCOLS",
    "AccessLogConfig",
    "AcmeConfig",
    "AdminConfig",
    "BackendConfig",
    "BackendTLSConfig",
    "CacheConfig",
    "CertificateConfig",
    "Config",
    "ConfigError",
    "DiskTierConfig",
    "HealthConfig",
    "KeepAliveConfig",
    "LimitConfig",
    "ListenerConfig",
    "ListenerTLSConfig",
    "PoolConfig",
    "RuleSetConfig",
    "Timeouts",
    "load_config",
    "parse_config",
]

#: Line formats of the access log.
ACCESS_LOG_FORMATS = ("combined", "json")


class ConfigError(Exception):
    """
    A config file cannot be used.

    @ivar errors: every problem found, each C{"FILE: KEY.PATH: problem"}.
    """

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# The model ------------------------------------------------------------------


@frozen
class AccessLogConfig:
    """
    The file the access log is appended to (relative paths are relative to
    the config file's directory, like every path in it; C{"-"} is standard
    output) and the format of its lines.
    """

    path: str
    format: str = field(
        default="combined", validator=validators.in_(ACCESS_LOG_FORMATS)
    )


@frozen
class Config:
    """
    A whole validated config file.

    C{timeouts} are the global defaults (each pool's C{timeouts} already has
    them merged in); C{shutdown_grace} is how long open connections get to
    finish on shutdown; C{admin} is the admin interface, if any; C{workers}
    the number of worker processes (1: one process, no supervisor; see
    L{rproxy.workers}).
    """

    source: str
    pools: tuple[PoolConfig, ...]
    listeners: tuple[ListenerConfig, ...]
    timeouts: Timeouts = field(factory=Timeouts)
    shutdown_grace: float = field(default=10.0, validator=validators.ge(0.0))
    access_log: AccessLogConfig | None = None
    acme: AcmeConfig | None = None
    admin: AdminConfig | None = None
    caches: tuple[CacheConfig, ...] = ()
    rules: tuple[RuleSetConfig, ...] = ()
    limits: tuple[LimitConfig, ...] = ()
    workers: int = field(default=1, validator=validators.ge(1))

    def pool(self, name: str) -> PoolConfig:
        """
        The pool called C{name}.

        @raise KeyError: if there is none.
        """
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


# Reading --------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """
    Read and validate the TOML config file at C{path}.

    @raise ConfigError: if the file cannot be read, is not TOML, or describes
        an invalid config.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror or e}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{source}: invalid TOML: not UTF-8 (byte {e.start})"]
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"]) from None
    return parse_config(data, source)


def _log_path(base: str) -> Callable[[object], str]:
    """
    An access log path: C{"-"} (standard output) as it is, any other
    relative to C{base}.
    """
    relative = _path(base)

    def convert(value: object) -> str:
        return "-" if string(value) == "-" else relative(value)

    return convert


def parse_config(data: Mapping[str, object], source: str) -> Config:
    """
    Validate parsed TOML C{data}; C{source} names the file in messages.

    @raise ConfigError: listing every problem found.
    """
    problems = Problems(source)
    top = Table(
        problems,
        "",
        data,
        (
            "pools",
            "listeners",
            "caches",
            "rules",
            "limits",
            "timeouts",
            "shutdown",
            "access_log",
            "acme",
            "admin",
            "workers",
        ),
    )

    timeouts = parse_timeouts(top.table("timeouts", TIMEOUT_KEYS), Timeouts())
    grace = 10.0
    if shutdown := top.table("shutdown", ("grace",)):
        grace = shutdown.get("grace", non_negative_number, grace)

    access_log = None
    if log_table := top.table("access_log", ("path", "format")):
        log_path = log_table.require("path", _log_path(_base(source)))
        log_format = log_table.get("format", one_of(ACCESS_LOG_FORMATS), "combined")
        if log_path is not None:
            access_log = AccessLogConfig(log_path, log_format)

    acme = parse_acme(top, source)
    admin = parse_admin(top, source)
    pools = parse_pools(top, timeouts)
    caches = parse_caches(top, source)
    rules = parse_rules(top, source, timeouts)
    limits = parse_limits(top, timeouts.response)
    listeners = parse_listeners(top, pools, caches, rules, limits, acme="acme" in top)
    if acme is not None:
        _check_acme_listeners(top, listeners)
    workers = parse_workers(
        top,
        _listens(listeners),
        [name for name, c in caches.items() if c is not None and c.disk is not None],
    )

    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        source=source,
        pools=tuple(pool for pool in pools.values() if pool is not None),
        listeners=tuple(listeners),
        timeouts=timeouts,
        shutdown_grace=grace,
        access_log=access_log,
        acme=acme,
        admin=admin,
        caches=tuple(cache for cache in caches.values() if cache is not None),
        rules=tuple(one for one in rules.values() if one is not None),
        limits=tuple(limit for limit in limits.values() if limit is not None),
        workers=workers,
    )


def _listens(listeners: Iterable[ListenerConfig]) -> Iterable[tuple[str, str]]:
    """
    Every port the listeners listen on, with the listener's name.
    """
    for listener in listeners:
        yield listener.name, listener.listen
        if listener.tls is not None and listener.tls.redirect_http_from:
            yield f"{listener.name}:redirect", listener.tls.redirect_http_from


def _check_acme_listeners(top: Table, listeners: list[ListenerConfig]) -> None:
    """
    ACME's HTTP-01 challenges need a plain HTTP listener to be answered on,
    and its certificates a TLS listener to be served by.
    """
    plain = any(
        listener.protocol == "http" and listener.tls is None for listener in listeners
    )
    redirect = any(
        listener.tls is not None and listener.tls.redirect_http_from
        for listener in listeners
    )
    if not plain and not redirect:
        top.report(
            "acme",
            "HTTP-01 challenges need a plain HTTP listener (protocol = "
            '"http" without tls, or a listener\'s tls.redirect_http_from) '
            "on the port the ACME server connects to (80)",
        )
    if not any(listener.tls is not None for listener in listeners):
        top.report("acme", "no listener has [listeners.tls] to serve the certificates")
