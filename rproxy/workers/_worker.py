"""One worker process: the proxy for the supervisor's config, serving the
listening sockets the supervisor handed over, with the pool picture, the
certificates and the ACME challenges the supervisor pushes.

A worker runs no health checks of its own for pools with active checks (the
supervisor does, once for the group), no admin interface and no ACME
client.  A pool with C{check = "none"} keeps its back-off here, as passive
health is each worker's own.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import attrs
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from prometheus_client import generate_latest
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rproxy.backends import Pool
from rproxy.config import BackendConfig, Config, ConfigError, PoolConfig, parse_config
from rproxy.config._admin import AdminConfig
from rproxy.health import HealthMonitor
from rproxy.service import ProxyService, ReloadError
from rproxy.tls import ServerCertificate
from rproxy.workers._control import STATS_INTERVAL, ControlProtocol, Message
from rproxy.workers._ports import Adopted
from rproxy.workers._snapshot import apply_pools, decode_pools

__all__ = [
    "WorkerControl",
    "WorkerProxy",
    "certificate_from_json",
    "certificate_to_json",
    "config_from_text",
]

log = Logger(namespace="rproxy.workers")


def config_from_text(text: str, source: str) -> Config:
    """
    The config in C{text}, read from the file C{source} (relative paths in
    it are relative to C{source}'s directory).

    @raise ConfigError: as L{rproxy.config.load_config} would.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"]) from None
    return parse_config(data, source)


def certificate_to_json(certificate: ServerCertificate) -> Message:
    """
    A certificate with its chain and key, as PEM text.
    """
    chain = [certificate.certificate, *certificate.chain]
    key = certificate.key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    return {
        "cert": "".join(c.public_bytes(Encoding.PEM).decode() for c in chain),
        "key": key.decode(),
        "source": certificate.source,
    }


def certificate_from_json(data: Message) -> ServerCertificate:
    """
    The inverse of L{certificate_to_json}.

    @raise ValueError: if it cannot be read.
    """
    return ServerCertificate.from_pem(
        data["cert"].encode(), data["key"].encode(), data.get("source", "acme")
    )


def _members(pool: Pool) -> tuple[BackendConfig, ...]:
    return tuple(
        BackendConfig(
            b.address, b.host, b.port, b.name, b.weight, b.max_connections, b.backup
        )
        for b in pool.backends
    )


class _Supervised(HealthMonitor):
    """
    A pool's health as the supervisor's checks decide it: nothing runs here.
    """

    def startService(self) -> None:
        self.running = True

    def stopService(self) -> None:
        self.running = False

    def sync(self) -> None:
        pass


class WorkerProxy(ProxyService):
    """
    The proxy of worker C{index}: a L{ProxyService} whose listeners adopt
    the sockets in C{ports}, without the admin interface and the ACME
    client, whose pools follow the supervisor's picture (L{apply_pictures}).
    """

    owns_shared_state = False
    runs_discovery = False

    def __init__(
        self, config: Config, reactor: Any, index: int, ports: Adopted
    ) -> None:
        self.index = index
        self.ports = ports
        super().__init__(self._own(config), reactor)
        #: what the status and the metrics are read from; never listens.
        self.stats_view = self._admin_service(AdminConfig(listen="tcp:0"))

    @staticmethod
    def _own(config: Config) -> Config:
        # The admin interface is the supervisor's.
        return attrs.evolve(config, admin=None)

    def apply(self, config: Config) -> list[str]:
        return super().apply(self._own(config))

    def _monitor(self, config: PoolConfig) -> None:
        if config.health.check == "none":
            super()._monitor(config)
            return
        monitor = _Supervised(
            self.registry.get(config.name),
            None,
            self.reactor,
            interval=config.health.interval,
        )
        monitor.setName(f"health:{config.name}")
        monitor.setServiceParent(self)
        self.monitors[config.name] = monitor

    def apply_pictures(self, data: object) -> None:
        """
        Make the pools match the supervisor's picture C{data}.
        """
        applied = apply_pools(
            self.registry, decode_pools(data), lambda pool: self._client_tls.get(pool)
        )
        for name in applied.resized:
            monitor = self.monitors.get(name)
            if monitor is not None and self.running:
                monitor.sync()
        if applied.removed:
            self._forget_connections(list(applied.removed))
        self._remember_members(applied.resized)

    def _remember_members(self, resized: tuple[str, ...]) -> None:
        """
        Write the members of the discovering pools among C{resized} into
        C{config}, as the supervisor's discovery does into its own: a reload
        keeps a discovering pool's members (see
        L{rproxy.service._discovery.RunningDiscovery.fill}), so they must be
        those in use, not the file's.
        """
        changed = {p.name for p in self.config.pools if p.discover is not None} & set(
            resized
        )
        if not changed:
            return
        pools = tuple(
            attrs.evolve(pool, backends=_members(self.registry.get(pool.name)))
            if pool.name in changed
            else pool
            for pool in self.config.pools
        )
        self.config = attrs.evolve(self.config, pools=pools)

    def status(self) -> Message:
        """
        This worker's status and metrics, for the supervisor.
        """
        return {
            "status": self.stats_view.status(),
            "metrics": generate_latest(self.stats_view.metrics).decode(),
        }


class WorkerControl:
    """
    What a worker does with the supervisor's messages, and its stats loop
    (every L{STATS_INTERVAL} seconds while the config has C{[admin]}).

    @ivar proxy: the proxy, once the C{start} message made it.
    """

    def __init__(self, reactor: Any, index: int) -> None:
        self.reactor = reactor
        self.index = index
        self.ports = Adopted(reactor)
        self.proxy: WorkerProxy | None = None
        self.channel: ControlProtocol | None = None
        self._stats = LoopingCall(self._send_stats)
        self._stats.clock = reactor
        self._samples = 0

    def handle(self, message: Message, fds: list[int]) -> Message | None:
        """
        Act on one message (see L{rproxy.workers._control}).
        """
        kind = message["type"]
        if kind == "start":
            try:
                self._start(message)
            except (Exception, SystemExit):  # a listener cannot listen, say
                # Exit: the supervisor starts a worker again, with back-off.
                log.failure("could not start")
                self.reactor.stop()
        elif kind == "listener":
            self.ports.add(
                message["name"], message["listen"], fds[0], message["family"]
            )
        elif kind == "config":
            return {"problems": self._reload(message["config"], message["source"])}
        elif self.proxy is None:
            log.error("{kind} before start", kind=kind)
        elif kind == "pools":
            self.proxy.apply_pictures(message["pools"])
        elif kind == "certificate":
            self.proxy.install_certificate(certificate_from_json(message))
        elif kind == "purge":
            return {"purged": self._purge(message)}
        elif kind == "challenge":
            if message.get("answer") is None:
                self.proxy.challenges.withdraw(message["token"])
            else:
                self.proxy.challenges.publish(message["token"], message["answer"])
        else:
            log.error("unknown message {kind}", kind=kind)
        return None

    def _purge(self, message: Message) -> int:
        assert self.proxy is not None
        cache = self.proxy.caches.caches.get(message["cache"])
        if cache is None:
            return 0
        if message.get("url"):
            return int(cache.purge(message["url"]))
        return int(cache.purge_prefix(message["prefix"]))

    def _start(self, message: Message) -> None:
        for handed in message["listeners"]:
            self.ports.add(
                handed["name"], handed["listen"], handed["fd"], handed["family"]
            )
        config = config_from_text(message["config"], message["source"])
        proxy = self.proxy = WorkerProxy(config, self.reactor, self.index, self.ports)
        proxy.privilegedStartService()
        proxy.startService()
        assert self.channel is not None
        self.channel.send({"type": "ready", "pid": os.getpid()})
        self._report(config)

    def _reload(self, text: str, source: str) -> list[str]:
        if self.proxy is None:
            return ["not started"]
        try:
            config = config_from_text(text, source)
            changes = self.proxy.apply(config)
        except (ConfigError, ReloadError) as error:
            log.error(
                "config {source} not applied: {errors}",
                source=source,
                errors="; ".join(error.errors),
            )
            return error.errors
        log.info(
            "config {source} applied: {changes}",
            source=source,
            changes="; ".join(changes) or "no changes",
        )
        self._report(config)
        return []

    def _report(self, config: Config) -> None:
        """
        Send stats while the config has an admin interface (in the
        supervisor) to show them.
        """
        if config.admin is not None and not self._stats.running:
            self._stats.start(STATS_INTERVAL, now=True)
        elif config.admin is None and self._stats.running:
            self._stats.stop()

    def _send_stats(self) -> None:
        if self.proxy is None or self.channel is None:
            return
        # The rates are worked out from samples, one every few reports.
        if self._samples % 5 == 0:
            self.proxy.stats_view.sample()
        self._samples += 1
        self.channel.send({"type": "stats", **self.proxy.status()})

    def stop(self) -> Any:
        """
        Stop reporting and stop the proxy (it drains); a Deferred.
        """
        if self._stats.running:
            self._stats.stop()
        self.ports.close()
        if self.proxy is not None and self.proxy.running:
            return self.proxy.stopService()
        return None
