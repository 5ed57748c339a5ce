"""Asking DNS for a pool's backends: A and AAAA queries for C{dns:}, an SRV
query (and the targets' addresses the answer leaves out) for C{srv:}, on any
L{IResolver} (a L{twisted.names.client.Resolver} in production, which asks
again over TCP when a UDP answer is truncated)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import (
    Deferred,
    FirstError,
    TimeoutError,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IResolver
from twisted.names import dns, error
from twisted.python.failure import Failure

from rproxy.config import BackendConfig
from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery._records import (
    address_backends,
    addresses_in,
    answer_ttl,
    service_records,
    srv_backends,
)

__all__ = ["Answer", "DiscoveryError", "describe_error", "lookup"]

Records = list[dns.RRHeader]


@frozen
class Answer:
    """
    What one round of queries found: the backends, and the least TTL of
    the records they came from (None if none).
    """

    backends: tuple[BackendConfig, ...]
    ttl: float | None


class DiscoveryError(Exception):
    """
    DNS answered, but with nothing to use (no records, no addresses).
    """


def describe_error(failure: Failure) -> str:
    """
    A short reason a round of queries failed: C{NXDOMAIN}, C{SERVFAIL},
    C{REFUSED}, C{timed out}, or the error.
    """
    value = failure.value
    if isinstance(value, FirstError):
        return describe_error(value.subFailure)
    if isinstance(value, error.DNSNameError):
        return "NXDOMAIN"
    if isinstance(value, error.DNSServerError):
        return "SERVFAIL"
    if isinstance(value, error.DNSQueryRefusedError):
        return "REFUSED"
    if isinstance(value, error.DNSQueryTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(value, DiscoveryError):
        return str(value)
    return f"{type(value).__name__}: {value}"


def lookup(resolver: IResolver, config: DiscoveryConfig) -> Deferred[Answer]:
    """
    Ask C{resolver} for the backends C{config} describes.  Fails when any
    query fails (so that a partial answer never removes backends), or with
    L{DiscoveryError} when the answer holds no backend.  Cancelling it
    cancels the queries under way.
    """
    return ensureDeferred(_lookup(resolver, config))


async def _all(queries: Sequence[Deferred[Any]]) -> list[Any]:
    try:
        return await gatherResults(list(queries), consumeErrors=True)
    except FirstError as first:
        first.subFailure.raiseException()
        raise  # not reached


async def _addresses(resolver: IResolver, name: str, timeout: Any) -> Records:
    found = await _all(
        [
            resolver.lookupAddress(name, timeout),
            resolver.lookupIPV6Address(name, timeout),
        ]
    )
    return [record for answers, _, _ in found for record in answers]


async def _lookup(resolver: IResolver, config: DiscoveryConfig) -> Answer:
    # twisted.names takes seconds as floats too, whatever its hints say.
    timeout: Any = (config.timeout,)
    if config.kind == "dns":
        records = await _addresses(resolver, config.name, timeout)
        addresses = [a for listed in addresses_in(records).values() for a in listed]
        assert config.port is not None
        backends = address_backends(addresses, config.port)
        if not backends:
            raise DiscoveryError("no A or AAAA records")
        return Answer(backends, answer_ttl(records))
    sections: Any = await resolver.lookupService(config.name, timeout)
    answers, _, additional = sections
    services = service_records(answers)
    if not services:
        raise DiscoveryError("no SRV records")
    used: Records = [r for r in answers if r.type == dns.SRV]
    known = addresses_in(list(answers) + list(additional))
    missing = sorted({s.target for s in services} - known.keys())
    found = await _all(
        [ensureDeferred(_target(resolver, target, timeout)) for target in missing]
    )
    for records in found:
        known.update(addresses_in(records))
        used += records
    targets = {s.target for s in services}
    used += [
        r
        for r in additional
        if r.type in (dns.A, dns.AAAA)
        and r.name.name.decode().rstrip(".").lower() in targets
    ]
    backends = srv_backends(services, known)
    if not backends:
        raise DiscoveryError("no address for any SRV target")
    return Answer(backends, answer_ttl(used))


async def _target(resolver: IResolver, name: str, timeout: Any) -> Records:
    """
    A target's address records; none if the name does not exist (an SRV
    record left behind gives no backend, and does not fail the others).
    """
    try:
        return await _addresses(resolver, name, timeout)
    except error.DNSNameError:
        return []
