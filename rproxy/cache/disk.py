"""The disk tier of a cache: L{DiskStore}, one file per stored response
under a directory (L{rproxy.cache._files}), an index of their metadata in
memory, and every file operation in a thread pool.

The index says what the store holds the moment a call returns; the file
operations that make the directory agree follow in the background, in order
per slot (L{rproxy.cache._ops}: a put of the response being written joins
that write). A failed operation is logged and its response dropped from the
index. The index is rebuilt from the directory when a store opens,
least recently used first by file modification time (set when a file is
written or loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from attrs import evolve
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rproxy.cache import _files as files
from rproxy.cache._files import CorruptFileError, EntryGoneError
from rproxy.cache._ops import Op, SlotOperations
from rproxy.cache.entry import Fields, StoredResponse
from rproxy.cache.memory import (
    LRUSlots,
    Slot,
    SlotIndex,
    same_response,
    slot_of,
    updated,
)

__all__ = ["DiskStore", "EntryGoneError"]

_log = Logger()
_P = ParamSpec("_P")
_T = TypeVar("_T")


class DiskStore(SlotIndex):
    """
    The disk tier: stored responses as files, bounded by their total size,
    least recently used evicted first. Open one with L{DiskStore.open}.

    @ivar path: the cache's directory.
    """

    def __init__(
        self,
        path: str,
        max_bytes: int,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
    ) -> None:
        self.path = path
        self._slots = LRUSlots(max_bytes)
        self._reactor = reactor
        self._threadpool = threadpool
        self._ops = SlotOperations(self._start)

    @classmethod
    def open(
        cls,
        path: str,
        max_bytes: int,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
    ) -> Deferred[DiskStore]:
        """
        Open the store in directory C{path} (created if missing), its index
        rebuilt by a scan in C{threadpool}; responses over C{max_bytes} are
        evicted, least recently used first.

        @param threadpool: a started pool, which every file operation runs
            in; stop it only once L{close} has fired.
        @return: fires with the store, or fails with the L{OSError} of a
            directory that cannot be created or read.
        """
        store = cls(path, max_bytes, reactor, threadpool)
        return store._in_thread(files.scan, path).addCallback(store._indexed)

    def _indexed(self, scan: files.Scan) -> DiskStore:
        for entry, size in scan.found:
            self._slots.add(entry, size, self._evicted)
        _log.info(
            "disk cache {path}: {objects} responses, {bytes} bytes"
            " ({removed} damaged or foreign files, {temporary} temporary removed)",
            path=self.path,
            objects=self.objects,
            bytes=self.bytes,
            removed=scan.removed,
            temporary=scan.temporary,
        )
        return self

    def load(self, entry: StoredResponse) -> Deferred[StoredResponse]:
        """
        Read the response C{entry} is, with its body, once the pending
        operations on its slot are done.

        @return: fires with a copy of C{entry} with its body, or fails with
            L{EntryGoneError} (a damaged file is logged and removed).
        """
        slot = slot_of(entry)
        idle = self._ops.idle(slot)
        if idle is None:
            return self._read(slot, entry)
        return idle.addCallback(lambda _: self._read(slot, entry))

    def _read(self, slot: Slot, entry: StoredResponse) -> Deferred[StoredResponse]:
        held = self._slots.get(slot)
        if held is None or not same_response(held, entry):
            return fail(EntryGoneError(entry.key))
        self._slots.touch(slot)
        path = files.slot_path(self.path, files.slot_name(slot))
        return self._in_thread(files.read_file, path, held).addErrback(
            self._read_failed, slot, held, path
        )

    def _read_failed(
        self, failure: Failure, slot: Slot, held: StoredResponse, path: str
    ) -> Failure:
        if not failure.check(EntryGoneError):
            _log.failure(
                "disk cache: could not read {path}", failure, LogLevel.warn, path=path
            )
        if not failure.check(EntryGoneError, CorruptFileError):
            return Failure(EntryGoneError(path))
        # the file is damaged, lost or holds another response than the index
        # says, with nothing pending on the slot to change it: drop both
        if self._slots.get(slot) is held:
            self._slots.pop(slot)
            self._ops.add(slot, Op("delete"))
        return Failure(EntryGoneError(path))

    def put(self, entry: StoredResponse) -> Deferred[None]:
        """
        Store C{entry} (which has its body), replacing the response in its
        slot: at once in the index, its file written in the background. One
        bigger than the whole store is refused, emptying its slot.

        @return: fires when the file is written (or the write failed,
            logged) or superseded.
        @raise ValueError: C{entry} lacks its body, or some of it.
        """
        body = entry.body
        if body is None or len(body) != entry.length:
            raise ValueError("a stored response needs its whole body")
        if self._ops.closed:
            return succeed(None)
        slot = slot_of(entry)
        meta = files.encode_meta(entry)
        indexed = evolve(entry, body=None)
        had = slot in self._ops or self._slots.get(slot) is not None
        size = files.file_size(meta, entry.length)
        if self._slots.add(indexed, size, self._evicted):
            return self._ops.add(slot, Op("write", indexed, meta, body))
        if had:
            self._ops.add(slot, Op("delete"))
        return succeed(None)

    def update(
        self,
        entry: StoredResponse,
        headers: Fields,
        *,
        request_time: float | None = None,
        response_time: float | None = None,
    ) -> Deferred[None]:
        """
        Replace the stored header fields (and times, where given) of the
        response C{entry} is, if its slot still holds it: at once in the
        index, its file rewritten in the background.

        @param headers: the complete new stored header fields.
        @return: fires when the file is rewritten (or that failed, logged).
        """
        slot = slot_of(entry)
        held = self._slots.get(slot)
        if self._ops.closed or held is None or not same_response(held, entry):
            return succeed(None)
        new = updated(held, headers, request_time, response_time)
        meta = files.encode_meta(new)
        if not self._slots.add(new, files.file_size(meta, new.length), self._evicted):
            self._ops.add(slot, Op("delete"))
            return succeed(None)
        return self._ops.add(slot, Op("rewrite", new, meta, old=held))

    def remove(self, entry: StoredResponse) -> bool:
        """
        Remove the response C{entry} is, if its slot still holds it.

        @return: whether something was removed.
        """
        slot = slot_of(entry)
        held = self._slots.get(slot)
        if held is None or not same_response(held, entry):
            return False
        self._slots.pop(slot)
        self._ops.add(slot, Op("delete"))
        return True

    def purge(self, key: bytes) -> int:
        """
        Remove every response stored for C{key}.

        @return: how many.
        """
        return self._deleted(self._slots.purge(key))

    def purge_prefix(self, prefix: bytes) -> int:
        """
        Remove every response stored for a key starting with C{prefix}, in
        time linear in the number of keys held.

        @return: how many.
        """
        return self._deleted(self._slots.purge_prefix(prefix))

    def close(self) -> Deferred[None]:
        """
        Stop writing: later changes stay in memory only.

        @return: fires when the file operations under way are done.
        """
        self._ops.closed = True
        return self._ops.drained()

    def _deleted(self, gone: list[StoredResponse]) -> int:
        for entry in gone:
            self._ops.add(slot_of(entry), Op("delete"))
        return len(gone)

    def _evicted(self, entry: StoredResponse) -> None:
        self._ops.add(slot_of(entry), Op("delete"))

    def _start(self, slot: Slot, op: Op) -> Deferred[None]:
        path = files.slot_path(self.path, files.slot_name(slot))
        if op.kind == "write":
            running = self._in_thread(files.write_file, path, op.meta, op.body)
        elif op.kind == "rewrite":
            assert op.old is not None
            running = self._in_thread(files.rewrite_file, path, op.meta, op.old)
        else:
            running = self._in_thread(files.delete_file, path)
        return running.addErrback(self._failed, slot, op, path)

    def _failed(self, failure: Failure, slot: Slot, op: Op, path: str) -> None:
        _log.failure(
            "disk cache: could not {kind} {path}",
            failure,
            LogLevel.warn,
            kind=op.kind,
            path=path,
        )
        if op.indexed is not None and self._slots.get(slot) is op.indexed:
            self._slots.pop(slot)
            self._ops.add(slot, Op("delete"))

    def _in_thread(
        self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threadpool, f, *args, **kwargs)
