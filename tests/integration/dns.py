"""A real DNS server on 127.0.0.1 for discovery tests: twisted.names'
server over UDP and TCP on one port, answering from records the test
changes, truncating UDP answers when told to."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.names import common, dns, error, server


class Zone(common.ResolverBase):
    """
    Records by (name, type); a name in C{failing} is answered SERVFAIL (by
    the server); a name with no records of any type is NXDOMAIN.  SRV answers carry the
    targets' A records in the additional section when C{glue} is set (as
    Consul and CoreDNS do).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[tuple[str, int], list[dns.RRHeader]] = {}
        self.failing: set[str] = set()
        self.glue = True

    def set(self, name: str, kind: int, records: list[dns.RRHeader]) -> None:
        self.records[(name, kind)] = records

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        text = name.decode().rstrip(".").lower()
        if not any(n == text for n, _ in self.records):
            return fail(error.DNSNameError(text))
        answers = self.records.get((text, type), [])
        additional = []
        if type == dns.SRV and self.glue:
            for record in answers:
                target = record.payload.target.name.decode().rstrip(".").lower()
                additional += self.records.get((target, dns.A), [])
        return succeed((answers, [], additional))


def a(name: str, address: str, ttl: int = 0) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, payload=dns.Record_A(address, ttl), ttl=ttl)


def srv(
    name: str, priority: int, weight: int, port: int, target: str, ttl: int = 0
) -> dns.RRHeader:
    payload = dns.Record_SRV(priority, weight, port, target, ttl)
    return dns.RRHeader(name, dns.SRV, payload=payload, ttl=ttl)


class _Factory(server.DNSServerFactory):
    def __init__(self, zone: Zone) -> None:
        super().__init__(clients=[zone])
        self.zone = zone
        self.truncate = False
        #: "udp" or "tcp" for each query received.
        self.transports: list[str] = []

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> None:
        self.transports.append("tcp" if address is None else "udp")
        name = message.queries[0].name.name.decode().rstrip(".").lower()
        if name in self.zone.failing:
            reply = self._responseFromMessage(message=message, rCode=dns.ESERVER)
            self.sendReply(protocol, reply, address)
            return
        super().handleQuery(message, protocol, address)

    def sendReply(self, protocol: Any, message: dns.Message, address: Any) -> None:
        if address is not None and self.truncate:
            # What a server does with an answer too big for a UDP datagram.
            message.trunc = True
            message.answers, message.additional = [], []
        super().sendReply(protocol, message, address)


class DNSServer:
    """
    A DNS server on 127.0.0.1 answering from C{zone}, over UDP and TCP on
    the same C{port}; L{stop} takes it away.
    """

    def __init__(self) -> None:
        self.zone = Zone()
        self.factory = _Factory(self.zone)
        # The UDP port the kernel picks may be taken for TCP (a busy machine
        # has many ephemeral TCP ports in use): pick again, a few times.
        for attempt in range(20):
            self.udp = reactor.listenUDP(  # type: ignore[attr-defined]
                0, dns.DNSDatagramProtocol(self.factory), interface="127.0.0.1"
            )
            self.port: int = self.udp.getHost().port
            try:
                self.tcp = reactor.listenTCP(  # type: ignore[attr-defined]
                    self.port, self.factory, interface="127.0.0.1"
                )
            except CannotListenError:
                self.udp.stopListening()
                if attempt == 19:
                    raise
                continue
            break

    def stop(self) -> Deferred[Any]:
        return DeferredList(
            [d for d in (self.udp.stopListening(), self.tcp.stopListening()) if d]
        )
