"""What a cache filter stores responses in: L{TieredStore}, a
L{MemoryStore} in front of an optional L{DiskStore}.

Responses go into memory at once and are written to disk behind it; a
response only the disk holds is read in a thread when its body is wanted,
and promoted into memory. Disk failures are logged by the disk tier and
reach callers only as a response no longer held (L{EntryGoneError}).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.cache.disk import DiskStore, EntryGoneError
from rproxy.cache.entry import Fields, StoredResponse
from rproxy.cache.memory import MemoryStore, Slot, same_response, slot_of, updated

__all__ = ["EntryGoneError", "TieredStore"]

_log = Logger()


class TieredStore:
    """
    A memory tier, optionally backed by a disk tier, for responses of at
    most C{max_object} bytes.

    The store owns the entries it is given: don't change one after L{put}.

    @ivar memory: the memory tier.
    @ivar disk: the disk tier, or C{None}.
    @ivar max_object: the largest body stored, in bytes.
    """

    def __init__(
        self, memory: MemoryStore, disk: DiskStore | None, max_object: int
    ) -> None:
        self.memory = memory
        self.disk = disk
        self.max_object = max_object
        # disk reads under way: the response read, and who waits for its body
        self._loading: dict[Slot, tuple[StoredResponse, list[Deferred[bytes]]]] = {}

    @property
    def memory_bytes(self) -> int:
        """
        What the memory tier's entries cost, in bytes.
        """
        return self.memory.bytes

    @property
    def memory_objects(self) -> int:
        """
        How many entries the memory tier holds.
        """
        return self.memory.objects

    @property
    def disk_bytes(self) -> int:
        """
        The size of the disk tier's files (0 without one).
        """
        return 0 if self.disk is None else self.disk.bytes

    @property
    def disk_objects(self) -> int:
        """
        How many responses the disk tier holds (0 without one).
        """
        return 0 if self.disk is None else self.disk.objects

    def variants(self, key: bytes) -> list[StoredResponse]:
        """
        The responses stored for C{key}: those in memory (with their bodies),
        and those only the disk holds (without), most recent first.
        """
        held = self.memory.variants(key)
        if self.disk is None:
            return held
        memory = self.memory
        disk_only = [
            e for e in self.disk.variants(key) if memory.get(slot_of(e)) is None
        ]
        if not disk_only:
            return held
        return sorted(held + disk_only, key=lambda e: e.response_time, reverse=True)

    def touch(self, entry: StoredResponse) -> None:
        """
        Mark C{entry} as just used (serving it without its body, say a 304 or
        a HEAD).
        """
        self.memory.touch(entry)
        if self.disk is not None:
            self.disk.touch(entry)

    def body(self, entry: StoredResponse) -> bytes | Deferred[bytes]:
        """
        The body of C{entry}, marking it used: at once when memory holds it,
        else read from disk (concurrent reads of one response share one
        read) and the response promoted into memory.

        @return: the body, or a L{Deferred} that fires with it or fails with
            L{EntryGoneError} (treat it as a miss).
        """
        self.touch(entry)
        if entry.body is not None:
            return entry.body
        slot = slot_of(entry)
        held = self.memory.get(slot)
        if held is not None and held.body is not None and same_response(held, entry):
            return held.body
        if self.disk is None:
            return fail(EntryGoneError(entry.key))
        waiter: Deferred[bytes] = Deferred()
        loading = self._loading.get(slot)
        if loading is not None and same_response(loading[0], entry):
            loading[1].append(waiter)
            return waiter
        self._loading[slot] = (entry, [waiter])
        self.disk.load(entry).addBoth(self._loaded, slot, entry)
        return waiter

    def _loaded(
        self, result: StoredResponse | Failure, slot: Slot, entry: StoredResponse
    ) -> None:
        loading = self._loading.get(slot)
        waiters: list[Deferred[bytes]] = []
        if loading is not None and loading[0] is entry:
            del self._loading[slot]
            waiters = loading[1]
        if isinstance(result, Failure):
            if not result.check(EntryGoneError):
                _log.failure(
                    "disk cache: reading {key!r} failed", result, key=entry.key
                )
            for waiter in waiters:
                waiter.errback(Failure(EntryGoneError(entry.key)))
            return
        body = result.body
        assert body is not None
        if self.memory.get(slot) is None and result.length <= self.max_object:
            self.memory.put(result)
        for waiter in waiters:
            waiter.callback(body)

    def put(self, entry: StoredResponse) -> bool:
        """
        Store C{entry} (which has its whole body), replacing the response in
        its slot: in memory at once, on disk in the background (a failed
        write leaves it in memory only). One over C{max_object} bytes is
        refused, emptying its slot.

        @return: whether either tier took it.
        """
        body = entry.body
        if body is None or len(body) != entry.length or entry.length > self.max_object:
            self.remove_slot(slot_of(entry))
            return False
        stored = self.memory.put(entry)
        if self.disk is not None:
            self.disk.put(entry)
            stored = stored or self.disk.get(slot_of(entry)) is not None
        return stored

    def update(
        self,
        entry: StoredResponse,
        headers: Fields,
        *,
        request_time: float | None = None,
        response_time: float | None = None,
    ) -> StoredResponse:
        """
        Give the response C{entry} is new header fields (and times, where
        given) in both tiers, after a 304 revalidated it; a tier whose slot
        holds another response by now is left alone.

        @param headers: the complete new stored header fields.
        @return: the updated response (with its body when memory holds it).
        """
        new = self.memory.update(
            entry, headers, request_time=request_time, response_time=response_time
        )
        if self.disk is not None:
            self.disk.update(
                entry, headers, request_time=request_time, response_time=response_time
            )
        if new is None:
            new = updated(entry, headers, request_time, response_time)
        return new

    def remove(self, entry: StoredResponse) -> bool:
        """
        Remove the response C{entry} is from both tiers, where its slot still
        holds it.

        @return: whether either tier held it.
        """
        in_memory = self.memory.remove(entry)
        on_disk = self.disk is not None and self.disk.remove(entry)
        return in_memory or on_disk

    def remove_slot(self, slot: Slot) -> None:
        """
        Remove whatever response C{slot} holds, from both tiers.
        """
        held = self.memory.get(slot)
        if held is not None:
            self.memory.remove(held)
        held = None if self.disk is None else self.disk.get(slot)
        if held is not None and self.disk is not None:
            self.disk.remove(held)

    def purge(self, key: bytes) -> int:
        """
        Remove every response stored for C{key}, from both tiers.

        @return: how many (a response in both tiers counts once).
        """
        count = len(self.variants(key))
        self.memory.purge(key)
        if self.disk is not None:
            self.disk.purge(key)
        return count

    def purge_prefix(self, prefix: bytes) -> int:
        """
        Remove every response stored for a key starting with C{prefix}, from
        both tiers, in time linear in the number of keys held.

        @return: how many (a response in both tiers counts once).
        """
        keys = set(self.memory.keys())
        if self.disk is not None:
            keys.update(self.disk.keys())
        return sum(self.purge(key) for key in keys if key.startswith(prefix))

    def close(self) -> Deferred[None]:
        """
        Stop writing to disk.

        @return: fires when the disk writes under way are done.
        """
        return succeed(None) if self.disk is None else self.disk.close()
