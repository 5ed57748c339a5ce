"""Builds the running proxy from a L{Config}: registry, health monitors and
listeners, under one L{MultiService}; applies a new L{Config} on reload as a
difference, keeping what did not change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from rproxy._fds import FdBudget, kept_alive_most, raise_fd_limit, soft_fd_limit
from rproxy.accesslog import AccessLogService
from rproxy.acme.challenges import Challenges
from rproxy.backends import Registry
from rproxy.config import Config, ConfigError, load_config
from rproxy.config._admin import AdminConfig
from rproxy.health import HealthMonitor
from rproxy.http.filters import IHTTPFilter
from rproxy.http.filters.acme import AcmeChallenges
from rproxy.http.filters.redirect import HTTPSRedirect
from rproxy.http.filters.rules import RuleSet
from rproxy.interfaces import IListenerFactory
from rproxy.service._admission import admission_for
from rproxy.service._auth import RunningAuth
from rproxy.service._build import (
    access_log_service,
    build_check,
    build_pool,
    client_tls,
    http_settings,
    listener_certificates,
    server_tls,
    tls_problem,
)
from rproxy.service._caches import RunningCaches
from rproxy.service._discovery import RunningDiscovery
from rproxy.service._fronts import FrontContext, build_front
from rproxy.service._limits import RunningLimits
from rproxy.service._listeners import ListenerService, PortSource
from rproxy.service._pool_update import TLSFor
from rproxy.service._pools import PoolUpkeep
from rproxy.service._reload_plan import (
    ListenerSpec,
    Prepared,
    ReloadError,
    listener_specs,
)
from rproxy.service._rules import build_rule_sets, rule_changes
from rproxy.tls import ServerCertificate, ServerTLS

if TYPE_CHECKING:
    from rproxy.admin import AdminService

__all__ = [
    "ProxyService",
    "ReloadError",
    "build_check",
    "build_pool",
    "client_tls",
    "http_settings",
    "listener_certificates",
    "server_tls",
]

log = Logger(namespace="rproxy.service")


class ProxyService(PoolUpkeep, MultiService):
    """
    The whole proxy for one L{Config}: one health monitor per pool, one
    listener per listener, sharing one L{Registry}, and the access log if
    the config names one.  The access log starts before the listeners and
    stops after they have drained, so it records every connection.

    L{apply} changes a running proxy to a new config, changing only what
    differs (L{reload} reads the config file again and applies it); the
    registry's pools and backends that stay keep their health and counters.

    A TLS listener's certificates are in C{tls[name]}.  With C{[acme]},
    C{acme} obtains and renews a certificate, every plain HTTP listener
    answers its challenges from C{challenges}, and every TLS listener serves
    it.  With C{[admin]}, C{admin} serves the status page, metrics and
    controls (and L{reload} as C{POST /reload}).

    Pools with C{discover} take their backends from DNS: C{discovery}
    (L{rproxy.service._discovery.RunningDiscovery}) runs one
    L{rproxy.discovery.DNSDiscovery} per such pool and applies each changed
    answer as a reload of that pool would.

    Starting raises the soft RLIMIT_NOFILE (L{rproxy.raise_fd_limit}) and
    sizes C{fds}, the descriptor budget the listeners accept against.

    A subclass may set C{ports} (where listeners get their ports instead of
    binding their endpoints) and C{owns_shared_state} (False in a worker of
    L{rproxy.workers}: what the workers share runs in their supervisor, so
    no ACME client here, certificates arrive by L{install_certificate}).
    """

    ports: PortSource | None = None
    owns_shared_state = True
    #: whether this process asks DNS for the pools with C{discover} (a
    #: worker of a supervisor does not: the supervisor's pools do).
    runs_discovery = True

    def __init__(self, config: Config, reactor: Any):
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.access_log: AccessLogService | None = None
        self.registry = Registry()
        self.monitors: dict[str, HealthMonitor] = {}
        self.listeners: dict[str, ListenerService] = {}
        self.tls: dict[str, ServerTLS] = {}
        self.challenges = Challenges()
        self.acme: Service | None = None
        self.admin: AdminService | None = None
        self._client_tls: dict[str, TLSFor] = {}
        self._obtained: dict[tuple[str, ...], ServerCertificate] = {}
        self._retiring: set[Deferred[None]] = set()
        #: the request rule sets in use, by name.
        self.rule_sets: dict[str, RuleSet] = {}
        self.fds = FdBudget(soft_fd_limit(), now=reactor.seconds)
        self.caches = RunningCaches(reactor)
        self.auth = RunningAuth(reactor)
        self.limits = RunningLimits(reactor)
        self.discovery = RunningDiscovery(self, reactor)
        self._apply(None, config)

    # Applying a config --------------------------------------------------

    def reload(self) -> list[str]:
        """
        Read the config file again and apply it (see L{apply}).  A file
        with errors, or one that cannot be applied, changes nothing: the
        problems are logged and returned.

        @return: the problems; empty if the new config is in use.
        """
        source = self.config.source
        try:
            config = load_config(source)
            changes = self.apply(config)
        except (ConfigError, ReloadError) as error:
            log.error(
                "config {source} not reloaded, the running one stays: {errors}",
                source=source,
                errors="; ".join(error.errors),
            )
            return error.errors
        log.info(
            "config {source} reloaded: {changes}",
            source=source,
            changes="; ".join(changes) or "no changes",
        )
        return []

    def apply(self, config: Config) -> list[str]:
        """
        Change the proxy to what C{config} describes, changing only what
        differs from the config in use.

          - Pools and backends are matched by name; those that stay keep
            their health, admin state and counters (see
            L{rproxy.service._pool_update.update_pool}).
          - A listener whose C{listen} is unchanged keeps its port: new
            connections get the new settings, open ones finish on theirs
            (an HTTP connection takes the new settings at its next request).
          - A listener that is gone, or listens elsewhere now, stops
            accepting at once and drains like at shutdown.
          - TLS listeners read their certificate files again.

        Everything that can fail is done first: new ports are bound, files
        read.  If any of it fails nothing changes.

        @return: what changed, for the log.
        @raise ReloadError: if the config cannot be applied.
        """
        return self._apply(self.config, config)

    def _apply(self, old: Config | None, new: Config) -> list[str]:
        new = self.discovery.fill(old, new)
        prepared = self._prepare(old, new)
        changes = self._apply_pools(old, new, prepared)
        changes += self._apply_listeners(old, new, prepared)
        changes += self.caches.commit(new.caches, prepared.caches)
        self.auth.commit()
        changes += self.limits.commit(new.limits, prepared.limits)
        self._apply_rest(old, new, prepared)
        if old is not None:
            changes += rule_changes(self.rule_sets, prepared.rules)
        self.rule_sets = prepared.rules
        self.config = new
        changes += self.discovery.commit(new)
        if old is not None:
            changes += [
                f"{section} changed"
                for section in ("access_log", "admin", "acme", "shutdown_grace")
                if getattr(old, section) != getattr(new, section)
            ]
        return changes

    def _prepare(self, old: Config | None, new: Config) -> Prepared:
        prepared = Prepared(specs=listener_specs(new))
        prepared.caches = self.caches.prepare(new.caches)
        prepared.rules = build_rule_sets(new.rules, self.rule_sets, self.reactor)
        prepared.limits = self.limits.prepare(new.limits)
        problems = []
        old_pools = {} if old is None else {p.name: p for p in old.pools}
        for pool in new.pools:
            # Backend TLS files are read on every reload, like the
            # listeners' certificates, so that SIGHUP picks up new ones.
            try:
                tls_for = None if pool.tls is None else client_tls(pool.tls)
            except ValueError as error:
                problems.append(f"pool {pool.name}: {error}")
                continue
            prepared.client_tls[pool.name] = tls_for
            if pool.name not in old_pools:
                prepared.pools[pool.name] = build_pool(pool, self.reactor, tls_for)
        for spec in prepared.specs.values():
            if spec.tls is not None:
                # Contexts are built here, so that a certificate OpenSSL
                # refuses (a key too small, say) refuses the reload.
                try:
                    tls = server_tls(
                        spec.tls,
                        http=spec.config.protocol == "http",
                        http2=spec.config.http2,
                    )
                    for certificate in self._obtained.values():
                        tls.install(certificate)
                except (ValueError, SSL.Error) as error:
                    problems.append(f"listener {spec.name}: {tls_problem(error)}")
                    continue
                prepared.tls[spec.name] = tls
        if problems:
            raise ReloadError(problems)
        if old is not None and new.access_log != old.access_log:
            prepared.access_log = access_log_service(new, self.reactor)
            if prepared.access_log is not None and self.running:
                try:
                    prepared.access_log.startService()
                except SystemExit as error:
                    raise ReloadError([str(error.code)]) from None
        self._bind(new, prepared)
        return prepared

    def _bind(self, new: Config, prepared: Prepared) -> None:
        """
        Make a service for each listener that needs a new port, and bind
        them if running; on any failure unbind those bound.
        """
        for spec in prepared.specs.values():
            running = self.listeners.get(spec.name)
            if running is not None and running.description == spec.listen:
                continue
            factory = self._factory(spec, new, prepared)
            service = ListenerService(
                spec.name,
                spec.listen,
                factory,
                self.reactor,
                new.shutdown_grace,
                prepared.tls.get(spec.name),
                spec.accept_proxy(new),
                self.fds,
                admission_for(spec.config),
                self.ports,
            )
            service.setName(f"listener:{spec.name}")
            prepared.fresh[spec.name] = service
        if new.admin is not None and (
            self.admin is None or self.admin.config.listen != new.admin.listen
        ):
            prepared.admin = self._admin_service(new.admin)
        if not self.running:
            return
        bound: list[ListenerService | AdminService] = []
        binding: list[ListenerService | AdminService] = list(prepared.fresh.values())
        if prepared.admin is not None:
            binding.append(prepared.admin)
        for starting in binding:
            try:
                starting.privilegedStartService()
            except SystemExit as error:
                for done in bound:
                    done.stopService()
                if prepared.access_log is not None:
                    prepared.access_log.stopService()
                raise ReloadError([str(error.code)]) from None
            bound.append(starting)

    def _admin_service(self, config: AdminConfig) -> AdminService:
        from rproxy.admin import AdminService

        admin = AdminService(
            config,
            self.registry,
            self.listeners,
            self.reactor,
            # Looked up when asked for, so an embedder may replace it.
            lambda: self.reload(),
            caches=self.caches.caches,
            limits=self.limits.limiters,
            discovery=self.discovery.states,
        )
        admin.setName("admin")
        return admin

    def _apply_listeners(
        self, old: Config | None, new: Config, prepared: Prepared
    ) -> list[str]:
        changes = []
        specs = prepared.specs
        before = {} if old is None else listener_specs(old)
        for name, service in list(self.listeners.items()):
            spec = specs.get(name)
            if spec is None or name in prepared.fresh:
                self._retire(service)
                del self.listeners[name]
                self.tls.pop(name, None)
                if spec is None:
                    changes.append(f"listener {name} removed")
                continue
            factory = self._factory(spec, new, prepared)
            tls = self._listener_tls(spec, prepared)
            service.replace(
                factory, tls, spec.accept_proxy(new), admission_for(spec.config)
            )
            service.grace = new.shutdown_grace
            if before[name] != spec:
                changes.append(f"listener {name} changed")
        for name, service in prepared.fresh.items():
            service.setServiceParent(self)
            self.listeners[name] = service
            if service.tls is not None:
                self.tls[name] = service.tls
            if old is not None:
                changes.append(f"listener {name} on {service.description}")
        return changes + self._remove_pools(new)

    def _listener_tls(self, spec: ListenerSpec, prepared: Prepared) -> ServerTLS | None:
        tls = prepared.tls.get(spec.name)
        if tls is None:
            self.tls.pop(spec.name, None)
        else:
            self.tls[spec.name] = tls
        return tls

    def _retire(self, service: ListenerService) -> None:
        """
        Stop C{service} accepting now; it drains in the background, and a
        stop of the whole proxy waits for it.
        """
        stopping = service.disownServiceParent()
        if isinstance(stopping, Deferred):
            self._retiring.add(stopping)
            stopping.addBoth(lambda _: self._retiring.discard(stopping))

    def _apply_rest(self, old: Config | None, new: Config, prepared: Prepared) -> None:
        if old is None:
            self.access_log = access_log_service(new, self.reactor)
        elif new.access_log != old.access_log:
            if self.access_log is not None and self.running:
                self.access_log.stopService()
            self.access_log = prepared.access_log
        self._apply_admin(new, prepared)
        if old is not None and new.acme == old.acme:
            return
        if self.acme is not None:
            self.acme.disownServiceParent()
            self.acme = None
            # What the old settings obtained is not served to listeners
            # added from now on (those serving it keep it until replaced).
            self._obtained.clear()
        if new.acme is not None and self.owns_shared_state:
            from rproxy.acme.service import AcmeService

            self.acme = AcmeService(
                new.acme, self.reactor, self.challenges, self.install_certificate
            )
            self.acme.setName("acme")
            self.acme.setServiceParent(self)

    def _apply_admin(self, new: Config, prepared: Prepared) -> None:
        if prepared.admin is not None or new.admin is None:
            if self.admin is not None:
                self.admin.disownServiceParent()
            self.admin = prepared.admin
            if self.admin is not None:
                self.admin.setServiceParent(self)
        elif self.admin is not None:
            self.admin.config = new.admin
            self.admin.token = new.admin.token

    def _challenge_filters(self, config: Config) -> tuple[IHTTPFilter, ...]:
        if config.acme is None:
            return ()
        return (AcmeChallenges(self.challenges),)

    def _factory(
        self, spec: ListenerSpec, config: Config, prepared: Prepared
    ) -> IListenerFactory:
        """
        A new factory for C{spec} (a running listener decides whether it
        takes it or only its settings: see L{ListenerService.replace}).
        """
        context = FrontContext(
            config,
            self.registry,
            self.reactor,
            prepared.pools,
            self._challenge_filters(config),
            self._redirect_filter,
            self.fds,
            prepared.caches,
            self.auth,
            prepared.rules,
            prepared.limits,
        )
        return build_front(spec, context)

    def _redirect_filter(self, listener: str) -> IHTTPFilter:
        """
        The redirect to the TLS listener called C{listener}.
        """

        def https_port() -> int | None:
            # The bound port (the file may say 0): the https listener binds
            # before its redirect listener, so it is known by any request.
            service = self.listeners.get(listener)
            return None if service is None else getattr(service.bound, "port", None)

        return HTTPSRedirect(https_port)

    def pools_changed(self) -> None:
        """
        Called after a pool's members changed outside a reload (backends
        found by discovery, say): here nothing more is needed; a supervisor
        of workers pushes the pools to them at once.
        """

    # Certificates ---------------------------------------------------------

    def install_certificate(self, certificate: ServerCertificate) -> None:
        """
        Serve C{certificate} (obtained by ACME) on every TLS listener, and
        on those a reload adds, for new handshakes.
        """
        self._obtained[certificate.names] = certificate
        for tls in self.tls.values():
            tls.install(certificate)
        log.info(
            "certificate for {names} (until {not_after}) installed on {count} "
            "TLS listeners",
            names=", ".join(certificate.names),
            not_after=certificate.not_after.isoformat(),
            count=len(self.tls),
        )

    # Starting and stopping ------------------------------------------------

    def startService(self) -> None:
        if self.access_log is not None:
            self.access_log.startService()
        self.limits.start()
        super().startService()
        # After binding: the listening sockets count as open.
        self.fds.resize_to(raise_fd_limit(kept_alive=kept_alive_most(self.config)))

    def stopService(self) -> Deferred[Any]:
        stopping: Deferred[Any] = super().stopService()
        if self._retiring:
            # Listeners a reload removed may still be draining.
            stopping = gatherResults([stopping, *self._retiring])
        access_log = self.access_log

        def stop_log(result: object) -> object:
            if access_log is not None:
                access_log.stopService()
            return result

        def close_caches(result: object) -> Deferred[Any]:
            # After the listeners drained: nothing is storing any more.
            closing = gatherResults([self.caches.close(), self.auth.close()])
            return closing.addBoth(lambda _: result)

        def stop_limits(result: object) -> Deferred[object]:
            # After the listeners drained: no request checks a store now.
            return self.limits.stop().addBoth(lambda _: result)

        return stopping.addBoth(close_caches).addBoth(stop_limits).addBoth(stop_log)
