"""Pebble, the ACME test server, run on 127.0.0.1 for the ACME tests, with
an in-process DNS server that resolves the test domains to 127.0.0.1 so
that Pebble's HTTP-01 validations really fetch the challenges from us."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import trustme
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.names import dns, error, server
from twisted.python.failure import Failure

from tests.integration.helpers import free_port

PEBBLE = "/usr/bin/pebble"


class LoopbackZone:
    """
    A DNS authority for C{names}: A 127.0.0.1 for each, no records of any
    other type (NOERROR, empty), NXDOMAIN for every other name.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = {n.lower() for n in names}
        self.queries: list[tuple[str, str]] = []

    def query(
        self, query: dns.Query, timeout: object = None
    ) -> Deferred[tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]]:
        name = query.name.name.decode("ascii").lower().rstrip(".")
        self.queries.append((name, dns.QUERY_TYPES.get(query.type, str(query.type))))
        if name not in self.names:
            return defer.fail(error.DomainError(name))
        answers = []
        if query.type == dns.A:
            answers.append(
                dns.RRHeader(
                    name=query.name.name,
                    type=dns.A,
                    payload=dns.Record_A("127.0.0.1", ttl=0),
                    ttl=0,
                    auth=True,
                )
            )
        return defer.succeed((answers, [], []))


def listen_dns(reactor: Any, zone: LoopbackZone) -> Any:
    """
    Serve C{zone} over UDP on 127.0.0.1 (a free port); returns the port.
    """
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    return reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")


class _PebbleProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.output: list[bytes] = []
        self.ready: Deferred[None] = Deferred()
        self.exited = False
        self._ended: list[Deferred[None]] = []

    def ended(self) -> Deferred[None]:
        if self.exited:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        return d

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)
        if not self.ready.called and b"Listening on" in b"".join(self.output):
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.outReceived(data)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(
                AssertionError(
                    "pebble ended before listening:\n"
                    + b"".join(self.output).decode(errors="replace")
                )
            )
        self.exited = True
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)


class Pebble:
    """
    A Pebble process validating HTTP-01 challenges on 127.0.0.1:C{http_port}
    and resolving names with the DNS server on 127.0.0.1:C{dns_port}.

    @ivar ca: a PEM file of the CA that signed Pebble's own HTTPS
        certificate (for L{rproxy.config.AcmeConfig.ca}).
    @ivar directory: the ACME directory URL.
    @ivar roots: the URL of the root certificate Pebble issues under.
    """

    def __init__(self, workdir: str, http_port: int, dns_port: int) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.dns_port = dns_port
        self.port = free_port()
        self.management_port = free_port()
        self.ca = os.path.join(workdir, "pebble-ca.pem")
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.roots = f"https://127.0.0.1:{self.management_port}/roots/0"
        self._protocol = _PebbleProtocol()
        self._process: Any = None

    def _write_config(self) -> str:
        os.makedirs(self.workdir, exist_ok=True)
        authority = trustme.CA()
        authority.cert_pem.write_to_path(self.ca)
        leaf = authority.issue_cert("127.0.0.1", "localhost")
        cert = os.path.join(self.workdir, "pebble-cert.pem")
        key = os.path.join(self.workdir, "pebble-key.pem")
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": cert,
                "privateKey": key,
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        path = os.path.join(self.workdir, "pebble-config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def start(self, reactor: Any, timeout: float = 15.0) -> Deferred[None]:
        """
        Start Pebble; fires once it says it is listening, fails after
        C{timeout} seconds or if it ends first.
        """
        config = self._write_config()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        self._process = reactor.spawnProcess(
            self._protocol,
            PEBBLE,
            [PEBBLE, "-config", config, "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            env=env,
            path=self.workdir,
        )
        return self._protocol.ready.addTimeout(timeout, reactor)

    @property
    def output(self) -> str:
        """
        What Pebble has logged so far.
        """
        return b"".join(self._protocol.output).decode(errors="replace")

    def stop(self, reactor: Any, timeout: float = 10.0) -> Deferred[None]:
        """
        Stop Pebble; fires once it has ended (killed after C{timeout}).
        """
        if self._process is None or self._protocol.exited:
            return defer.succeed(None)
        self._process.signalProcess("TERM")

        def kill(failure: Failure) -> Deferred[None]:
            failure.trap(defer.TimeoutError)
            if not self._protocol.exited:
                self._process.signalProcess("KILL")
            return self._protocol.ended().addTimeout(timeout, reactor)

        return self._protocol.ended().addTimeout(timeout, reactor).addErrback(kill)
