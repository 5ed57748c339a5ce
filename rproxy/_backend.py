"""One backend: its address, its state (health and an operator's wishes) and
its live counters.  L{rproxy.backends} re-exports everything here; the
pool and the registry that hold backends live there."""

from __future__ import annotations

import ipaddress
from enum import Enum

from attrs import define, field, setters, validators
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from rproxy.stats import LatencyHistogram, new_class_counts

__all__ = [
    "AdminState",
    "Backend",
    "BackendState",
    "format_address",
    "parse_address",
]


class BackendState(Enum):
    """
    What a backend is to new traffic.

    Health decides between C{UP} and C{DOWN}; an operator's drain or disable
    takes precedence over health.
    """

    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    DISABLED = "disabled"


class AdminState(Enum):
    """
    What an operator has asked of a backend, whatever its health.
    """

    ENABLED = "enabled"
    DRAINING = "draining"
    DISABLED = "disabled"


# A module name for the member is_up reads on every pick: an Enum member
# lookup costs several times a global one.
_ENABLED = AdminState.ENABLED


def parse_address(address: str) -> tuple[str, int]:
    """
    Split C{host:port} (IPv6 as C{[::1]:port}) into a host and a port.

    @raise ValueError: with a message fit for a config error.
    """
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {address!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected 'host:port', got {address!r}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address as '[{host}]:port'")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """
    The inverse of L{parse_address}.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Validators run when a backend is built; assignments (counters change on every
# chunk relayed) are plain attribute writes.
@define(eq=False, on_setattr=setters.NO_OP)
class Backend:
    """
    One server behind a pool, with its live state and counters.

    Construct with L{Backend.from_address} or directly with a host and port.
    Counters only grow; C{active} is the number of connections open now (for
    HTTP, the requests in flight: an idle kept-alive connection holds none).
    C{bytes_in} and C{bytes_out} count bytes to and from it.
    """

    host: str
    port: int
    name: str = ""
    #: change a live backend's weight with L{Pool.set_weight}, which tells
    #: the balancer.
    weight: int = field(default=1, validator=validators.ge(1))
    max_connections: int | None = None
    backup: bool = False
    #: how to speak TLS to it (a Twisted client connection creator, as
    #: L{rproxy.tls.backend_tls} makes); None for plain TCP.
    tls: IOpenSSLClientConnectionCreator | None = None

    #: C{address} as bytes, made once (host and port never change): what an
    #: HTTP request's Host says when the backend's address is sent.
    address_bytes: bytes = field(init=False, default=b"", repr=False)
    healthy: bool = True
    admin: AdminState = AdminState.ENABLED
    active: int = 0
    connections_total: int = 0
    failures_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: consecutive passes / failures seen since health last changed.
    passes: int = 0
    fails: int = 0
    #: when and why health or admin state last changed (seconds since epoch).
    changed_at: float = 0.0
    reason: str = "initial state"
    #: the result of the last active check: None before the first one.
    last_check_ok: bool | None = None
    last_check_at: float | None = None
    last_check_duration: float | None = None
    #: taken out of balancing for answering too many 5xx (L{rproxy.outlier}),
    #: whatever its health, until C{ejected_until} (seconds since epoch).
    ejected: bool = False
    ejected_until: float | None = None
    #: how often it was ejected.
    ejections_total: int = 0
    #: HTTP exchanges sent to it, by the class of its response
    #: (L{rproxy.stats.STATUS_CLASSES}; C{none}: it sent no response).
    responses: list[int] = field(factory=new_class_counts)
    #: how long it took to start each HTTP response.
    latency: LatencyHistogram = field(factory=LatencyHistogram)

    def __attrs_post_init__(self) -> None:
        self.address_bytes = format_address(self.host, self.port).encode()
        if not self.name:
            self.name = format_address(self.host, self.port)

    @classmethod
    def from_address(cls, address: str, **kwargs: object) -> Backend:
        """
        Build a backend from C{host:port}; keyword arguments set the rest.
        """
        host, port = parse_address(address)
        return cls(host, port, **kwargs)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        """
        C{host:port}, as written in a config file.
        """
        return format_address(self.host, self.port)

    @property
    def state(self) -> BackendState:
        """
        The state new traffic sees: admin state first, then health.
        """
        if self.admin is AdminState.DISABLED:
            return BackendState.DISABLED
        if self.admin is AdminState.DRAINING:
            return BackendState.DRAINING
        return BackendState.UP if self.healthy else BackendState.DOWN

    @property
    def is_up(self) -> bool:
        """
        Healthy, enabled and not ejected: a candidate unless full.
        """
        return self.healthy and self.admin is _ENABLED and not self.ejected

    @property
    def is_full(self) -> bool:
        """
        Whether C{max_connections} connections are open now.
        """
        return self.max_connections is not None and self.active >= self.max_connections
