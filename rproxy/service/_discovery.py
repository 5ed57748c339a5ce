"""The discovery of a running proxy: one L{DNSDiscovery} per pool with
C{discover}, kept across reloads whose discover settings are unchanged, and
every changed answer applied to the pool the way a reload changes it
(L{rproxy.service._pool_update.update_pool}: new backends are checked before
they take traffic and ramp up under C{slow_start}, removed ones finish what
they carry, the others keep their state and counters)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet.interfaces import IResolver

from rproxy.config import BackendConfig, Config
from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery import (
    AnswerChange,
    DiscoveryState,
    DNSDiscovery,
    close_resolver,
    make_resolver,
)
from rproxy.service._pool_update import update_pool

if TYPE_CHECKING:
    from rproxy.service import ProxyService

__all__ = ["RunningDiscovery"]

#: makes the resolver one pool's discovery asks.
ResolverFor = Callable[[DiscoveryConfig], IResolver]


class RunningDiscovery:
    """
    The discovery services of one L{ProxyService} (children of it, so they
    start and stop with it), by pool name.

    The proxy's C{config} holds, for a discovering pool, the backends of
    the last answer applied, so that a reload compares like with like.
    Whatever process owns the pools and runs their health checks hosts
    this (in workers mode, the supervisor): it needs only the owner's
    C{config}, C{registry}, C{monitors} and its way to drop idle
    connections to removed backends.  An owner whose C{runs_discovery} is
    false (a worker, whose pools follow the supervisor's) starts none; one
    with a C{pools_changed()} method has it called after every change.
    """

    def __init__(
        self, owner: ProxyService, reactor: Any, resolver: ResolverFor | None = None
    ) -> None:
        self._owner = owner
        self._reactor = reactor
        #: makes the resolver a pool's discovery asks, when it starts (an
        #: embedder or a test may replace it).
        self.resolver_for: ResolverFor = resolver or (
            lambda c: make_resolver(c, reactor)
        )
        self.services: dict[str, DNSDiscovery] = {}

    @property
    def states(self) -> Mapping[str, DiscoveryState]:
        """
        Each discovering pool's state, by pool name (looked up when read).
        """
        return _States(self.services)

    def fill(self, old: Config | None, new: Config) -> Config:
        """
        C{new} with the backends in use now given to each discovering pool
        that exists already: those of the last answer (or the file's, for a
        pool that discovers from now on) stay until its source answers.
        """
        if old is None:
            return new
        before = {p.name: p for p in old.pools}
        pools = tuple(
            evolve(pool, backends=before[pool.name].backends)
            if pool.discover is not None and pool.name in before
            else pool
            for pool in new.pools
        )
        return evolve(new, pools=pools)

    def commit(self, new: Config) -> list[str]:
        """
        Start discovery for the pools of C{new} that discover and did not
        (or differently), stop it for the others; pools whose discover
        settings are unchanged keep theirs, with its schedule.
        """
        changes: list[str] = []
        if not self._owner.runs_discovery:
            return changes
        wanted = {p.name: p for p in new.pools if p.discover is not None}
        for name, service in list(self.services.items()):
            pool = wanted.get(name)
            if pool is not None and pool.discover == service.config:
                continue
            service.disownServiceParent()
            del self.services[name]
            if pool is None:
                changes.append(f"pool {name} no longer discovered")
        for name, pool in wanted.items():
            if name in self.services:
                continue
            assert pool.discover is not None
            service = DNSDiscovery(
                name,
                pool.discover,
                partial(self._resolver, pool.discover),
                self._reactor,
                partial(self.apply, name),
                current=pool.backends,
                close=close_resolver,
            )
            service.setName(f"discovery:{name}")
            service.setServiceParent(self._owner)
            self.services[name] = service
        return changes

    def _resolver(self, config: DiscoveryConfig) -> IResolver:
        return self.resolver_for(config)

    def apply(
        self, name: str, backends: tuple[BackendConfig, ...], change: AnswerChange
    ) -> None:
        """
        Change the pool C{name} to C{backends}, as a reload that changed
        only its backends would.
        """
        owner = self._owner
        config = owner.config
        old = next(p for p in config.pools if p.name == name)
        new = evolve(old, backends=backends)
        pool = owner.registry.get(name)
        stale = update_pool(pool, old, new, owner._client_tls.get(name))
        owner._forget_connections(stale)
        monitor = owner.monitors.get(name)
        if monitor is not None and monitor.running:
            monitor.sync()
        owner.config = evolve(
            config,
            pools=tuple(new if p.name == name else p for p in config.pools),
        )
        # An owner that hands its pools on (the workers' supervisor) does
        # so at once.
        pools_changed = getattr(owner, "pools_changed", None)
        if pools_changed is not None:
            pools_changed()


class _States(Mapping[str, DiscoveryState]):
    def __init__(self, services: Mapping[str, DNSDiscovery]) -> None:
        self._services = services

    def __getitem__(self, name: str) -> DiscoveryState:
        return self._services[name].state

    def __iter__(self) -> Any:
        return iter(list(self._services))

    def __len__(self) -> int:
        return len(self._services)
