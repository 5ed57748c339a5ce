"""The supervisor's worker processes: starting each with the listening
sockets and the config, starting one again with back-off when it dies,
passing reloads, pool pictures, certificates and challenges to every one,
keeping what each reports, and stopping them all (each drains) on stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from attrs import Factory, define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory as ProtocolFactory
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.backends import Backend, BackendState, Pool
from rproxy.tls import ServerCertificate
from rproxy.workers._aggregate import Retired, group_status, render_metrics
from rproxy.workers._backoff import RestartBackoff
from rproxy.workers._control import ControlProtocol, Message
from rproxy.workers._logs import relay
from rproxy.workers._ports import handed
from rproxy.workers._snapshot import encode_pools
from rproxy.workers._worker import certificate_to_json

if TYPE_CHECKING:
    from rproxy.workers._supervisor import SupervisorProxy

__all__ = ["PUSH_INTERVAL", "WorkerGroup", "WorkerSlot"]

log = Logger(namespace="rproxy.workers")

#: seconds between two looks at the pools for changes no observer sees
#: (weights, membership); state changes are pushed at once.
PUSH_INTERVAL = 0.5
#: seconds a stopping worker gets beyond the shutdown grace before SIGKILL.
KILL_MARGIN = 5.0
#: the first descriptor number of the listening sockets in a worker.
FIRST_LISTENER_FD = 4


@define(eq=False)
class WorkerSlot:
    """
    One worker number and the process that has it now.
    """

    index: int
    backoff: RestartBackoff = Factory(RestartBackoff)
    process: Any = None
    channel: ControlProtocol | None = None
    pid: int | None = None
    started_at: float = 0.0
    ready: bool = False
    restarts: int = 0
    #: the listening sockets it has, as (listener name, endpoint).
    handed: set[tuple[str, str]] = Factory(set)
    status: Message | None = None
    metrics: str = ""
    restart: IDelayedCall | None = None
    ended: Deferred[None] | None = field(default=None)

    def about(self) -> Message:
        return {
            "worker": self.index,
            "pid": self.pid,
            "state": "running" if self.ready else "starting",
            "started_at": self.started_at,
            "restarts": self.restarts,
        }


class _WorkerProcess(ProcessProtocol):
    def __init__(self, ended: Callable[[Failure], None]) -> None:
        self._ended = ended

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


class WorkerGroup(Service):
    """
    The C{count} workers of C{proxy} (a L{SupervisorProxy}), started with
    its listening sockets and its config's C{text}.

    @ivar slots: the workers by number (from 1).
    """

    def __init__(
        self,
        proxy: SupervisorProxy,
        count: int,
        reactor: Any,
        text: str,
        command: list[str] | None = None,
    ) -> None:
        self.proxy = proxy
        self.reactor = reactor
        self.text = text
        self.command = command or [sys.executable, "-m", "rproxy.workers"]
        self.slots = {i: WorkerSlot(i) for i in range(1, count + 1)}
        self.stopping = False
        self._challenges: dict[str, str] = {}
        #: what workers that ended had counted (in the group's sums).
        self.retired = Retired()
        self._observed: set[Pool] = set()
        self._last_push: list[Message] | None = None
        self._push_soon: IDelayedCall | None = None
        self._tick = LoopingCall(self._look)
        self._tick.clock = reactor

    # Starting and stopping ------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self._observe()
        for slot in self.slots.values():
            self._spawn(slot)
        self._tick.start(PUSH_INTERVAL, now=False)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.restart = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sockets = handed(self.proxy.listeners)
        child_fds: dict[int, Any] = {1: 1, 2: 2, 3: child.fileno()}
        listeners = []
        for n, one in enumerate(sockets):
            child_fds[FIRST_LISTENER_FD + n] = one.fd
            listeners.append(one.to_json(fd=FIRST_LISTENER_FD + n))
        slot.ended = Deferred()
        slot.ready = False
        slot.process = self.reactor.spawnProcess(
            _WorkerProcess(lambda reason: self._ended(slot, reason)),
            self.command[0],
            [*self.command, "--index", str(slot.index), "--control-fd", "3"],
            env=dict(os.environ),
            childFDs=child_fds,
        )
        child.close()
        slot.pid = slot.process.pid
        slot.started_at = self.reactor.seconds()
        slot.handed = {(one.name, one.listen) for one in sockets}
        channel = ControlProtocol(
            lambda message, fds: self._handle(slot, message, fds),
            lambda reason: None,
        )
        slot.channel = channel
        self.reactor.adoptStreamConnection(
            parent.fileno(),
            socket.AF_UNIX,
            ProtocolFactory.forProtocol(lambda: channel),
        )
        parent.close()
        channel.send(
            {
                "type": "start",
                "config": self.text,
                "source": self.proxy.config.source,
                "listeners": listeners,
            }
        )
        for certificate in self.proxy.certificates():
            channel.send({"type": "certificate", **certificate_to_json(certificate)})
        for token, answer in self._challenges.items():
            channel.send({"type": "challenge", "token": token, "answer": answer})
        channel.send({"type": "pools", "pools": self._pictures()})
        log.info("worker {index} started (pid {pid})", index=slot.index, pid=slot.pid)

    def _ended(self, slot: WorkerSlot, reason: Failure) -> None:
        ran = self.reactor.seconds() - slot.started_at
        self.retired.add(slot.status, slot.metrics)
        slot.status, slot.metrics = None, ""
        pid, slot.pid, slot.process, slot.channel = slot.pid, None, None, None
        slot.ready = False
        ended, slot.ended = slot.ended, None
        if self.stopping:
            log.info("worker {index} (pid {pid}) stopped", index=slot.index, pid=pid)
        else:
            delay = slot.backoff.delay(ran)
            slot.restarts += 1
            log.warn(
                "worker {index} (pid {pid}) exited after {ran:.1f}s: {reason}; "
                "starting it again in {delay:g}s",
                index=slot.index,
                pid=pid,
                ran=ran,
                reason=reason.getErrorMessage(),
                delay=delay,
            )
            slot.restart = self.reactor.callLater(delay, self._spawn, slot)
        if ended is not None:
            ended.callback(None)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.stopping = True
        if self._tick.running:
            self._tick.stop()
        if self._push_soon is not None and self._push_soon.active():
            self._push_soon.cancel()
        waiting = []
        for slot in self.slots.values():
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
                slot.restart = None
            if slot.process is not None and slot.ended is not None:
                waiting.append(slot.ended)
                self._signal(slot, signal.SIGTERM)
        if not waiting:
            return succeed(None)
        grace = self.proxy.config.shutdown_grace + KILL_MARGIN
        killing = self.reactor.callLater(grace, self._kill_all)
        done: Deferred[Any] = DeferredList(waiting)

        def stopped(result: object) -> object:
            if killing.active():
                killing.cancel()
            return result

        return done.addBoth(stopped)

    def _kill_all(self) -> None:
        for slot in self.slots.values():
            if slot.process is not None:
                log.warn(
                    "worker {index} (pid {pid}) did not stop in time: killed",
                    index=slot.index,
                    pid=slot.pid,
                )
                self._signal(slot, signal.SIGKILL)

    @staticmethod
    def _signal(slot: WorkerSlot, number: int) -> None:
        # ProcessExitedAlready: it is gone already.
        with contextlib.suppress(Exception):
            slot.process.signalProcess(number)

    # Messages from the workers --------------------------------------------

    def _handle(self, slot: WorkerSlot, message: Message, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        kind = message["type"]
        if kind == "ready":
            slot.ready = True
            log.info(
                "worker {index} ready (pid {pid})",
                index=slot.index,
                pid=message.get("pid"),
            )
        elif kind == "log":
            relay(slot.index, message)
        elif kind == "stats":
            slot.status = message.get("status")
            slot.metrics = message.get("metrics", "")

    def _channels(self) -> Iterator[tuple[WorkerSlot, ControlProtocol]]:
        for slot in self.slots.values():
            if slot.channel is not None:
                yield slot, slot.channel

    # What goes to every worker -----------------------------------------------

    def reload(self, text: str, source: str) -> None:
        """
        Give every worker the listening sockets it lacks, then the config
        C{text} (already applied here).
        """
        self.text = text
        sockets = handed(self.proxy.listeners)
        for slot, channel in self._channels():
            for one in sockets:
                if (one.name, one.listen) not in slot.handed:
                    channel.send_socket(one.fd, {"type": "listener", **one.to_json()})
                    slot.handed.add((one.name, one.listen))
            asking = channel.ask({"type": "config", "config": text, "source": source})
            asking.addCallback(self._applied, slot)
            asking.addErrback(lambda _: None)  # it died: it starts afresh
        self._observe()
        self.push_pools()

    @staticmethod
    def _applied(reply: Message, slot: WorkerSlot) -> None:
        problems = reply.get("problems") or []
        if problems:
            log.error(
                "worker {index} did not apply the config: {problems}",
                index=slot.index,
                problems="; ".join(problems),
            )

    def certificate(self, certificate: ServerCertificate) -> None:
        """
        Serve C{certificate} in every worker.
        """
        message = {"type": "certificate", **certificate_to_json(certificate)}
        for _, channel in self._channels():
            channel.send(message)

    def challenge(self, token: str, answer: str | None) -> None:
        """
        Answer (or, with None, stop answering) ACME challenge C{token} in
        every worker.
        """
        if answer is None:
            self._challenges.pop(token, None)
        else:
            self._challenges[token] = answer
        for _, channel in self._channels():
            channel.send({"type": "challenge", "token": token, "answer": answer})

    def purge(self, cache: str, *, url: str = "", prefix: str = "") -> Deferred[int]:
        """
        Purge C{url} (or every URL under C{prefix}) from cache C{cache} in
        every worker; fires with the responses dropped in all.
        """
        what = {"url": url} if url else {"prefix": prefix}
        asking = [
            channel.ask({"type": "purge", "cache": cache, **what})
            for _, channel in self._channels()
        ]
        done: Deferred[Any] = DeferredList(asking, consumeErrors=True)
        return done.addCallback(
            lambda results: sum(
                int(reply.get("purged", 0)) for ok, reply in results if ok
            )
        )

    # Pool pictures --------------------------------------------------------------

    def _pictures(self) -> list[Message]:
        return encode_pools(self.proxy.registry)

    def push_pools(self) -> None:
        """
        Send every worker the pools as they are now.
        """
        pictures = self._pictures()
        self._last_push = pictures
        for _, channel in self._channels():
            channel.send({"type": "pools", "pools": pictures})

    def _changed(
        self,
        pool: Pool,
        backend: Backend,
        old: BackendState,
        new: BackendState,
        why: str,
    ) -> None:
        # Several changes in one turn of the reactor go out as one picture.
        if self._push_soon is None or not self._push_soon.active():
            self._push_soon = self.reactor.callLater(0, self.push_pools)

    def _observe(self) -> None:
        for pool in self.proxy.registry:
            if pool not in self._observed:
                pool.observe(self._changed)
                self._observed.add(pool)
        self._observed &= set(self.proxy.registry)

    def _look(self) -> None:
        self._observe()
        if self._pictures() != self._last_push:
            self.push_pools()

    # What the admin interface shows ----------------------------------------------

    def status(self, own: Message) -> Message:
        """
        C{own} (the supervisor's status) with the workers' counters.
        """
        return group_status(
            own,
            [(slot.about(), slot.status) for slot in self.slots.values()],
            self.retired,
        )

    def metrics(self, own: Any) -> bytes:
        """
        The group's metrics, C{own} being the supervisor's registry.
        """
        return render_metrics(
            own,
            {slot.index: slot.metrics for slot in self.slots.values()},
            self.retired.metrics,
        )
