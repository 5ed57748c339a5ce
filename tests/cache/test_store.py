"""Tests for L{rproxy.cache.store}: the memory tier in front of the disk
tier, as the cache filter uses them."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from rproxy.cache import _files as files
from rproxy.cache.disk import DiskStore
from rproxy.cache.entry import StoredResponse
from rproxy.cache.memory import MemoryStore
from rproxy.cache.store import EntryGoneError, TieredStore
from tests.cache.stored import stored
from tests.cache.test_disk import DiskTestCase, all_files, file_of


async def body_of(store: TieredStore, entry: StoredResponse) -> bytes:
    """
    The body of C{entry}, from whichever tier has it.
    """
    body = store.body(entry)
    return body if isinstance(body, bytes) else await body


def disk_of(store: TieredStore) -> DiskStore:
    """
    The disk tier of C{store}.
    """
    assert store.disk is not None
    return store.disk


class MemoryOnlyTests(SynchronousTestCase):
    """
    Without a disk tier, L{TieredStore} is its memory tier.
    """

    def test_body_at_once(self) -> None:
        """A stored response's body is there at once."""
        store = TieredStore(MemoryStore(100_000), None, 1000)
        entry = stored(body=b"hello")
        self.assertTrue(store.put(entry))
        [held] = store.variants(entry.key)
        self.assertEqual(store.body(held), b"hello")
        self.assertEqual((store.memory_objects, store.disk_objects), (1, 0))
        self.assertEqual((store.memory_bytes, store.disk_bytes), (entry.size, 0))

    def test_over_max_object_refused(self) -> None:
        """A body over max_object is refused, and empties its slot."""
        store = TieredStore(MemoryStore(100_000), None, 10)
        store.put(stored(body=b"short"))
        self.assertFalse(store.put(stored(body=b"x" * 11, response_time=200.0)))
        self.assertEqual(store.variants(stored().key), [])

    def test_purge(self) -> None:
        """Purges count the responses removed."""
        store = TieredStore(MemoryStore(100_000), None, 1000)
        for entry in (stored(b"/a"), stored(b"/a", variant=(b"br",)), stored(b"/b")):
            store.put(entry)
        self.assertEqual(store.purge(b"/a"), 2)
        self.assertEqual(store.purge_prefix(b"/"), 1)
        self.assertEqual(store.memory_objects, 0)

    def test_update_returns_the_updated_response(self) -> None:
        """An update returns the response with its new fields and body."""
        store = TieredStore(MemoryStore(100_000), None, 1000)
        entry = stored()
        store.put(entry)
        new = store.update(entry, [(b"ETag", b'"2"')], response_time=300.0)
        self.assertEqual(store.variants(entry.key), [new])
        self.assertEqual((new.body, new.response_time), (entry.body, 300.0))


class TieredStoreTests(DiskTestCase):
    """
    L{TieredStore} writes behind to disk, and reads from it what memory no
    longer holds.
    """

    async def tiered(self, memory: int = 100_000) -> TieredStore:
        """
        A store with a memory tier of C{memory} bytes over a disk tier.
        """
        return TieredStore(MemoryStore(memory), await self.open(), 1 << 20)

    async def test_put_writes_behind_to_disk(self) -> None:
        """A put is in memory at once and on disk once written."""
        store = await self.tiered()
        entry = stored()
        store.put(entry)
        self.assertEqual((store.memory_objects, store.disk_objects), (1, 1))
        await store.close()
        self.assertTrue(os.path.exists(file_of(disk_of(store), entry)))

    async def test_evicted_from_memory_is_read_from_disk_and_promoted(self) -> None:
        """A response memory evicted is still a variant; its body is read
        from disk and it is promoted back into memory."""
        a, b = stored(b"a", b"body a"), stored(b"b", b"body b")
        store = await self.tiered(memory=a.size)
        store.put(a)
        store.put(b)
        self.assertEqual(store.memory.variants(b"a"), [])
        [held] = store.variants(b"a")
        self.assertIsNone(held.body)
        body = store.body(held)
        assert isinstance(body, Deferred)
        self.assertEqual(await body, b"body a")
        [promoted] = store.memory.variants(b"a")
        self.assertEqual(promoted.body, b"body a")
        self.assertEqual(store.body(store.variants(b"a")[0]), b"body a")

    async def test_variants_from_both_tiers_most_recent_first(self) -> None:
        """Variants come from memory and disk, each once, most recent
        first."""
        old = stored(variant=(b"br",), response_time=100.0)
        new = stored(variant=(b"gzip",), response_time=200.0)
        store = await self.tiered(memory=old.size)
        store.put(new)
        store.put(old)
        self.assertEqual([e.response_time for e in store.variants(old.key)], [200, 100])

    async def test_survives_a_restart(self) -> None:
        """A store over the same directory after a restart serves what the
        first one stored."""
        first = await self.tiered()
        first.put(stored(body=b"kept"))
        await first.close()
        store = await self.tiered()
        [held] = store.variants(stored().key)
        self.assertEqual(await body_of(store, held), b"kept")
        self.assertEqual(store.memory_objects, 1)

    async def test_concurrent_reads_share_one(self) -> None:
        """Bodies wanted by several requests at once are read once."""
        reads = self.record_calls("read_file")
        first = await self.tiered()
        first.put(stored(body=b"shared"))
        await first.close()
        store = await self.tiered()
        [held] = store.variants(stored().key)
        waits = [store.body(held) for _ in range(3)]
        self.assertTrue(all(isinstance(w, Deferred) for w in waits))
        self.assertEqual([await body_of(store, held)], [b"shared"])
        self.assertEqual(
            [await w for w in waits if isinstance(w, Deferred)], [b"shared"] * 3
        )
        self.assertEqual(len(reads), 1)

    async def test_failed_disk_write_leaves_memory(self) -> None:
        """A failed disk write is logged; the response stays in memory."""

        def failing(path: str, meta: bytes, body: bytes) -> None:
            raise PermissionError(13, "Permission denied")

        self.patch(files, "write_file", failing)
        store = await self.tiered()
        entry = stored()
        self.assertTrue(store.put(entry))
        await store.close()
        self.assertEqual((store.memory_objects, store.disk_objects), (1, 0))
        self.assertEqual(store.body(store.variants(entry.key)[0]), entry.body)
        self.assertEqual(len(self.flushLoggedErrors(PermissionError)), 1)

    async def test_lost_file_is_a_miss(self) -> None:
        """A body whose file vanished fails with EntryGoneError."""
        first = await self.tiered()
        entry = stored()
        first.put(entry)
        await first.close()
        store = await self.tiered()
        os.unlink(file_of(disk_of(store), entry))
        with self.assertRaises(EntryGoneError):
            await body_of(store, store.variants(entry.key)[0])
        self.assertEqual(store.variants(entry.key), [])

    async def test_update_reaches_both_tiers(self) -> None:
        """An update after a 304 changes the memory copy at once and the file
        behind it."""
        store = await self.tiered()
        entry = stored()
        store.put(entry)
        store.update(entry, [(b"ETag", b'"2"')], response_time=300.0)
        await store.close()
        store = await self.tiered()
        [held] = store.variants(entry.key)
        self.assertEqual(
            (held.headers, held.response_time), ([(b"ETag", b'"2"')], 300.0)
        )

    async def test_purge_counts_each_response_once(self) -> None:
        """A response in both tiers counts once in a purge, and leaves both."""
        store = await self.tiered()
        store.put(stored(b"/x/1"))
        store.put(stored(b"/x/2"))
        self.assertEqual(store.purge(b"/x/1"), 1)
        self.assertEqual(store.purge_prefix(b"/x/"), 1)
        self.assertEqual((store.memory_objects, store.disk_objects), (0, 0))
        await store.close()
        self.assertEqual(all_files(self.path), [])

    async def test_remove_from_both_tiers(self) -> None:
        """A removed response leaves memory and disk."""
        store = await self.tiered()
        entry = stored()
        store.put(entry)
        self.assertTrue(store.remove(entry))
        self.assertEqual(store.variants(entry.key), [])
        self.assertFalse(store.remove(entry))
