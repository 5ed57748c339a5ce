"""ProxyReactor under Twisted's own reactor tests, and what it changes:
errors in protocol callbacks, the log context, install_if_unset."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import SkipTest

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.test import test_core as twisted_core
from twisted.internet.test import test_fdset as twisted_fdset
from twisted.internet.test import test_socket as twisted_socket
from twisted.internet.test import test_stdio as twisted_stdio
from twisted.internet.test import test_threads as twisted_threads
from twisted.internet.test import test_time as twisted_time
from twisted.internet.test.reactormixins import ReactorBuilder, needsRunningReactor
from twisted.logger import globalLogPublisher
from twisted.python import context, log
from twisted.python.failure import Failure

from rproxy._reactor import ProxyReactor
from tests.integration.helpers import python_env

PROXY_REACTOR = "rproxy._reactor.ProxyReactor"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial's mktemp() (used by Twisted's stdio tests) writes under the
    current directory: make that a temporary one, not the checkout."""
    monkeypatch.chdir(tmp_path)


def _skipped(reason: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Replace an inherited test by one skipped for C{reason}."""

    def change(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def skipped(self: object) -> None:
            raise SkipTest(reason)

        return skipped

    return change


def _expected_to_fail(
    reason: str,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark an inherited test as failing on purpose (strictly: it must)."""

    def change(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(self: object) -> None:
            test(self)

        return pytest.mark.xfail(strict=True, reason=reason)(run)

    return change


#: Twisted's reactor tests whose outcome differs on ProxyReactor, by name.
_CHANGED = {
    # Skipped upstream for EPollReactor by class name, so not for its subclass.
    "test_lostFileDescriptor": _skipped(
        "epoll drops a closed descriptor without an event, so no epoll "
        "reactor can notice a descriptor replaced under it"
    ),
    # ProxyReactor's purpose: no per-event log context.
    "test_logPrefix": _expected_to_fail(
        "ProxyReactor runs protocol callbacks without the legacy log context "
        "named by the transport's logPrefix"
    ),
}


def _on_proxy_reactor(builder: type[ReactorBuilder]) -> dict[str, type[Any]]:
    """
    The test case classes of one of Twisted's reactor test builders, made
    for L{ProxyReactor} alone, to be put in this module for pytest to collect.
    """
    attributes: dict[str, Any] = {
        "__module__": __name__,
        "_reactors": [PROXY_REACTOR],
        # runReactor's limit: a reactor that stops dispatching fails each
        # test in seconds, not trial's default of two minutes.
        "timeout": 10,
    }
    for name, change in _CHANGED.items():
        if hasattr(builder, name):
            attributes[name] = change(getattr(builder, name))
    against = type(builder.__name__, (builder,), attributes)
    return against.makeTestCaseClasses()


for _builder in [
    twisted_core.SystemEventTestsBuilder,
    twisted_time.TimeTestsBuilder,
    twisted_fdset.ReactorFDSetTestsBuilder,
    twisted_threads.ThreadTestsBuilder,
    twisted_socket.IReactorSocketVerificationTestsBuilder,
    twisted_socket.AdoptStreamPortErrorsTestsBuilder,
    twisted_socket.AdoptStreamConnectionErrorsTestsBuilder,
    twisted_stdio.StdioFilesTests,
]:
    globals().update(_on_proxy_reactor(_builder))

# Twisted's TCP and TLS reactor tests share connection mixins that import
# PyHamcrest, which rproxy's test extras do not install.
try:
    from twisted.internet.test import test_tcp as twisted_tcp
    from twisted.internet.test import test_tls as twisted_tls
except ImportError as _missing:
    _no_connection_tests = str(_missing)

    def test_twisted_tcp_and_tls_reactor_tests() -> None:
        """Twisted's TCP and TLS reactor tests run here when they can."""
        pytest.skip(f"Twisted's TCP and TLS reactor tests: {_no_connection_tests}")

else:
    for _builder in [
        twisted_tcp.TCP4ClientTestsBuilder,
        twisted_tcp.TCP6ClientTestsBuilder,
        twisted_tcp.TCPPortTestsBuilder,
        twisted_tcp.TCPFDPortTestsBuilder,
        twisted_tcp.TCPConnectionTestsBuilder,
        twisted_tcp.TCP4ConnectorTestsBuilder,
        twisted_tcp.TCP6ConnectorTestsBuilder,
        twisted_tcp.TCPTransportTestsBuilder,
        twisted_tcp.AdoptStreamConnectionTestsBuilder,
        twisted_tcp.TestBindAddressBuilder,
        twisted_tcp.AbortConnectionTests,
        twisted_tls.SSLClientTestsMixin,
        twisted_tls.StartTLSClientTestsMixin,
        twisted_tls.TLSPortTestsBuilder,
        twisted_tls.AbortSSLConnectionTests,
    ]:
        globals().update(_on_proxy_reactor(_builder))


class DeliberateError(Exception):
    """What a test's protocol or descriptor raises."""


class EchoOrBoom(Protocol):
    """Echoes what it receives but raises L{DeliberateError} on C{b"boom"};
    notes the log context each call ran in and why its connection ended."""

    factory: EchoOrBoomFactory

    def dataReceived(self, data: bytes) -> None:
        self.factory.systems.append(context.get(log.ILogContext)["system"])
        if data.startswith(b"boom"):
            raise DeliberateError()
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.reasons.append(reason)


class EchoOrBoomFactory(ServerFactory):
    protocol = EchoOrBoom
    noisy = False

    def __init__(self) -> None:
        self.systems: list[str] = []
        self.reasons: list[Failure] = []


class Client(Protocol):
    """Collects what arrives; C{lost} fires when the connection ends."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self._expected: tuple[int, int, Deferred[bytes]] | None = None

    def exchange(self, data: bytes) -> Deferred[bytes]:
        """Send C{data}; a Deferred fires with as many bytes back."""
        reply: Deferred[bytes] = Deferred()
        self._expected = (len(self.received), len(self.received) + len(data), reply)
        self.transport.write(data)  # type: ignore[union-attr]
        return reply

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._expected and len(self.received) >= self._expected[1]:
            start, end, reply = self._expected
            self._expected = None
            reply.callback(self.received[start:end])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class ProxyReactorTestsBuilder(ReactorBuilder):
    """What L{ProxyReactor} keeps and drops of L{EPollReactor}'s behaviour,
    over real TCP connections on 127.0.0.1."""

    _reactors = [PROXY_REACTOR]
    requiredInterfaces = (IReactorTCP,)  # noqa: N815
    timeout = 10

    def run_scenario(self, reactor: Any, scenario: Any) -> Any:
        """Run C{reactor} until C{scenario()}'s Deferred fires; return its
        result or raise its failure."""
        outcome: list[Any] = []

        def start() -> None:
            d = scenario()
            d.addBoth(outcome.append)
            d.addBoth(lambda _: reactor.stop())

        needsRunningReactor(reactor, start)
        self.runReactor(reactor)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def test_exception_in_data_received_is_logged_and_drops_only_that_connection(
        self,
    ) -> None:
        """An exception raised by a protocol's dataReceived is logged and its
        connection closed; the reactor goes on serving another connection."""
        reactor = self.buildReactor()
        factory = EchoOrBoomFactory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

        @inlineCallbacks
        def scenario() -> Any:
            bystander = yield connectProtocol(endpoint, Client())
            victim = yield connectProtocol(endpoint, Client())
            victim.transport.write(b"boom")
            yield victim.lost
            echoed = yield bystander.exchange(b"still here")
            bystander.transport.loseConnection()
            yield bystander.lost
            return echoed

        self.assertEqual(self.run_scenario(reactor, scenario), b"still here")
        self.assertEqual(len(self.flushLoggedErrors(DeliberateError)), 1)
        dropped = [r for r in factory.reasons if r.check(DeliberateError)]
        self.assertEqual(len(dropped), 1)

    def test_protocol_callbacks_run_without_a_legacy_log_context(self) -> None:
        """dataReceived runs in the default log context ("-"), not in one
        named after the connection as under EPollReactor: the work
        ProxyReactor exists to save."""
        reactor = self.buildReactor()
        factory = EchoOrBoomFactory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

        @inlineCallbacks
        def scenario() -> Any:
            client = yield connectProtocol(endpoint, Client())
            echoed = yield client.exchange(b"hello")
            client.transport.loseConnection()
            yield client.lost
            return echoed

        self.assertEqual(self.run_scenario(reactor, scenario), b"hello")
        self.assertEqual(set(factory.systems), {"-"})


globals().update(ProxyReactorTestsBuilder.makeTestCaseClasses())


class Reader(FileDescriptor):
    """A descriptor on one end of a socket pair that notes each read and can
    be told to report its connection lost and then raise from connectionLost."""

    def __init__(self, reactor: Any, sock: socket.socket, *, broken: bool) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.broken = broken
        self.reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> Any:
        self.reads += 1
        self.sock.recv(100)
        return ConnectionLost() if self.broken else None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.broken:
            raise DeliberateError()


@contextmanager
def fresh_reactor(kind: type[EPollReactor]) -> Iterator[EPollReactor]:
    """A new reactor of C{kind}, never installed nor run; closed afterwards."""
    reactor = kind()
    try:
        yield reactor
    finally:
        reactor.removeAll()
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
        reactor._poller.close()


@pytest.mark.parametrize(
    "kind",
    [
        EPollReactor,
        ProxyReactor,
    ],
)
def test_exception_in_connection_lost_is_logged_and_the_poll_goes_on(
    kind: type[EPollReactor],
) -> None:
    """A descriptor whose connectionLost raises does not stop one poll: the
    error is logged and another ready descriptor is still served."""
    events: list[dict[str, Any]] = []
    pairs = [socket.socketpair() for _ in range(2)]
    globalLogPublisher.addObserver(events.append)
    try:
        with fresh_reactor(kind) as reactor:
            broken = Reader(reactor, pairs[0][0], broken=True)
            healthy = Reader(reactor, pairs[1][0], broken=False)
            for reader, (_, peer) in zip([broken, healthy], pairs, strict=True):
                reactor.addReader(reader)
                peer.send(b"x")
            reactor.doIteration(0)
            assert healthy.reads == 1
            assert broken.reads == 1
            assert broken not in reactor.getReaders()
    finally:
        globalLogPublisher.removeObserver(events.append)
        for pair in pairs:
            for sock in pair:
                sock.close()
    # Legacy log.err() events carry "failure", twisted.logger's "log_failure".
    failures = [e.get("log_failure", e.get("failure")) for e in events]
    assert [f.type for f in failures if f is not None] == [DeliberateError]


def _run_python(code: str) -> list[str]:
    """Run C{code} in a new interpreter; the words it printed."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


_REPORT = (
    "import sys\n"
    "from rproxy._reactor import install_if_unset\n"
    "first = install_if_unset()\n"
    "again = install_if_unset()\n"
    "if 'twisted.internet.reactor' in sys.modules:\n"
    "    from twisted.internet import reactor\n"
    "    installed = type(reactor).__module__ + '.' + type(reactor).__name__\n"
    "else:\n"
    "    installed = 'none'\n"
    "print(first, again, installed)\n"
)


def test_install_if_unset_installs_proxy_reactor_in_a_fresh_process() -> None:
    """With no reactor imported yet, install_if_unset installs ProxyReactor
    and says so; a second call finds it installed and says False."""
    assert _run_python(_REPORT) == ["True", "False", PROXY_REACTOR]


@pytest.mark.parametrize(
    ("setup", "reactor_class"),
    [
        (
            "from twisted.internet import reactor",
            "twisted.internet.epollreactor.EPollReactor",
        ),
        (
            "from twisted.internet import pollreactor; pollreactor.install()",
            "twisted.internet.pollreactor.PollReactor",
        ),
    ],
)
def test_install_if_unset_keeps_an_installed_reactor(
    setup: str, reactor_class: str
) -> None:
    """Once twisted.internet.reactor is imported (by default or by choice),
    install_if_unset returns False and leaves that reactor in place."""
    assert _run_python(f"{setup}\n{_REPORT}") == ["False", "False", reactor_class]


def test_install_if_unset_installs_nothing_without_epoll() -> None:
    """On a platform without epoll, install_if_unset returns False and leaves
    the choice of reactor to Twisted."""
    code = f"import select\ndel select.epoll\n{_REPORT}"
    assert _run_python(code) == ["False", "False", "none"]
