"""Worker processes: C{workers = N} (or C{"auto"}) runs one supervisor and N
workers sharing the listening sockets.

  - L{SupervisorProxy}: binds every listener once, runs the health checks,
    the admin interface and the ACME client, and pushes the pools' picture,
    certificates and challenges to the workers (L{WorkerGroup}).
  - A worker (C{python -m rproxy.workers}) serves the sockets it was handed
    (L{rproxy.workers._worker.WorkerProxy}).
  - The control channel between them: L{rproxy.workers._control}.

C{workers = 1} does not use any of this: one process, as before.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SupervisorProxy", "WorkerGroup", "supervise"]


def supervise(source: str, reactor: Any) -> Any:
    """
    The supervisor for the config file C{source}, read again here so that
    its workers get exactly the text it validated.

    @raise rproxy.config.ConfigError: if the file has errors.
    """
    from rproxy.workers._supervisor import SupervisorProxy, read_config

    text, config = read_config(source)
    return SupervisorProxy(config, reactor, text)


def __getattr__(name: str) -> Any:
    if name == "SupervisorProxy":
        from rproxy.workers._supervisor import SupervisorProxy

        return SupervisorProxy
    if name == "WorkerGroup":
        from rproxy.workers._group import WorkerGroup

        return WorkerGroup
    raise AttributeError(name)
