"""Embed rproxy in a Twisted program: a health-checked TCP load balancer on
127.0.0.1:6000 over two backends, with no config file.

    python examples/embed_tcp.py [LISTEN_PORT [BACKEND_PORT ...]]
"""

import sys

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from rproxy import (
    Backend,
    HealthMonitor,
    Pool,
    SmoothWeighted,
    TCPCheck,
    TCPProxyFactory,
)


def main(listen_port: int = 6000, backend_ports: list[int] | None = None) -> None:
    ports = backend_ports or [9001, 9002]
    backends = [
        Backend("127.0.0.1", port, weight=i + 1) for i, port in enumerate(ports)
    ]
    pool = Pool("app", backends, SmoothWeighted())
    HealthMonitor(pool, TCPCheck(reactor), reactor, interval=2.0).startService()
    endpoint = serverFromString(reactor, f"tcp:{listen_port}:interface=127.0.0.1")
    endpoint.listen(TCPProxyFactory(pool, reactor)).addCallback(
        lambda port: print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
    )
    reactor.run()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]), [int(a) for a in sys.argv[2:]] or None)
