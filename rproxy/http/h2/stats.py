"""The HTTP/2 counters of one listener: L{H2Stats}."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["FLOODS", "H2Stats"]

#: the limits a client can run into, by the name their counter has.
FLOODS = (
    "rapid_reset",
    "settings",
    "ping",
    "priority",
    "empty_data",
    "header_block",
    "header_list",
    "concurrent_streams",
)


@dataclass
class H2Stats:
    """
    What a listener's HTTP/2 connections did.

    @ivar connections: connections that spoke HTTP/2, since start.
    @ivar open_connections: HTTP/2 connections open now.
    @ivar streams: streams opened by clients, since start.
    @ivar requests: exchanges those streams began (each counted in the
        listener's requests when it ends; malformed and refused streams
        have none).
    @ivar open_streams: streams with an exchange under way now.
    @ivar client_resets: streams the client reset before their response
        ended.
    @ivar stream_errors: streams rproxy reset or refused (malformed
        requests, a backend failing mid-response, after GOAWAY).
    @ivar stalled: streams reset because the client kept its window shut
        for the stall timeout.
    @ivar floods: per limit of L{FLOODS}, connections closed for going past
        it.
    """

    connections: int = 0
    open_connections: int = 0
    streams: int = 0
    requests: int = 0
    open_streams: int = 0
    client_resets: int = 0
    stream_errors: int = 0
    stalled: int = 0
    floods: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """The counters, for C{/status.json}."""
        return {
            "connections": self.connections,
            "open_connections": self.open_connections,
            "streams": self.streams,
            "requests": self.requests,
            "open_streams": self.open_streams,
            "client_resets": self.client_resets,
            "stream_errors": self.stream_errors,
            "stalled": self.stalled,
            "floods": {name: self.floods[name] for name in FLOODS},
        }
