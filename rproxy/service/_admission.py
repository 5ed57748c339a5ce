"""From the config's connection limits and address lists to what enforces
them: a listener's L{Admission} (L{admission_for}), and the
L{ClientAccess} filter of each route with lists (L{routes_with_access})."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import evolve

from rproxy.admission import AcceptRate, AddressList, Admission
from rproxy.config import ListenerConfig
from rproxy.http.filters.access import ClientAccess
from rproxy.http.routing import Route

__all__ = ["admission_for", "routes_with_access"]


def admission_for(listener: ListenerConfig) -> Admission | None:
    """
    The rules C{listener}'s connections are admitted by, or None if it has
    none.  A new one each time: L{rproxy.service._listeners.ListenerService.replace}
    carries the accept rate's counts over.
    """
    config = listener.admission
    if not config:
        return None
    rate = None
    if config.accept_rate_per_ip is not None:
        count, period = config.accept_rate_per_ip
        rate = AcceptRate(count, period, config.burst)
    lists = config.addresses
    return Admission(
        max_connections=config.max_connections,
        max_per_client=config.max_connections_per_ip,
        rate=rate,
        addresses=AddressList(lists.allow, lists.deny) if lists else None,
    )


def routes_with_access(routes: Sequence[Route]) -> tuple[Route, ...]:
    """
    C{routes}, each with address lists given their filter, first of its
    own.
    """
    return tuple(_with_access(route) for route in routes)


def _with_access(route: Route) -> Route:
    lists = route.access
    if not lists:
        return route
    access: Any = ClientAccess(AddressList(lists.allow, lists.deny))
    return evolve(route, filters=(access, *route.filters))
