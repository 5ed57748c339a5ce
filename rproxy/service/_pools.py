"""The pools side of L{rproxy.service.ProxyService}: L{PoolUpkeep} applies a
config's pools to the registry (added, changed in place, removed) and keeps
one health monitor per pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import IServiceCollection

from rproxy.backends import Backend, Registry
from rproxy.config import Config, PoolConfig
from rproxy.health import HealthMonitor
from rproxy.service._build import build_check
from rproxy.service._pool_update import TLSFor, update_pool
from rproxy.service._reload_plan import Prepared

if TYPE_CHECKING:
    from rproxy.service._listeners import ListenerService

__all__ = ["PoolUpkeep"]


class PoolUpkeep:
    """
    What a proxy does with its config's pools: L{_apply_pools} and
    L{_remove_pools} on each config applied, one L{HealthMonitor} per pool
    (L{_monitor}, which a worker of L{rproxy.workers} overrides), and the
    listeners told to forget the connections to backends that went.
    """

    reactor: Any
    registry: Registry
    monitors: dict[str, HealthMonitor]
    listeners: dict[str, ListenerService]
    running: int
    _client_tls: dict[str, TLSFor]

    def _apply_pools(
        self, old: Config | None, new: Config, prepared: Prepared
    ) -> list[str]:
        changes = []
        old_pools = {} if old is None else {p.name: p for p in old.pools}
        self._client_tls.update(prepared.client_tls)
        for config in new.pools:
            was = old_pools.get(config.name)
            if was is None:
                self.registry.add(prepared.pools[config.name])
                self._monitor(config)
                if old is not None:
                    changes.append(f"pool {config.name} added")
                continue
            pool = self.registry.get(config.name)
            tls_for = self._client_tls[config.name]
            if was == config:
                if tls_for is not None:
                    for backend in pool.backends:
                        backend.tls = tls_for(backend.host)
                continue
            stale = update_pool(pool, was, config, tls_for)
            self._forget_connections(stale)
            if (was.health, was.send_proxy) != (config.health, config.send_proxy):
                self.monitors.pop(config.name).disownServiceParent()
                self._monitor(config)
            elif self.running:
                self.monitors[config.name].sync()
            changes.append(f"pool {config.name} changed")
        return changes

    def _monitor(self, config: PoolConfig) -> None:
        monitor = HealthMonitor(
            self.registry.get(config.name),
            build_check(self.reactor, config.health, config.send_proxy),
            self.reactor,
            interval=config.health.interval,
            timeout=config.health.timeout,
        )
        monitor.setName(f"health:{config.name}")
        monitor.setServiceParent(cast(IServiceCollection, self))
        self.monitors[config.name] = monitor

    def _remove_pools(self, new: Config) -> list[str]:
        changes = []
        keep = {p.name for p in new.pools}
        for pool in list(self.registry):
            if pool.name in keep:
                continue
            self.monitors.pop(pool.name).disownServiceParent()
            self.registry.remove(pool.name)
            self._client_tls.pop(pool.name, None)
            self._forget_connections(pool.backends)
            changes.append(f"pool {pool.name} removed")
        return changes

    def _forget_connections(self, backends: list[Backend]) -> None:
        for service in self.listeners.values():
            service.factory.forget(backends)
