"""Tests for the supervisor's worker slots, with a fake reactor: what a worker
is started with, restarts with back-off, pushes, and stopping."""

from __future__ import annotations

import json
import signal
import struct
from typing import Any

from attrs import define, field
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from rproxy.backends import AdminState, Backend, Pool, Registry
from rproxy.workers._group import PUSH_INTERVAL, WorkerGroup
from rproxy.workers._ports import Adopted


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)


class Reactor(MemoryReactorClock):
    """Records spawned processes and adopted control connections."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any], FakeProcess]] = []
        self.channels: list[StringTransport] = []
        self.adopted: list[tuple[int, int]] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: Any,
        childFDs: dict[int, Any],  # noqa: N803 (Twisted's name)
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, childFDs, process))
        return process

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.protocol = protocol
        self.channels.append(transport)

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
        self.adopted.append((fd, family))
        return FakePort()


class FakePort:
    """What Twisted's TCP port does with numberAccepts, recorded."""

    def __init__(self) -> None:
        self.numberAccepts = 100
        self.seen: list[int] = []

    def doRead(self) -> None:
        self.seen.append(self.numberAccepts)
        self.numberAccepts += 20


@define
class Config:
    source: str = "/etc/rproxy.toml"
    shutdown_grace: float = 2.0


@define
class Proxy:
    registry: Registry
    listeners: dict[str, Any] = field(factory=dict)
    config: Config = field(factory=Config)

    def certificates(self) -> list[Any]:
        return []


def sent(transport: StringTransport) -> list[dict[str, Any]]:
    data = transport.value()
    out = []
    while data:
        (size,) = struct.unpack("!I", data[:4])
        out.append(json.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


def group(count: int = 2) -> tuple[WorkerGroup, Reactor, Registry]:
    reactor = Reactor()
    registry = Registry([Pool("web", [Backend("127.0.0.1", 8000, name="a")])])
    workers = WorkerGroup(
        Proxy(registry),
        count,
        reactor,
        "text",
        command=["python", "-m", "w"],  # type: ignore[arg-type]
    )
    workers.startService()
    return workers, reactor, registry


def die(reactor: Reactor, index: int) -> None:
    protocol = reactor.spawned[index][0]
    protocol.processEnded(Failure(ProcessTerminated(signal=signal.SIGKILL)))


def test_each_worker_starts_with_its_number_and_the_config() -> None:
    """Every worker gets its number, the control socket as fd 3, the config's
    text and the pools, in that order."""
    workers, reactor, _ = group()
    assert [args[-4:] for _, args, _, _ in reactor.spawned] == [
        ["--index", "1", "--control-fd", "3"],
        ["--index", "2", "--control-fd", "3"],
    ]
    assert all(3 in fds for _, _, fds, _ in reactor.spawned)
    first = sent(reactor.channels[0])
    assert [m["type"] for m in first] == ["start", "pools"]
    assert first[0]["config"] == "text" and first[0]["source"] == "/etc/rproxy.toml"
    assert first[1]["pools"][0]["backends"][0]["name"] == "a"
    workers.stopService()


def test_a_dead_worker_is_started_again_with_back_off() -> None:
    """A worker dying quickly in a loop waits longer each time."""
    workers, reactor, _ = group(1)
    die(reactor, 0)
    assert len(reactor.spawned) == 1
    reactor.advance(0.1)
    assert len(reactor.spawned) == 2
    die(reactor, 1)
    reactor.advance(0.1)
    assert len(reactor.spawned) == 2
    reactor.advance(0.1)
    assert len(reactor.spawned) == 3
    assert workers.slots[1].restarts == 2
    workers.stopService()


def test_stopping_terminates_every_worker_and_waits() -> None:
    """stopService sends SIGTERM to each worker and fires once all ended;
    none is started again."""
    workers, reactor, _ = group()
    done: list[object] = []
    workers.stopService().addCallback(done.append)
    assert [p.signals for _, _, _, p in reactor.spawned] == [
        [signal.SIGTERM],
        [signal.SIGTERM],
    ]
    die(reactor, 0)
    assert not done
    die(reactor, 1)
    assert done
    reactor.advance(60)
    assert len(reactor.spawned) == 2


def test_a_worker_that_does_not_stop_in_time_is_killed() -> None:
    """Past the grace and a margin, SIGKILL."""
    workers, reactor, _ = group(1)
    workers.stopService()
    reactor.advance(2.0 + 5.0)
    assert reactor.spawned[0][3].signals == [signal.SIGTERM, signal.SIGKILL]


def test_state_changes_are_pushed_at_once_and_weights_at_the_next_look() -> None:
    """A drain goes out in the same turn; a weight within PUSH_INTERVAL."""
    workers, reactor, registry = group(1)
    channel = reactor.channels[0]
    channel.clear()
    pool = registry.get("web")
    pool.set_admin(pool.get("a"), AdminState.DRAINING, "drain by admin")
    reactor.advance(0)
    [pushed] = sent(channel)
    assert pushed["pools"][0]["backends"][0]["admin"] == "disabled"
    channel.clear()
    reactor.advance(PUSH_INTERVAL)
    assert sent(channel) == []
    pool.set_weight(pool.get("a"), 4)
    reactor.advance(PUSH_INTERVAL)
    assert sent(channel)[0]["pools"][0]["backends"][0]["weight"] == 4
    workers.stopService()


def test_challenges_reach_every_worker_and_new_ones() -> None:
    """An ACME challenge goes to the running workers and to one started later."""
    workers, reactor, _ = group(1)
    workers.challenge("tok", "tok.key")
    assert sent(reactor.channels[0])[-1] == {
        "type": "challenge",
        "token": "tok",
        "answer": "tok.key",
    }
    die(reactor, 0)
    reactor.advance(0.1)
    assert {"type": "challenge", "token": "tok", "answer": "tok.key"} in sent(
        reactor.channels[1]
    )
    workers.stopService()


def test_the_group_status_counts_what_workers_report() -> None:
    """A worker's stats message lands in the group's status."""
    workers, reactor, _ = group(1)
    report = {
        "type": "stats",
        "status": {"listeners": [{"name": "http", "requests_total": 5}]},
        "metrics": "",
    }
    data = json.dumps(report).encode()
    protocol = reactor.channels[0].protocol
    protocol.dataReceived(struct.pack("!I", len(data)) + data)
    own = workers.status({"listeners": [{"name": "http", "requests_total": 0}]})
    assert own["listeners"][0]["requests_total"] == 5
    assert own["workers"][0]["listeners"][0]["requests_total"] == 5
    workers.stopService()


def test_adopted_sockets_are_adopted_once_and_closed() -> None:
    """A worker's port source adopts the descriptor it was handed for that
    listener and endpoint, closes its copy, and accepts one connection each
    time the shared socket wakes it."""
    import os

    reactor = Reactor()
    ports = Adopted(reactor)
    read, write = os.pipe()
    os.close(write)
    ports.add("http", "tcp:80", read, 2)
    port = ports("http", "tcp:80", None)  # type: ignore[arg-type]
    assert reactor.adopted == [(read, 2)]
    # One connection per wake, however many Twisted would take.
    port.doRead()
    port.doRead()
    assert port.seen == [1, 1]  # type: ignore[attr-defined]
    assert ("http", "tcp:80") not in ports
    try:
        ports("http", "tcp:80", None)  # type: ignore[arg-type]
    except KeyError:
        pass
    else:
        raise AssertionError("adopted twice")


def test_one_worker_is_the_single_process_and_two_a_supervisor(
    tmp_path: Any,
) -> None:
    """The twistd plugin makes today's ProxyService for C{workers = 1} and a
    SupervisorProxy with its group for C{workers = 2}."""
    from rproxy import tap
    from rproxy.service import ProxyService
    from rproxy.workers._supervisor import SupervisorProxy

    made = {}
    for count in (1, 2):
        path = tmp_path / f"w{count}.toml"
        path.write_text(
            f"workers = {count}\n"
            '[pools.web]\nbackends = ["127.0.0.1:8080"]\n'
            '[[listeners]]\nname = "front"\nlisten = "tcp:0:interface=127.0.0.1"\n'
            'pool = "web"\n'
        )
        options = tap.Options()
        options.parseOptions(["--config", str(path)])
        top = tap.makeService(options)
        [proxy] = [s for s in top if isinstance(s, ProxyService)]  # type: ignore[attr-defined]
        made[count] = proxy
    assert type(made[1]) is ProxyService
    assert isinstance(made[2], SupervisorProxy)
    assert len(made[2].group.slots) == 2


def test_a_purge_is_asked_of_every_worker_and_counted() -> None:
    """The group's purge fires with the sum of the workers' answers; one that
    went away counts none."""
    workers, reactor, _ = group(2)
    counts: list[int] = []
    workers.purge("pages", url="http://x/a").addCallback(counts.append)
    asks = [sent(channel)[-1] for channel in reactor.channels]
    assert [a["type"] for a in asks] == ["purge", "purge"]
    assert asks[0]["cache"] == "pages" and asks[0]["url"] == "http://x/a"
    reply = {"type": "reply", "reply_to": asks[0]["id"], "purged": 3}
    data = json.dumps(reply).encode()
    reactor.channels[0].protocol.dataReceived(struct.pack("!I", len(data)) + data)
    reactor.channels[1].protocol.connectionLost(Failure(ConnectionError("gone")))
    assert counts == [3]
    workers.stopService()
