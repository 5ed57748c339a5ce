"""The twistd plugin's options and service maker: ``twistd -n rproxy --config FILE``."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from rproxy._reactor import install_if_unset
from rproxy.buildinfo import build_info
from rproxy.config import Config, ConfigError, load_config

_log = Logger()


class Options(usage.Options):
    """
    Command-line options of ``twistd rproxy``.
    """

    synopsis = "--config FILE [--demo-backends]"
    longdesc = (
        "Run rproxy, a reverse proxy and load balancer, with the listeners and "
        "pools of a TOML config file. A config with errors is refused with "
        "every problem listed."
    )
    optParameters = [
        ["config", "c", None, "The TOML config file."],
    ]
    optFlags = [
        [
            "demo-backends",
            None,
            "Also run an echo server on each loopback backend address of the "
            "config, for trying rproxy out with nothing else running.",
        ],
    ]

    config: Config

    def postOptions(self) -> None:
        # Before anything imports the default reactor: twistd has installed
        # one already only if it was given -r.
        install_if_unset()
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.config = load_config(self["config"])
        except ConfigError as error:
            raise SystemExit(
                f"rproxy: not starting, the config has errors:\n{error}"
            ) from None


def makeService(options: Options) -> IService:
    """
    Build the proxy service for the parsed options.
    """
    info = build_info()
    _log.info("rproxy {version}, {build}", version=info.version, build=info.kind)
    from twisted.internet import reactor

    from rproxy.service import ProxyService

    top = MultiService()
    if options["demo-backends"]:
        from rproxy.demo import demo_backends

        demo_backends(options.config, reactor).setServiceParent(top)
    if options.config.workers > 1:
        from rproxy.workers import supervise

        try:
            proxy = supervise(options.config.source, reactor)
        except ConfigError as error:
            raise SystemExit(f"rproxy: not starting:\n{error}") from None
    else:
        proxy = ProxyService(options.config, reactor)
    proxy.setServiceParent(top)
    ReloadOnHangup(reactor, proxy.reload).setServiceParent(top)
    return top


class ReloadOnHangup(Service):
    """
    While running, SIGHUP calls C{reload} in the reactor thread (the
    previous handler comes back on stop).
    """

    def __init__(self, reactor: Any, reload: Any) -> None:
        self._reactor = reactor
        self._reload = reload
        self._previous: Any = None

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload)

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
