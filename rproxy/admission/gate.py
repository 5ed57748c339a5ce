"""What a listener decides when a connection arrives, before it reads a byte
of it: L{Admission} (the listener's connection limits, accept rate and
address lists) and the L{Refusal} it gives.  Pure: the open connections, the
client's address and the time are passed in."""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen

from rproxy.admission.networks import AddressList, client_key
from rproxy.admission.rate import AcceptRate

__all__ = ["REASONS", "Admission", "Refusal"]

#: the kinds of refusal, as counters and metrics name them.
REASONS = ("full", "per_ip", "rate", "denied")


@frozen
class Refusal:
    """
    Why a connection is not let in.

    @ivar reason: one of L{REASONS}.
    @ivar refused_by: the listener key that refused it (C{max_connections},
        C{max_connections_per_ip}, C{accept_rate_per_ip}, C{deny} or
        C{allow}), as the access event names it.
    @ivar status: what a plain HTTP client is answered: 503 when the
        listener is full, 429 for its own address's limits, 403 when a list
        refuses it.
    @ivar retry_after: seconds until the accept rate would let it in.
    """

    reason: str
    refused_by: str
    status: int
    retry_after: float | None = None


_FULL = Refusal("full", "max_connections", 503)
_PER_IP = Refusal("per_ip", "max_connections_per_ip", 429)


class Admission:
    """
    A listener's rules for new connections.

    @param max_connections: the most connections open at once on the
        listener (those still sending a PROXY header count).
    @param max_per_client: the most open at once from one address (an IPv6
        client counted by its /64: L{client_key}).
    @param rate: the accept rate per address.
    @param addresses: the allow and deny lists.
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_per_client: int | None = None,
        rate: AcceptRate | None = None,
        addresses: AddressList | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.rate = rate
        self.addresses = addresses if addresses else None

    @property
    def at_accept(self) -> bool:
        """
        Whether it has rules about the connection itself (the listener's
        total, the accept rate), checked on the address that connected.
        """
        return self.max_connections is not None or self.rate is not None

    @property
    def per_client(self) -> bool:
        """
        Whether it has rules about the client (the lists, its open
        connections), checked on the address a PROXY header announces.
        """
        return self.max_per_client is not None or self.addresses is not None

    def adopt(self, previous: Admission) -> None:
        """
        Carry on from the rules a reload replaces: the accept rate keeps
        what it counted.
        """
        if self.rate is not None and previous.rate is not None:
            self.rate.adopt(previous.rate)

    def check(
        self,
        host: str,
        open_now: int,
        open_from: Callable[[str], int],
        now: float,
        *,
        accept: bool = True,
        client: bool = True,
    ) -> Refusal | None:
        """
        None if a connection from C{host} may come in now; else why not.

        In this order: the lists, the listener's total, the client's own
        open connections, the accept rate; only a connection let in counts
        against the rate.  C{accept} and C{client} say which rules to check
        (a listener reading PROXY headers checks the first kind before the
        header, on the proxy's address, and the second after it).

        @param open_now: connections open on the listener.
        @param open_from: connections open from a L{client_key}.
        """
        if client and self.addresses is not None:
            listed = self.addresses.refusal(host)
            if listed is not None:
                return Refusal("denied", listed, 403)
        limit = self.max_connections
        if accept and limit is not None and open_now >= limit:
            return _FULL
        key = ""
        if client and self.max_per_client is not None and host:
            key = client_key(host)
            if open_from(key) >= self.max_per_client:
                return _PER_IP
        if accept and self.rate is not None and host:
            wait = self.rate.take(key or client_key(host), now)
            if wait:
                return Refusal("rate", "accept_rate_per_ip", 429, wait)
        return None
