"""A listener's connection limits and address lists, and a route's address
lists: the keys C{max_connections}, C{max_connections_per_ip},
C{accept_rate_per_ip}, C{accept_burst_per_ip}, C{allow}, C{deny},
C{allow_file} and C{deny_file}, read into an L{AdmissionConfig} (a
listener) or an L{AddressListsConfig} (a route).

A list file is read with the config (so a reload reads it again): one
address or network a line, C{#} starts a comment; a bad line is reported
with the file's path and the line number.
"""

from __future__ import annotations

import ipaddress
import re

from attrs import field, frozen, validators

from rproxy.admission.networks import Network, canonical
from rproxy.config._tls import _base, _path
from rproxy.config._validate import Table, ip_network, positive_int, show

__all__ = [
    "ACCESS_KEYS",
    "ADMISSION_KEYS",
    "AddressListsConfig",
    "AdmissionConfig",
    "parse_address_lists",
    "parse_admission",
    "rate",
]

#: the keys of a route (and of a listener) with address lists.
ACCESS_KEYS = ("allow", "deny", "allow_file", "deny_file")
#: the keys of a listener this module reads.
ADMISSION_KEYS = (
    "max_connections",
    "max_connections_per_ip",
    "accept_rate_per_ip",
    "accept_burst_per_ip",
    *ACCESS_KEYS,
)

_RATE = re.compile(
    r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*", re.ASCII
)
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Past this many bad lines in one file, the rest are only counted.
_MOST_REPORTED = 10


def rate(value: object) -> tuple[float, float]:
    """
    A rate such as C{"50/s"}, C{"600/m"} or C{"1000/h"}, as (count,
    period in seconds).
    """
    if isinstance(value, str) and (match := _RATE.fullmatch(value)):
        count = float(match[1])
        if count > 0:
            return count, _PERIODS[match[2][0]]
    raise ValueError(
        f"must be a rate such as '50/s', '600/m' or '1000/h', got {show(value)}"
    )


def _network(value: object) -> Network:
    return canonical(ipaddress.ip_network(ip_network(value), strict=False))


@frozen
class AddressListsConfig:
    """
    The allow and deny lists of a listener or route: the inline entries,
    then those of the file, as networks (host bits masked, IPv4-mapped IPv6
    as IPv4).  See L{rproxy.admission.AddressList} for what they mean.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)


_positive = validators.optional(validators.gt(0))


@frozen
class AdmissionConfig:
    """
    Which connections a listener takes (see L{rproxy.admission}).

    @ivar max_connections: the most open at once; None for no limit.
    @ivar max_connections_per_ip: the most open at once from one address
        (an IPv6 client by its /64); None for no limit.
    @ivar accept_rate_per_ip: (count, period in seconds): new connections
        let in from one address, checked on the address that connected
        (with PROXY protocol, the proxy's); None for no limit.
    @ivar accept_burst_per_ip: how many of them may come at once; None for
        the rate's count.
    @ivar addresses: the allow and deny lists, checked on the client's
        address (with PROXY protocol, the header's).
    """

    max_connections: int | None = field(default=None, validator=_positive)
    max_connections_per_ip: int | None = field(default=None, validator=_positive)
    accept_rate_per_ip: tuple[float, float] | None = None
    accept_burst_per_ip: int | None = field(default=None, validator=_positive)
    addresses: AddressListsConfig = field(factory=AddressListsConfig)

    def __bool__(self) -> bool:
        return (
            self.max_connections is not None
            or self.max_connections_per_ip is not None
            or self.accept_rate_per_ip is not None
            or bool(self.addresses)
        )

    @property
    def burst(self) -> int:
        """
        The accept rate's burst: C{accept_burst_per_ip}, or the rate's
        count (at least 1).
        """
        if self.accept_burst_per_ip is not None:
            return self.accept_burst_per_ip
        count = self.accept_rate_per_ip[0] if self.accept_rate_per_ip else 1.0
        return max(1, int(count))


def _list_file(table: Table, key: str) -> tuple[Network, ...]:
    path = table.get(key, _path(_base(table.problems.source)), None)
    if path is None:
        return ()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        table.report(key, f"cannot read {path}: {e.strerror or e}")
        return ()
    except UnicodeDecodeError as e:
        table.report(key, f"{path} is not UTF-8 (byte {e.start})")
        return ()
    networks = []
    bad = 0
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            networks.append(_network(entry))
        except ValueError as e:
            bad += 1
            if bad <= _MOST_REPORTED:
                table.report(key, f"{path} line {number}: {e}")
    if bad > _MOST_REPORTED:
        table.report(key, f"{path}: {bad - _MOST_REPORTED} more bad lines")
    return tuple(networks)


def parse_address_lists(table: Table) -> AddressListsConfig:
    """
    The C{allow}, C{deny}, C{allow_file} and C{deny_file} of the listener or
    route C{table} (problems reported to it).
    """
    allow = table.array("allow", _network) + _list_file(table, "allow_file")
    deny = table.array("deny", _network) + _list_file(table, "deny_file")
    return AddressListsConfig(allow, deny)


def parse_admission(table: Table) -> AdmissionConfig:
    """
    The connection limits and address lists of the listener C{table}.
    """
    accept_rate = table.get("accept_rate_per_ip", rate, None)
    burst = table.get("accept_burst_per_ip", positive_int, None)
    if burst is not None and "accept_rate_per_ip" not in table:
        table.report("accept_burst_per_ip", "needs accept_rate_per_ip")
    return AdmissionConfig(
        max_connections=table.get("max_connections", positive_int, None),
        max_connections_per_ip=table.get("max_connections_per_ip", positive_int, None),
        accept_rate_per_ip=accept_rate,
        accept_burst_per_ip=burst,
        addresses=parse_address_lists(table),
    )
