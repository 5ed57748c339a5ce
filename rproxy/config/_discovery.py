"""The C{discover} keys of a pool: where its backends are found in DNS
(L{DiscoveryConfig}, its model) and how C{"dns:NAME:PORT"} and
C{"srv:_service._proto.NAME"} are read.

A pool with C{discover} takes its backends from DNS answers, so it must not
also list C{backends}; the other keys (C{resolver}, C{discover_min_ttl},
C{discover_max_ttl}, C{discover_hold}, C{discover_timeout}) only go with
C{discover}.
"""

from __future__ import annotations

import ipaddress
import re

from attrs import field, frozen, validators

from rproxy.config._validate import (
    Table,
    non_negative_number,
    positive_number,
    show,
)

__all__ = [
    "DISCOVERY_KEYS",
    "DiscoveryConfig",
    "parse_discover",
    "parse_discovery",
    "parse_resolver",
]

#: the pool keys besides C{discover} that only a discovering pool may have.
DISCOVERY_KEYS = (
    "resolver",
    "discover_min_ttl",
    "discover_max_ttl",
    "discover_hold",
    "discover_timeout",
)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)
_positive_float = validators.gt(0.0)


@frozen
class DiscoveryConfig:
    """
    Where a pool's backends are found in DNS and how often they are asked.

    @ivar kind: C{"dns"} (A and AAAA records of C{name}, every address a
        backend on C{port}) or C{"srv"} (SRV records of C{name}: each
        target's addresses on the record's port, with its weight; the
        lowest priority are the backends, higher ones backups).
    @ivar name: the name asked, without a trailing dot.
    @ivar port: the backends' port (C{"dns"} only; SRV records give theirs).
    @ivar resolver: the DNS server asked, as (address, port); None for
        those of the system's resolv.conf.
    @ivar min_ttl: seconds: the least time between two queries, whatever
        the records' TTL (Consul answers TTL 0).
    @ivar max_ttl: seconds: the most time between two queries, whatever
        the records' TTL.
    @ivar hold: seconds the last good answer is kept from the time it was
        received while queries fail (NXDOMAIN, SERVFAIL, timeouts or no
        records); after that the pool's backends are removed.
    @ivar timeout: seconds one query may take.
    """

    kind: str = field(validator=validators.in_(("dns", "srv")))
    name: str
    port: int | None = None
    resolver: tuple[str, int] | None = None
    min_ttl: float = field(default=5.0, validator=_positive_float)
    max_ttl: float = field(default=60.0, validator=_positive_float)
    hold: float = field(default=300.0, validator=validators.ge(0.0))
    timeout: float = field(default=2.0, validator=_positive_float)

    @property
    def source(self) -> str:
        """
        The C{discover} string this came from.
        """
        if self.kind == "dns":
            return f"dns:{self.name}:{self.port}"
        return f"srv:{self.name}"


def _dns_name(name: str) -> str:
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if not name or len(name) > 253 or not all(map(_LABEL.fullmatch, labels)):
        raise ValueError(f"{name!r} is not a DNS name")
    return name


def parse_discover(value: object) -> tuple[str, str, int | None]:
    """
    C{"dns:NAME:PORT"} or C{"srv:_service._proto.NAME"} as (kind, name,
    port).

    @raise ValueError: with a message fit for a config error.
    """
    usage = (
        "must be 'dns:NAME:PORT' (A/AAAA records) or "
        f"'srv:_service._proto.NAME' (SRV records), got {show(value)}"
    )
    if not isinstance(value, str):
        raise ValueError(usage)
    kind, _, rest = value.partition(":")
    if kind == "dns":
        name, sep, port = rest.rpartition(":")
        if not sep:
            raise ValueError(f"{usage}: the port is missing")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        return "dns", _dns_name(name), int(port)
    if kind == "srv":
        name = _dns_name(rest)
        labels = name.split(".")
        if len(labels) < 3 or not all(x.startswith("_") for x in labels[:2]):
            raise ValueError(
                f"an SRV name starts with _service._proto (as in "
                f"'_http._tcp.api.service.consul'), got {rest!r}"
            )
        return "srv", name, None
    raise ValueError(usage)


def parse_resolver(value: object) -> tuple[str, int]:
    """
    C{"ADDRESS:PORT"}, C{"[IPv6]:PORT"} or a bare address (port 53): a DNS
    server as (address, port).
    """
    usage = f"must be a DNS server's address, as '127.0.0.1:8600', got {show(value)}"
    if not isinstance(value, str) or not value:
        raise ValueError(usage)
    host, port = value, "53"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(usage)
        port = rest[1:] or "53"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{usage} (an IP address: a name would need a resolver itself)"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return host, int(port)


def parse_discovery(pool: Table) -> DiscoveryConfig | None:
    """
    The pool's discovery settings, or None if it has no C{discover}; problems
    reported to C{pool}.
    """
    data = pool.data
    if "discover" not in data:
        for key in DISCOVERY_KEYS:
            if key in data:
                pool.report(key, "only applies to a pool with 'discover'")
        return None
    default = DiscoveryConfig("dns", "x", 1)
    if "backends" in data:
        pool.report(
            "backends",
            "a pool with 'discover' takes its backends from DNS; remove "
            "'backends' or 'discover'",
        )
    parsed = pool.get("discover", parse_discover, None)
    resolver = pool.get("resolver", parse_resolver, None)
    min_ttl = pool.get("discover_min_ttl", positive_number, default.min_ttl)
    max_ttl = pool.get("discover_max_ttl", positive_number, default.max_ttl)
    hold = pool.get("discover_hold", non_negative_number, default.hold)
    timeout = pool.get("discover_timeout", positive_number, default.timeout)
    if min_ttl > max_ttl:
        pool.report(
            "discover_min_ttl",
            f"must not be above discover_max_ttl ({max_ttl:g}), got {min_ttl:g}",
        )
        max_ttl = min_ttl
    if parsed is None:
        return None
    kind, name, port = parsed
    return DiscoveryConfig(
        kind=kind,
        name=name,
        port=port,
        resolver=resolver,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        hold=hold,
        timeout=timeout,
    )
