"""A route's allow and deny lists, as a filter: L{ClientAccess} answers 403
itself to a request whose client address (L{client_address}: after a PROXY
header or a trusted proxy's C{X-Forwarded-For}) the lists refuse, before
anything else of the route sees it and without reading its body."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.admission.networks import AddressList
from rproxy.http.client_address import client_address
from rproxy.http.filters import PLAIN_TEXT, HTTPFilter, LocalReply
from rproxy.http.framing import RequestHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["DENIED", "ClientAccess"]

#: what a refused client is answered.
DENIED = LocalReply(403, PLAIN_TEXT, b"forbidden\n")


class ClientAccess(HTTPFilter):
    """
    Answer 403 to clients C{addresses} refuses.  Each refusal counts in the
    listener's C{refused["route_denied"]} and its access event says
    C{refused_by = "route.deny"} (a deny entry matched) or C{"route.allow"}
    (the allow list does not hold the client).
    """

    name = "access"

    def __init__(self, addresses: AddressList) -> None:
        self.addresses = addresses

    def request_head(self, exchange: Exchange, head: RequestHead) -> LocalReply | None:
        refused = self.addresses.refusal(client_address(exchange))
        if refused is None:
            return None
        exchange.notes["refused_by"] = "route." + refused
        exchange.factory.stats.refused["route_denied"] += 1
        return DENIED
