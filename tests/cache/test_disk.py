"""Tests for L{rproxy.cache.disk}: the disk tier, on a real directory, its
files written by a real thread pool under the real reactor."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rproxy.cache import _files as files
from rproxy.cache._ops import Op, SlotOperations
from rproxy.cache.disk import DiskStore, EntryGoneError
from rproxy.cache.entry import StoredResponse
from rproxy.cache.memory import Slot, slot_of
from tests.cache.stored import stored

SLOT: Slot = (b"https://example.com/", (), ())
OTHER: Slot = (b"https://example.com/other", (), ())


def file_of(store: DiskStore, entry: StoredResponse) -> str:
    """
    Where C{store} keeps C{entry}'s file.
    """
    return files.slot_path(store.path, files.slot_name(slot_of(entry)))


def all_files(root: str) -> list[str]:
    """
    Every file under C{root}, relative to it, sorted.
    """
    return sorted(
        os.path.relpath(os.path.join(where, name), root)
        for where, _, names in os.walk(root)
        for name in names
    )


class DiskTestCase(TestCase):
    """
    A temporary directory, a started thread pool, and stores opened there
    closed before the pool stops.
    """

    def setUp(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="disk-cache-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.path = tempfile.mkdtemp(prefix="rproxy-cache-test-")
        self.addCleanup(shutil.rmtree, self.path, True)

    async def open(self, max_bytes: int = 1 << 20) -> DiskStore:
        """
        Open a store in the directory, closed when the test ends.
        """
        store = await DiskStore.open(self.path, max_bytes, reactor, self.pool)
        self.addCleanup(store.close)
        return store

    def record_calls(self, name: str) -> list[int]:
        """
        Make C{files.NAME} record the thread of each call.
        """
        threads: list[int] = []
        real: Callable[..., Any] = getattr(files, name)

        def recording(*args: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args)

        self.patch(files, name, recording)
        return threads


class DiskStoreTests(DiskTestCase):
    """
    L{DiskStore} keeps stored responses as files, indexed in memory.
    """

    async def test_round_trip(self) -> None:
        """A response put comes back whole from a load, every field kept."""
        store = await self.open()
        entry = stored(
            b"https://example.com/caf\xe9?q=\x00",
            bytes(range(256)) * 10,
            variant=(b"gzip", None),
            vary=(b"accept-encoding", b"cookie"),
            headers=[(b"Content-Type", b"application/octet-stream"), (b"X", b"\xff")],
        )
        entry.trailers = [(b"Checksum", b"abc")]
        await store.put(entry)
        [held] = store.variants(entry.key)
        self.assertIsNone(held.body)
        loaded = await store.load(held)
        for name in StoredResponse.__attrs_attrs__:
            self.assertEqual(getattr(loaded, name.name), getattr(entry, name.name))
        self.assertEqual(
            (store.objects, store.bytes), (1, os.stat(file_of(store, entry)).st_size)
        )

    async def test_index_rebuilt_on_reopen(self) -> None:
        """A second open finds what the first stored: the cache survives a
        restart."""
        store = await self.open()
        entries = [stored(b"k%d" % i, b"body %d" % i) for i in range(3)]
        entries.append(stored(b"k0", b"gzipped", variant=(b"gzip",)))
        for entry in entries:
            store.put(entry)
        await store.close()
        again = await self.open()
        self.assertEqual((again.objects, again.bytes), (store.objects, store.bytes))
        self.assertEqual(len(again.variants(b"k0")), 2)
        [k2] = again.variants(b"k2")
        self.assertEqual((await again.load(k2)).body, b"body 2")

    async def test_reopen_evicts_least_recently_used_over_the_bound(self) -> None:
        """A reopen with a smaller bound keeps the most recently written or
        used files and deletes the others."""
        store = await self.open()
        old, new = stored(b"old"), stored(b"new")
        await store.put(old)
        await store.put(new)
        size = store.bytes // 2
        os.utime(file_of(store, old), (1_000_000, 1_000_000))
        await store.close()
        again = await self.open(max_bytes=size)
        self.assertEqual(again.keys(), [b"new"])
        await again.close()
        self.assertFalse(os.path.exists(file_of(store, old)))

    async def test_damaged_and_foreign_files_removed_on_open(self) -> None:
        """The scan removes files cut short, misnamed, not ours, and temporary
        ones; files outside the fan-out directories stay."""
        store = await self.open()
        good, short, moved = stored(b"good"), stored(b"short"), stored(b"moved")
        for entry in (good, short, moved):
            await store.put(entry)
        await store.close()
        with open(file_of(store, short), "r+b") as f:
            f.truncate(os.path.getsize(file_of(store, short)) - 1)
        misnamed = os.path.join(os.path.dirname(file_of(store, moved)), "0" * 64)
        os.rename(file_of(store, moved), misnamed)
        fan = os.path.join(self.path, "ab", "cd")
        os.makedirs(fan)
        for name in ("ab" + "cd" + "0" * 60, "notes.txt", "abcd" + "1" * 60 + ".x.tmp"):
            with open(os.path.join(fan, name), "wb") as f:
                f.write(files.MAGIC + b"\x00\x02 not really")
        with open(os.path.join(self.path, "README"), "w") as f:
            f.write("mine")
        again = await self.open()
        self.assertEqual(again.keys(), [b"good"])
        self.assertEqual(
            all_files(self.path),
            sorted(["README", os.path.relpath(file_of(store, good), self.path)]),
        )

    async def test_damaged_body_found_by_load(self) -> None:
        """A body that fails its check is a miss, logged, and its file
        removed."""
        store = await self.open()
        entry = stored(body=b"x" * 1000)
        await store.put(entry)
        with open(file_of(store, entry), "r+b") as f:
            f.seek(-1, os.SEEK_END)
            f.write(b"y")
        with self.assertRaises(EntryGoneError):
            await store.load(entry)
        self.assertEqual(len(self.flushLoggedErrors(files.CorruptFileError)), 1)
        self.assertEqual(store.objects, 0)
        await store.close()
        self.assertFalse(os.path.exists(file_of(store, entry)))

    async def test_size_bound_evicts_least_recently_used(self) -> None:
        """Past the bound the least recently used response goes, its file
        deleted."""
        a, b, c = stored(b"a"), stored(b"b"), stored(b"c")
        size = files.file_size(files.encode_meta(a), a.length)
        store = await self.open(max_bytes=size * 2)
        for entry in (a, b):
            await store.put(entry)
        store.touch(a)
        await store.put(c)
        self.assertEqual(sorted(store.keys()), [b"a", b"c"])
        self.assertEqual(store.evictions, 1)
        await store.close()
        self.assertFalse(os.path.exists(file_of(store, b)))
        self.assertTrue(os.path.exists(file_of(store, a)))

    async def test_oversize_refused(self) -> None:
        """A response bigger than the whole store is not written, and empties
        its slot."""
        store = await self.open(max_bytes=2000)
        await store.put(stored(body=b"small"))
        await store.put(stored(body=b"x" * 2000, response_time=200.0))
        self.assertEqual((store.objects, store.bytes), (0, 0))
        await store.close()
        self.assertEqual(all_files(self.path), [])

    async def test_purge_removes_files(self) -> None:
        """Purging a key or a prefix removes its responses and their files."""
        store = await self.open()
        entries = [
            stored(b"/a/1"),
            stored(b"/a/1", variant=(b"gzip",)),
            stored(b"/a/2"),
            stored(b"/b"),
        ]
        for entry in entries:
            await store.put(entry)
        self.assertEqual(store.purge(b"/a/1"), 2)
        self.assertEqual(store.purge_prefix(b"/a/"), 1)
        self.assertEqual(store.keys(), [b"/b"])
        await store.close()
        self.assertEqual(
            all_files(self.path),
            [os.path.relpath(file_of(store, entries[3]), self.path)],
        )

    async def test_removed_while_writing_leaves_no_file(self) -> None:
        """A response removed while its file is being written is deleted
        after the write, not resurrected by it."""
        store = await self.open()
        entry = stored()
        store.put(entry)
        self.assertTrue(store.remove(entry))
        await store.close()
        self.assertEqual(all_files(self.path), [])
        again = await self.open()
        self.assertEqual(again.objects, 0)

    async def test_puts_while_writing_coalesce(self) -> None:
        """A put of the response being written joins that write; of several
        waiting puts for a slot only the last is written."""
        writes = self.record_calls("write_file")
        store = await self.open()
        first = stored()
        store.put(first)
        store.put(first)
        self.assertEqual(len(writes), 0)
        await store.close()
        self.assertEqual(len(writes), 1)
        store = await self.open()
        for t in (200.0, 300.0, 400.0):
            store.put(stored(body=b"v%d" % t, response_time=t))
        await store.close()
        self.assertEqual(len(writes), 3)
        [held] = (await self.open()).variants(first.key)
        self.assertEqual(held.response_time, 400.0)

    async def test_file_operations_run_off_the_reactor_thread(self) -> None:
        """Scans, writes, rewrites, reads and deletes run in the thread pool,
        never on the reactor thread."""
        calls = {
            name: self.record_calls(name)
            for name in (
                "scan",
                "write_file",
                "rewrite_file",
                "read_file",
                "delete_file",
            )
        }
        store = await self.open()
        entry = stored()
        await store.put(entry)
        await store.update(entry, [(b"ETag", b'"2"')])
        await store.load(store.variants(entry.key)[0])
        store.purge(entry.key)
        await store.close()
        for name, threads in calls.items():
            self.assertEqual(len(threads), 1, name)
            self.assertNotEqual(threads[0], threading.get_ident(), name)

    async def test_update_rewrites_the_fields(self) -> None:
        """An update gives the stored response new fields and times, in the
        index at once and in its file, the body kept."""
        store = await self.open()
        entry = stored(body=b"the body")
        await store.put(entry)
        fields = [(b"ETag", b'"2"')]
        done = store.update(entry, fields, response_time=500.0)
        [held] = store.variants(entry.key)
        self.assertEqual((held.headers, held.response_time), (fields, 500.0))
        await done
        await store.close()
        again = await self.open()
        [held] = again.variants(entry.key)
        self.assertEqual((held.headers, held.response_time), (fields, 500.0))
        self.assertEqual((await again.load(held)).body, b"the body")

    async def test_load_waits_for_a_pending_write(self) -> None:
        """A load of a response still being written reads it once written."""
        store = await self.open()
        entry = stored(body=b"fresh")
        store.put(entry)
        store.update(entry, [(b"ETag", b'"3"')], response_time=600.0)
        [held] = store.variants(entry.key)
        loaded = await store.load(held)
        self.assertEqual((loaded.body, loaded.headers), (b"fresh", [(b"ETag", b'"3"')]))

    async def test_failed_write_logged_and_dropped(self) -> None:
        """A write that fails is logged and leaves the response out of the
        index."""

        def failing(path: str, meta: bytes, body: bytes) -> None:
            raise OSError(28, "No space left on device")

        self.patch(files, "write_file", failing)
        store = await self.open()
        await store.put(stored())
        self.assertEqual((store.objects, store.bytes), (0, 0))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    async def test_load_of_a_removed_response_is_gone(self) -> None:
        """A load of a response no longer held fails with EntryGoneError."""
        store = await self.open()
        entry = stored()
        await store.put(entry)
        store.remove(entry)
        with self.assertRaises(EntryGoneError):
            await store.load(entry)


class SlotOperationsTests(SynchronousTestCase):
    """
    L{SlotOperations} runs file operations one at a time per slot, folding
    together those that wait.
    """

    def setUp(self) -> None:
        self.started: list[tuple[Slot, Op, Deferred[None]]] = []

        def start(slot: Slot, op: Op) -> Deferred[None]:
            running: Deferred[None] = Deferred()
            self.started.append((slot, op, running))
            return running

        self.ops = SlotOperations(start)

    def finish(self) -> Op:
        """
        Finish the oldest operation running, returning it.
        """
        _, op, running = self.started.pop(0)
        running.callback(None)
        return op

    def test_one_at_a_time_per_slot(self) -> None:
        """A slot's second operation starts when its first is done; another
        slot's at once."""
        self.ops.add(SLOT, Op("write", meta=b"1"))
        self.ops.add(SLOT, Op("delete"))
        self.ops.add(OTHER, Op("delete"))
        self.assertEqual([slot for slot, _, _ in self.started], [SLOT, OTHER])
        self.finish()
        self.assertEqual(self.started[-1][1].kind, "delete")
        self.assertEqual(self.started[-1][0], SLOT)

    def test_later_write_supersedes_waiting(self) -> None:
        """A write replaces the operations waiting; their waiters fire when
        it is done."""
        self.ops.add(SLOT, Op("write", meta=b"1"))
        waiting = [
            self.ops.add(SLOT, Op("write", meta=b"2")),
            self.ops.add(SLOT, Op("rewrite", meta=b"2'")),
            self.ops.add(SLOT, Op("write", meta=b"3")),
        ]
        self.finish()
        self.assertEqual([op.meta for _, op, _ in self.started], [b"3"])
        self.assertNoResult(waiting[0])
        self.finish()
        for done in waiting:
            self.assertIsNone(self.successResultOf(done))

    def test_rewrite_folds_into_waiting_write(self) -> None:
        """New metadata for a response whose write waits goes into that
        write."""
        self.ops.add(SLOT, Op("write", meta=b"1"))
        self.ops.add(SLOT, Op("write", meta=b"2", body=b"body"))
        self.ops.add(SLOT, Op("rewrite", meta=b"2 updated"))
        self.finish()
        [(_, op, _)] = self.started
        self.assertEqual((op.kind, op.meta, op.body), ("write", b"2 updated", b"body"))

    def test_same_write_joins_the_running_one(self) -> None:
        """A write of what is being written starts nothing new."""
        first = self.ops.add(SLOT, Op("write", meta=b"1", body=b"b"))
        again = self.ops.add(SLOT, Op("write", meta=b"1", body=b"b"))
        self.finish()
        self.assertEqual(self.started, [])
        self.successResultOf(first)
        self.successResultOf(again)

    def test_idle_and_drained(self) -> None:
        """Idle fires when a slot has nothing pending, drained when no slot
        has; closed refuses new operations."""
        self.assertIsNone(self.ops.idle(SLOT))
        self.ops.add(SLOT, Op("delete"))
        self.ops.add(OTHER, Op("delete"))
        idle = self.ops.idle(SLOT)
        assert idle is not None
        drained = self.ops.drained()
        self.finish()
        self.successResultOf(idle)
        self.assertNoResult(drained)
        self.ops.closed = True
        self.successResultOf(self.ops.add(SLOT, Op("delete")))
        self.assertEqual(len(self.started), 1)
        self.finish()
        self.successResultOf(drained)
