"""The disk tier's pending file operations: L{SlotOperations} runs them in
order per slot, folding together those that wait.

While one operation on a slot runs, later ones wait. A write or a delete
supersedes every waiting operation (what they would leave is overwritten),
and one that would do what the last does joins it; a rewrite (new metadata
over the file) folds into a waiting write or rewrite. So a slot has at most
one operation running and two waiting, however often it is written.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

from rproxy.cache.entry import StoredResponse
from rproxy.cache.memory import Slot

__all__ = ["Op", "SlotOperations"]


@define
class Op:
    """
    One file operation.

    @ivar kind: C{"write"} (C{meta} and C{body}), C{"rewrite"} (C{meta}
        over the file holding C{old}, the body kept) or C{"delete"}.
    @ivar indexed: the index record a write or rewrite makes true.
    @ivar waiters: fired when it is done.
    """

    kind: str
    indexed: StoredResponse | None = None
    meta: bytes = b""
    body: bytes = b""
    old: StoredResponse | None = None
    waiters: list[Deferred[None]] = field(factory=list)

    def same(self, other: Op) -> bool:
        """
        Whether C{other} would do what this does.
        """
        return (self.kind, self.meta, self.body) == (other.kind, other.meta, other.body)


@define
class _Queue:
    running: Op
    waiting: list[Op] = field(factory=list)
    idle: list[Deferred[None]] = field(factory=list)


class SlotOperations:
    """
    The file operations pending per slot.

    @ivar closed: whether new operations are refused (those pending still
        run).
    """

    def __init__(self, start: Callable[[Slot, Op], Deferred[None]]) -> None:
        """
        @param start: starts an operation; its L{Deferred} fires (with
            C{None}, failures handled) when the operation is done.
        """
        self.closed = False
        self._start = start
        self._queues: dict[Slot, _Queue] = {}
        self._drained: list[Deferred[None]] = []

    def __contains__(self, slot: Slot) -> bool:
        return slot in self._queues

    def add(self, slot: Slot, op: Op) -> Deferred[None]:
        """
        Run C{op} on C{slot} after those pending there.

        @return: fires when C{op}, or what superseded it, is done.
        """
        done: Deferred[None] = Deferred()
        queue = self._queues.get(slot)
        if queue is None:
            if self.closed:
                return succeed(None)
            op.waiters.append(done)
            self._queues[slot] = _Queue(op)
            self._run(slot, op)
            return done
        waiting = queue.waiting
        last = waiting[-1] if waiting else queue.running
        if op.kind == "rewrite":
            if waiting and last.kind != "delete":
                last.indexed, last.meta = op.indexed, op.meta
            else:
                waiting.append(op)
                last = op
        elif last.same(op):
            last.indexed = op.indexed
        else:
            for superseded in waiting:
                op.waiters.extend(superseded.waiters)
            waiting[:] = [op]
            last = op
        last.waiters.append(done)
        return done

    def idle(self, slot: Slot) -> Deferred[None] | None:
        """
        A L{Deferred} that fires when nothing is pending on C{slot}, or
        C{None} if nothing is.
        """
        queue = self._queues.get(slot)
        if queue is None:
            return None
        idle: Deferred[None] = Deferred()
        queue.idle.append(idle)
        return idle

    def drained(self) -> Deferred[None]:
        """
        A L{Deferred} that fires when nothing is pending on any slot.
        """
        if not self._queues:
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        return drained

    def _run(self, slot: Slot, op: Op) -> None:
        self._start(slot, op).addCallback(self._done, slot, op)

    def _done(self, _: None, slot: Slot, op: Op) -> None:
        queue = self._queues[slot]
        idle: list[Deferred[None]] = []
        if queue.waiting:
            queue.running = queue.waiting.pop(0)
            self._run(slot, queue.running)
        else:
            del self._queues[slot]
            idle = queue.idle
        drained: list[Deferred[None]] = []
        if not self._queues:
            drained, self._drained = self._drained, []
        for waiter in [*op.waiters, *idle, *drained]:
            waiter.callback(None)
