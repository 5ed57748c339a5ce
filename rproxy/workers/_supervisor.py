"""The supervising process of C{workers = N}: the proxy's listeners bound
here and handed to the workers, the health checks, the admin interface and
the ACME client run here, once for the group.

L{SupervisorProxy} is a L{ProxyService} whose listeners hold their sockets
without accepting (L{rproxy.workers._ports.hold}), with a L{WorkerGroup}
that runs the workers.  A reload reads and applies the file here first; only
a config that applies here goes to the workers, so a bad file changes
nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rproxy.config import Config, ConfigError
from rproxy.config._admin import AdminConfig
from rproxy.service import ProxyService, ReloadError
from rproxy.tls import ServerCertificate
from rproxy.workers._group import WorkerGroup
from rproxy.workers._ports import hold
from rproxy.workers._worker import config_from_text

__all__ = ["GroupCaches", "SupervisorProxy", "read_config"]

log = Logger(namespace="rproxy.service")


def read_config(source: str) -> tuple[str, Config]:
    """
    The text of the config file C{source} and the config it holds.

    @raise ConfigError: if it cannot be read or has errors.
    """
    try:
        with open(source, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{source}: invalid TOML: not UTF-8 (byte {e.start})"]
        ) from None
    return text, config_from_text(text, source)


class SupervisorProxy(ProxyService):
    """
    The supervisor of C{config.workers} workers for the config file whose
    text is C{text}.

    @ivar group: the workers.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any,
        text: str,
        command: list[str] | None = None,
    ) -> None:
        self.ports = hold(reactor)
        self.group = WorkerGroup(self, config.workers, reactor, text, command)
        super().__init__(config, reactor)
        # After the listeners: they are bound when the workers start.
        self.group.setServiceParent(self)
        self.challenges.observe(self.group.challenge)

    def reload(self) -> list[str]:
        """
        Read the config file again, apply it here, then in every worker.
        """
        source = self.config.source
        try:
            text, config = read_config(source)
            workers = self.config.workers
            changes = self.apply(config)
        except (ConfigError, ReloadError) as error:
            log.error(
                "config {source} not reloaded, the running one stays: {errors}",
                source=source,
                errors="; ".join(error.errors),
            )
            return error.errors
        if config.workers != workers:
            changes.append(
                f"workers {workers} -> {config.workers} takes effect at the next start"
            )
        log.info(
            "config {source} reloaded: {changes}",
            source=source,
            changes="; ".join(changes) or "no changes",
        )
        self.group.reload(text, source)
        return []

    def pools_changed(self) -> None:
        """
        Push the pools to every worker now (changes are found within
        L{rproxy.workers._group.PUSH_INTERVAL} anyway).
        """
        self.group.push_pools()

    def certificates(self) -> list[ServerCertificate]:
        """
        The certificates ACME obtained, to give a worker that starts.
        """
        return list(self._obtained.values())

    def install_certificate(self, certificate: ServerCertificate) -> None:
        super().install_certificate(certificate)
        self.group.certificate(certificate)

    def _admin_service(self, config: AdminConfig) -> Any:
        admin = super()._admin_service(config)
        admin.group = self.group
        admin.caches = GroupCaches(self.caches.caches, self.group)
        return admin


class GroupCaches(Mapping[str, Any]):
    """
    The caches as the supervisor's admin interface sees them: each one's
    status is the supervisor's (the workers' counts are added to it), and a
    purge is done in every worker.
    """

    def __init__(self, own: Mapping[str, Any], group: WorkerGroup) -> None:
        self._own = own
        self._group = group

    def __getitem__(self, name: str) -> Any:
        return _GroupCache(name, self._own[name], self._group)

    def __iter__(self) -> Iterator[str]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)


class _GroupCache:
    def __init__(self, name: str, own: Any, group: WorkerGroup) -> None:
        self._name = name
        self._own = own
        self._group = group

    def snapshot(self) -> Any:
        return self._own.snapshot()

    def purge(self, url: str) -> Deferred[int]:
        return self._group.purge(self._name, url=url)

    def purge_prefix(self, prefix: str) -> Deferred[int]:
        return self._group.purge(self._name, prefix=prefix)
