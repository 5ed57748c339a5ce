"""Client endpoints for backends: the one place that turns an address into a
connectable Twisted endpoint."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint


def client_endpoint(
    reactor: Any, host: str, port: int, timeout: float
) -> IStreamClientEndpoint:
    """
    An endpoint that connects to C{host}:C{port}.

    IP literals connect directly; a hostname is resolved at each connect
    (with Twisted's happy-eyeballs L{HostnameEndpoint}).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if ip.version == 4:
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
