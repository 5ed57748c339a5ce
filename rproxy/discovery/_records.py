"""From DNS records to backends: A/AAAA addresses on a port, SRV records with
their priorities, weights, ports and targets' addresses; and the TTL of an
answer.  Pure: records in, L{BackendConfig}s out."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.names import dns

from rproxy.backends import format_address
from rproxy.config import BackendConfig

__all__ = [
    "ServiceRecord",
    "address_backends",
    "addresses_in",
    "answer_ttl",
    "service_records",
    "srv_backends",
]

#: the most weight a backend gets from an SRV record (its field's most).
_MAX_WEIGHT = 65535


@frozen
class ServiceRecord:
    """
    One SRV record: C{target} (without trailing dot) serves on C{port};
    the lowest C{priority} is tried first, C{weight} shares within one.
    """

    priority: int
    weight: int
    port: int
    target: str


def _name(value: object) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.rstrip(".").lower()


def addresses_in(records: Iterable[dns.RRHeader]) -> dict[str, list[str]]:
    """
    The A and AAAA addresses among C{records}, by owner name (lower case,
    no trailing dot), each list in record order without repeats.
    """
    found: dict[str, list[str]] = {}
    for record in records:
        if record.type not in (dns.A, dns.AAAA):
            continue
        # Both keep the address packed: 4 bytes or 16.
        payload: Any = record.payload
        address = str(ipaddress.ip_address(payload.address))
        listed = found.setdefault(_name(record.name.name), [])
        if address not in listed:
            listed.append(address)
    return found


def service_records(records: Iterable[dns.RRHeader]) -> list[ServiceRecord]:
    """
    The SRV records among C{records}; a target of C{"."} (the service is
    not offered there, RFC 2782) is left out.
    """
    found = []
    for record in records:
        if record.type != dns.SRV:
            continue
        payload: Any = record.payload
        target = _name(payload.target.name)
        if not target:
            continue
        found.append(
            ServiceRecord(payload.priority, payload.weight, payload.port, target)
        )
    return found


def answer_ttl(records: Iterable[dns.RRHeader]) -> float | None:
    """
    The least TTL of C{records} (how long the answer they make holds), or
    None for no records.
    """
    ttls = [record.ttl for record in records]
    return float(min(ttls)) if ttls else None


def _backend(
    host: str, port: int, weight: int = 1, backup: bool = False
) -> BackendConfig:
    address = format_address(host, port)
    return BackendConfig(
        address=address,
        host=host,
        port=port,
        name=address,
        weight=weight,
        backup=backup,
    )


def _order(backend: BackendConfig) -> tuple[int, bytes, int]:
    ip = ipaddress.ip_address(backend.host)
    return (ip.version, ip.packed, backend.port)


def address_backends(addresses: Iterable[str], port: int) -> tuple[BackendConfig, ...]:
    """
    One backend per address, on C{port}, named C{ADDRESS:PORT}, in address
    order (IPv4 first).
    """
    unique = {_backend(host, port).name: _backend(host, port) for host in addresses}
    return tuple(sorted(unique.values(), key=_order))


def srv_backends(
    records: Sequence[ServiceRecord], addresses: Mapping[str, Sequence[str]]
) -> tuple[BackendConfig, ...]:
    """
    One backend per address of each record's target, on the record's port.

    The records of the lowest priority are the pool's backends, weighted by
    their SRV weight (a weight of 0 counts as 1, the least a backend may
    have, so that it gets a small share as RFC 2782 asks); those of higher
    priorities are its backups, which take traffic only while none of the
    first are up.  An address and port listed twice keeps its lowest
    priority and, within it, its highest weight.  A target with no address
    in C{addresses} gives no backend.
    """
    if not records:
        return ()
    first = min(record.priority for record in records)
    chosen: dict[str, BackendConfig] = {}
    ranked = sorted(records, key=lambda r: (r.priority, -r.weight))
    for record in ranked:
        for host in addresses.get(record.target, ()):
            backend = _backend(
                host,
                record.port,
                weight=min(max(record.weight, 1), _MAX_WEIGHT),
                backup=record.priority != first,
            )
            chosen.setdefault(backend.name, backend)
    return tuple(sorted(chosen.values(), key=lambda b: (b.backup, _order(b))))
