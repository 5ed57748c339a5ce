"""The resolver a pool's discovery asks: a L{twisted.names.client.Resolver}
for the configured server or those of resolv.conf, and how to close it."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IResolver
from twisted.names import client

from rproxy.config._discovery import DiscoveryConfig

__all__ = ["RESOLV_CONF", "close_resolver", "make_resolver"]

#: where the system's DNS servers are listed.
RESOLV_CONF = "/etc/resolv.conf"


def make_resolver(config: DiscoveryConfig, reactor: Any) -> IResolver:
    """
    A resolver asking C{config.resolver}, or the servers of resolv.conf
    (read again when it changes) if none is set.  It asks over UDP and
    again over TCP when an answer is truncated, and caches nothing.
    """
    resolver: IResolver
    if config.resolver is not None:
        resolver = client.Resolver(servers=[config.resolver], reactor=reactor)
    else:
        resolver = client.Resolver(resolv=RESOLV_CONF, reactor=reactor)
    return resolver


def close_resolver(resolver: IResolver) -> None:
    """
    Stop C{resolver} polling resolv.conf and close its TCP connections.
    """
    parse = getattr(resolver, "_parseCall", None)
    if parse is not None and parse.active():
        parse.cancel()
    for protocol in list(getattr(resolver, "connections", ())):
        transport = protocol.transport
        if transport is not None:
            transport.loseConnection()
