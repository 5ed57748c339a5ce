"""The running forward-auth filters: one L{ForwardAuth} per listener, route
and settings, kept across a reload when those did not change (with its
counters and remembered answers), all asking through one persistent
connection pool, closed at shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred

from rproxy.http.filters._auth_client import AgentFetch, auth_pool
from rproxy.http.filters.auth import ForwardAuth
from rproxy.http.routing import Route

__all__ = ["RunningAuth", "auth_filters", "route_label"]


class RunningAuth:
    """
    The forward-auth filters of the config in use.  L{filter_for} gives a
    route its filter; L{commit} (once a config is applied) forgets the
    filters it did not ask for.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = auth_pool(reactor)
        self._fetch = AgentFetch(reactor, self.pool)
        self.filters: dict[tuple[Any, ...], ForwardAuth] = {}
        self._asked: set[tuple[Any, ...]] = set()

    def filter_for(self, listener: str, route: Route) -> ForwardAuth:
        """
        The filter of C{route}'s C{auth} on C{listener}.
        """
        key = (listener, route.host, route.path_prefix, route.auth)
        self._asked.add(key)
        found = self.filters.get(key)
        if found is None:
            found = self.filters[key] = ForwardAuth(
                route.auth, self._fetch, self.reactor
            )
        return found

    def commit(self) -> None:
        """
        Forget the filters no config applied since the last commit asked for.
        """
        for key in set(self.filters) - self._asked:
            del self.filters[key]
        self._asked = set()

    def close(self) -> Deferred[None]:
        """
        Close the connections to the auth services.
        """
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed


def route_label(route: Route) -> str:
    """
    A route as the metrics name it: its host and path prefix
    (C{"api.example.com/v1/"}), C{"*"} for a route with neither.
    """
    label = (route.host or "") + (route.path_prefix or "")
    return label or "*"


def auth_filters(service: Any) -> Iterator[tuple[str, ForwardAuth]]:
    """
    The forward-auth filters of a listener (a L{ListenerService}) in use,
    each with its route's L{route_label}.
    """
    settings = getattr(service.factory, "settings", None)
    routes = getattr(getattr(settings, "router", None), "routes", ())
    for route in routes:
        for one in route.filters:
            if isinstance(one, ForwardAuth):
                yield route_label(route), one
