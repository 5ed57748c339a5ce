"""A resolver for tests: records the test changes, errors it sets, and
queries it may hold until released."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns, error

Sections = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


def a(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, payload=dns.Record_A(address, ttl), ttl=ttl)


def aaaa(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(address, ttl), ttl=ttl)


def srv(
    name: str, priority: int, weight: int, port: int, target: str, ttl: int = 30
) -> dns.RRHeader:
    payload = dns.Record_SRV(priority, weight, port, target, ttl)
    return dns.RRHeader(name, dns.SRV, payload=payload, ttl=ttl)


class FakeResolver:
    """
    Answers A, AAAA and SRV lookups from C{records} (name to records; the
    type asked picks among them) and C{additional}; a name in C{errors}
    fails with that error; a name in neither is NXDOMAIN.  With C{hold}
    set, lookups wait in C{held} until the test fires them.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[dns.RRHeader]] = {}
        self.additional: dict[str, list[dns.RRHeader]] = {}
        self.errors: dict[str, Exception] = {}
        self.asked: list[tuple[str, int]] = []
        self.hold = False
        self.held: list[Deferred[Sections]] = []

    def set(self, name: str, records: Iterable[dns.RRHeader]) -> None:
        self.records[name] = list(records)
        self.errors.pop(name, None)

    def _lookup(self, name: str, kind: int) -> Deferred[Sections]:
        self.asked.append((name, kind))
        if self.hold:
            d: Deferred[Sections] = Deferred()
            self.held.append(d)
            return d
        if name in self.errors:
            return fail(self.errors[name])
        if name not in self.records:
            return fail(error.DNSNameError(name))
        answers = [r for r in self.records[name] if r.type == kind]
        return succeed((answers, [], list(self.additional.get(name, []))))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Sections]:
        return self._lookup(name, dns.A)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Sections]:
        return self._lookup(name, dns.AAAA)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Sections]:
        return self._lookup(name, dns.SRV)
