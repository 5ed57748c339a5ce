"""Tests for L{rproxy.cache.memory}: the memory tier's LRU, its byte bound
and its slots."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rproxy.cache.memory import MemoryStore, same_response, slot_of
from tests.cache.stored import stored


class MemoryStoreTests(SynchronousTestCase):
    """
    L{MemoryStore} keeps whole responses in a byte-bounded LRU.
    """

    def test_variants_most_recently_stored_first(self) -> None:
        """Variants of a key come back most recently stored first."""
        store = MemoryStore(100_000)
        a = stored(variant=(b"gzip",))
        b = stored(variant=(b"br",))
        c = stored(variant=(None,))
        for entry in (a, b, c):
            self.assertTrue(store.put(entry))
        self.assertEqual(store.variants(a.key), [c, b, a])
        self.assertEqual(store.variants(b"https://example.com/other"), [])

    def test_put_replaces_the_same_slot(self) -> None:
        """A response for the same key, Vary and variant replaces the one
        there, and the byte count follows."""
        store = MemoryStore(100_000)
        old = stored(variant=(b"gzip",), body=b"old")
        other = stored(variant=(b"br",))
        new = stored(variant=(b"gzip",), body=b"a longer body", response_time=200.0)
        for entry in (old, other, new):
            store.put(entry)
        self.assertEqual(store.variants(old.key), [new, other])
        self.assertEqual(store.objects, 2)
        self.assertEqual(store.bytes, new.size + other.size)

    def test_other_vary_is_another_slot(self) -> None:
        """The same values of other Vary fields are another slot."""
        store = MemoryStore(100_000)
        a = stored(variant=(b"x",), vary=(b"accept-encoding",))
        b = stored(variant=(b"x",), vary=(b"accept-language",))
        store.put(a)
        store.put(b)
        self.assertEqual(store.variants(a.key), [b, a])

    def test_evicts_least_recently_used(self) -> None:
        """Past the bound, the least recently used entries go first; a touch
        makes an entry recent."""
        a, b, c, d = (stored(b"k%d" % i) for i in range(4))
        store = MemoryStore(a.size * 3)
        for entry in (a, b, c):
            store.put(entry)
        store.touch(a)
        store.put(d)
        self.assertEqual(store.variants(b"k1"), [])
        for entry in (a, c, d):
            self.assertEqual(store.variants(entry.key), [entry])
        self.assertEqual((store.objects, store.evictions), (3, 1))
        self.assertEqual(store.bytes, a.size * 3)

    def test_oversize_refused(self) -> None:
        """An entry costing more than the whole store is refused, and empties
        its slot."""
        store = MemoryStore(2_000)
        small = stored(body=b"x")
        store.put(small)
        self.assertFalse(store.put(stored(body=b"x" * 2_000, response_time=200.0)))
        self.assertEqual((store.objects, store.bytes), (0, 0))

    def test_entry_without_body_refused(self) -> None:
        """An entry without its body is not stored."""
        store = MemoryStore(100_000)
        entry = stored()
        entry.body = None
        self.assertFalse(store.put(entry))
        self.assertEqual(store.objects, 0)

    def test_remove_only_the_same_response(self) -> None:
        """Removing a response that was replaced leaves its replacement."""
        store = MemoryStore(100_000)
        old = stored()
        new = stored(response_time=200.0)
        store.put(old)
        store.put(new)
        self.assertFalse(store.remove(old))
        self.assertEqual(store.variants(new.key), [new])
        self.assertTrue(store.remove(new))
        self.assertEqual((store.objects, store.bytes), (0, 0))

    def test_update_replaces_headers_and_times(self) -> None:
        """An update stores a copy with new header fields and times, the body
        shared and the byte count following."""
        store = MemoryStore(100_000)
        entry = stored()
        store.put(entry)
        fields = [(b"ETag", b'"v2"'), (b"Cache-Control", b"max-age=60")]
        new = store.update(entry, fields, request_time=299.0, response_time=300.0)
        assert new is not None
        self.assertEqual(store.variants(entry.key), [new])
        self.assertEqual((new.headers, new.request_time), (fields, 299.0))
        self.assertEqual(new.response_time, 300.0)
        self.assertIs(new.body, entry.body)
        self.assertEqual(store.bytes, new.size)
        self.assertEqual(entry.headers, [(b"Content-Type", b"text/plain")])

    def test_update_of_a_replaced_response_ignored(self) -> None:
        """An update of a response its slot no longer holds changes
        nothing."""
        store = MemoryStore(100_000)
        old = stored()
        new = stored(response_time=200.0)
        store.put(old)
        store.put(new)
        self.assertIsNone(store.update(old, []))
        self.assertEqual(store.variants(new.key), [new])

    def test_purge_key(self) -> None:
        """Purging a key removes all its variants and counts them."""
        store = MemoryStore(100_000)
        for entry in (stored(variant=(b"a",)), stored(variant=(b"b",)), stored(b"k")):
            store.put(entry)
        self.assertEqual(store.purge(b"https://example.com/"), 2)
        self.assertEqual(store.purge(b"https://example.com/"), 0)
        self.assertEqual(store.keys(), [b"k"])
        self.assertEqual(store.bytes, stored(b"k").size)

    def test_purge_prefix(self) -> None:
        """Purging a prefix removes every key starting with it."""
        store = MemoryStore(100_000)
        keys = [b"https://a/x/1", b"https://a/x/2", b"https://a/y", b"https://b/x/1"]
        for key in keys:
            store.put(stored(key))
        store.put(stored(b"https://a/x/1", variant=(b"gzip",)))
        self.assertEqual(store.purge_prefix(b"https://a/x/"), 3)
        self.assertEqual(sorted(store.keys()), [b"https://a/y", b"https://b/x/1"])

    def test_many_small_puts_stay_bounded(self) -> None:
        """A million puts of small entries (10,000 keys in turn, so that each
        put evicts) never hold more than the bound."""
        store = MemoryStore(1 << 20)
        entries = [stored(b"k%d" % i, b"x" * 100) for i in range(10_000)]
        for turn in range(100):
            for entry in entries:
                store.put(entry)
            self.assertLessEqual(store.bytes, store.max_bytes, turn)
        self.assertEqual(store.objects + store.evictions, 1_000_000)
        self.assertEqual(store.objects, (1 << 20) // entries[0].size)
        self.assertEqual(store.bytes, store.objects * entries[0].size)

    def test_same_response_across_copies(self) -> None:
        """A copy without its body is the same response; a later one for the
        slot is not."""
        entry = stored()
        copy = stored()
        copy.body = None
        self.assertTrue(same_response(entry, copy))
        self.assertFalse(same_response(entry, stored(response_time=101.0)))
        self.assertEqual(slot_of(entry), (entry.key, (), ()))
