"""The fronts a listener may have: the table from a listener's C{protocol} in
the config to what builds its factory.  Adding a kind of front is adding an
entry to L{FRONTS}; the listener service, the reload and the admin interface
see only L{IListenerFactory}."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from rproxy._fds import FdBudget
from rproxy.backends import Pool, Registry
from rproxy.config import Config
from rproxy.http.filters import IHTTPFilter
from rproxy.http.filters.rules import RuleSet
from rproxy.http.listener import HTTPProxyFactory
from rproxy.interfaces import IListenerFactory
from rproxy.limits.limiter import Limiter
from rproxy.service._build import http_settings
from rproxy.service._reload_plan import ListenerSpec
from rproxy.tcp import TCPProxyFactory
from rproxy.tcp.sni import SNIProxyFactory, SNIRoutes

__all__ = ["FRONTS", "Front", "FrontContext", "build_front"]


@frozen
class FrontContext:
    """
    What a front is built from besides its listener: the whole config, the
    proxy's pools, its reactor, and the built-in filters of HTTP fronts.

    @ivar new_pools: pools the config being applied adds, not in
        C{registry} yet.
    @ivar challenges: the filter answering ACME challenges, when the config
        has C{[acme]}; empty otherwise.
    @ivar redirect: the redirect to HTTPS for a TLS listener's
        C{redirect_http_from} port, given that listener's name.
    """

    config: Config
    registry: Registry
    reactor: Any
    new_pools: Mapping[str, Pool]
    challenges: tuple[IHTTPFilter, ...]
    redirect: Callable[[str], IHTTPFilter]
    #: the descriptor budget TCP and SNI fronts splice against.
    fds: FdBudget | None = None
    #: the caches routes name (L{rproxy.cache.shared.Cache}), by name.
    caches: Mapping[str, Any] = {}
    #: the running forward-auth filters (L{rproxy.service._auth.RunningAuth}).
    auth: Any = None
    #: the request rule sets routes may name, by name.
    rules: Mapping[str, RuleSet] = {}
    #: the rate limits (kept or new) HTTP listeners and routes name.
    limits: Mapping[str, Limiter] = {}

    def pool(self, name: str) -> Pool:
        """
        The pool called C{name}, added by this config or already running.
        """
        return self.new_pools.get(name) or self.registry.get(name)


#: what builds a listener's factory.
Front = Callable[[ListenerSpec, FrontContext], IListenerFactory]


def http_front(spec: ListenerSpec, context: FrontContext) -> IListenerFactory:
    """
    An HTTP listener, or the plain HTTP port that redirects to a TLS one;
    plain HTTP answers ACME challenges first when there are any.
    """
    listener, config = spec.config, context.config
    challenges = context.challenges
    if spec.redirect:
        redirect = (*challenges, context.redirect(listener.name))
        settings = http_settings(
            config, listener, redirect, tls=False, auth=context.auth
        )
    else:
        filters = challenges if listener.tls is None else ()
        settings = http_settings(
            config,
            listener,
            filters,
            caches=context.caches,
            auth=context.auth,
            rules=context.rules,
            limits=context.limits,
        )
    return HTTPProxyFactory(context.registry, context.reactor, settings)


def tcp_front(spec: ListenerSpec, context: FrontContext) -> IListenerFactory:
    """
    A tcp listener: passthrough to its pool, or, with C{sni_routes}, to the
    pool each ClientHello's server name routes to.
    """
    listener, config = spec.config, context.config
    if listener.sni_routes:
        return SNIProxyFactory(
            context.registry,
            SNIRoutes.from_routes(listener.sni_routes, listener.pool),
            context.reactor,
            listener=listener.name,
            client_hello_timeout=config.timeouts.client_hello,
            fds=context.fds,
        )
    assert listener.pool is not None
    return TCPProxyFactory(
        context.pool(listener.pool),
        context.reactor,
        listener=listener.name,
        fds=context.fds,
    )


#: the builder of each C{protocol} a listener may have in the config.
FRONTS: Mapping[str, Front] = {"http": http_front, "tcp": tcp_front}


def build_front(spec: ListenerSpec, context: FrontContext) -> IListenerFactory:
    """
    A new factory for C{spec}, as its C{protocol} says (a redirect port is
    HTTP, whatever its TLS listener is).
    """
    protocol = "http" if spec.redirect else spec.config.protocol
    return FRONTS[protocol](spec, context)
