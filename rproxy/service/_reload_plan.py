"""What a config reload works from: the ports a config listens on, what is
made before anything changes, and the error that refuses a reload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import Factory, define, frozen

from rproxy.accesslog import AccessLogService
from rproxy.backends import Pool
from rproxy.config import Config, ListenerConfig
from rproxy.config._tls import ListenerTLSConfig
from rproxy.http.filters.rules import RuleSet
from rproxy.service._listeners import ListenerService
from rproxy.service._pool_update import TLSFor
from rproxy.tls import ServerTLS

if TYPE_CHECKING:
    from rproxy.admin import AdminService

__all__ = ["ListenerSpec", "Prepared", "ReloadError", "listener_specs"]


class ReloadError(Exception):
    """
    A new config could not be applied; nothing was changed.

    @ivar errors: what went wrong, one line each.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@frozen
class ListenerSpec:
    """
    One port to listen on: a listener of the config, or the plain HTTP
    listener that redirects to a TLS listener (C{redirect}).
    """

    name: str
    listen: str
    config: ListenerConfig
    redirect: bool = False

    @property
    def tls(self) -> ListenerTLSConfig | None:
        return None if self.redirect else self.config.tls

    def accept_proxy(self, config: Config) -> tuple[tuple[str, ...], float] | None:
        """
        The senders trusted for a PROXY header and the time one has, if
        the listener (and so its redirect listener) expects one.
        """
        if not self.config.accept_proxy:
            return None
        return (self.config.trusted_proxies, config.timeouts.proxy_header)


def listener_specs(config: Config) -> dict[str, ListenerSpec]:
    """
    Every port C{config} listens on, by listener name (a redirect listener
    is named C{NAME:redirect}).
    """
    specs = {}
    for listener in config.listeners:
        specs[listener.name] = ListenerSpec(listener.name, listener.listen, listener)
        if listener.tls is not None and listener.tls.redirect_http_from:
            name = f"{listener.name}:redirect"
            specs[name] = ListenerSpec(
                name, listener.tls.redirect_http_from, listener, redirect=True
            )
    return specs


@define
class Prepared:
    """
    What applying a config needs that can fail, made before anything
    changes: new pools, the backends' TLS settings, every TLS listener's
    certificates and contexts, new ports (bound if the service runs), a new
    access log.
    """

    #: every port the new config listens on.
    specs: dict[str, ListenerSpec] = Factory(dict)
    pools: dict[str, Pool] = Factory(dict)
    client_tls: dict[str, TLSFor] = Factory(dict)
    tls: dict[str, ServerTLS] = Factory(dict)
    fresh: dict[str, ListenerService] = Factory(dict)
    access_log: AccessLogService | None = None
    admin: AdminService | None = None
    #: the caches the new config uses, by name (kept or new).
    caches: dict[str, Any] = Factory(dict)
    #: the request rule sets of the new config, by name.
    rules: dict[str, RuleSet] = Factory(dict)
    #: the rate limits the new config uses, by name (kept or new).
    limits: dict[str, Any] = Factory(dict)
