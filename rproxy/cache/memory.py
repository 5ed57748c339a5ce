"""The memory tier of a cache: L{MemoryStore}, a byte-bounded LRU of
L{StoredResponse}s, and the slot bookkeeping the disk tier shares.

A I{slot} is what one stored response occupies: its key, the field names its
C{Vary} lists and the request's values of them. Storing a response in a slot
replaces the one there; a key has one slot per variant.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from attrs import evolve

from rproxy.cache.entry import Fields, StoredResponse

__all__ = [
    "LRUSlots",
    "MemoryStore",
    "Slot",
    "SlotIndex",
    "same_response",
    "slot_of",
    "updated",
]

#: (key, vary, variant): where a stored response lives.
Slot = tuple[bytes, tuple[bytes, ...], tuple[bytes | None, ...]]
_Variant = tuple[tuple[bytes, ...], tuple[bytes | None, ...]]


def slot_of(entry: StoredResponse) -> Slot:
    """
    The slot C{entry} occupies.
    """
    return (entry.key, entry.vary, entry.variant)


def same_response(a: StoredResponse, b: StoredResponse) -> bool:
    """
    Whether C{a} and C{b} are the same stored response (say, the memory and
    the disk tier's copies of it, with or without a body): same slot, times,
    status and length.
    """
    return (
        a.response_time == b.response_time
        and a.request_time == b.request_time
        and a.length == b.length
        and a.status == b.status
        and slot_of(a) == slot_of(b)
    )


def updated(
    entry: StoredResponse,
    headers: Fields,
    request_time: float | None,
    response_time: float | None,
) -> StoredResponse:
    """
    A copy of C{entry} with new header fields (and times, where given), the
    body shared.
    """
    return evolve(
        entry,
        headers=list(headers),
        request_time=entry.request_time if request_time is None else request_time,
        response_time=entry.response_time if response_time is None else response_time,
    )


class LRUSlots:
    """
    Stored responses by slot in least-recently-used order, with a cost each
    and a bound on their total: the index both tiers keep.

    Every operation is O(1) but L{variants} and L{purge} (O(variants of the
    key)) and L{purge_prefix} (O(keys held)).

    @ivar max_bytes: the bound on the total cost.
    @ivar bytes: the total cost held.
    @ivar evictions: entries evicted to make room, so far.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        # least recently used first
        self._lru: OrderedDict[Slot, tuple[StoredResponse, int]] = OrderedDict()
        # per key, by (vary, variant), least recently stored first
        self._by_key: dict[bytes, dict[_Variant, StoredResponse]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, slot: Slot) -> StoredResponse | None:
        """
        What C{slot} holds, if anything.
        """
        held = self._lru.get(slot)
        return None if held is None else held[0]

    def variants(self, key: bytes) -> list[StoredResponse]:
        """
        The responses stored for C{key}, most recently stored first.
        """
        held = self._by_key.get(key)
        return [] if held is None else list(reversed(held.values()))

    def keys(self) -> list[bytes]:
        """
        The keys something is stored for.
        """
        return list(self._by_key)

    def touch(self, slot: Slot) -> None:
        """
        Mark what C{slot} holds as just used.
        """
        if slot in self._lru:
            self._lru.move_to_end(slot)

    def add(
        self,
        entry: StoredResponse,
        cost: int,
        on_evict: Callable[[StoredResponse], object] | None = None,
    ) -> bool:
        """
        Store C{entry} at C{cost}, replacing what its slot held, then evict
        least recently used entries (calling C{on_evict} with each) until the
        total is within the bound.

        @return: C{False}, storing nothing (but still emptying the slot),
            when C{cost} alone is over the bound.
        """
        key = entry.key
        variant = (entry.vary, entry.variant)
        slot = (key, *variant)
        if slot in self._lru:
            self.pop(slot)
        if cost > self.max_bytes:
            return False
        self._lru[slot] = (entry, cost)
        held = self._by_key.get(key)
        if held is None:
            self._by_key[key] = {variant: entry}
        else:
            held[variant] = entry
        self.bytes += cost
        while self.bytes > self.max_bytes:
            victim = self.pop(next(iter(self._lru)))
            assert victim is not None
            self.evictions += 1
            if on_evict is not None:
                on_evict(victim)
        return True

    def pop(self, slot: Slot) -> StoredResponse | None:
        """
        Remove and return what C{slot} holds, if anything.
        """
        held = self._lru.pop(slot, None)
        if held is None:
            return None
        entry, cost = held
        self.bytes -= cost
        key, vary, variant = slot
        variants = self._by_key[key]
        del variants[vary, variant]
        if not variants:
            del self._by_key[key]
        return entry

    def purge(self, key: bytes) -> list[StoredResponse]:
        """
        Remove and return every response stored for C{key}.
        """
        held = self._by_key.pop(key, None)
        if held is None:
            return []
        lru = self._lru
        for variant in held:
            self.bytes -= lru.pop((key, *variant))[1]
        return list(held.values())

    def purge_prefix(self, prefix: bytes) -> list[StoredResponse]:
        """
        Remove and return every response stored for a key starting with
        C{prefix}: a scan of the keys held.
        """
        gone: list[StoredResponse] = []
        for key in [key for key in self._by_key if key.startswith(prefix)]:
            gone.extend(self.purge(key))
        return gone


class SlotIndex:
    """
    What both tiers answer from their index of stored responses by slot
    (L{LRUSlots}): sizes, lookups, and marking a response as used.
    """

    _slots: LRUSlots

    @property
    def max_bytes(self) -> int:
        """
        The bound on L{bytes}.
        """
        return self._slots.max_bytes

    @property
    def objects(self) -> int:
        """
        How many responses are held.
        """
        return len(self._slots)

    @property
    def evictions(self) -> int:
        """
        How many responses were evicted to make room, so far.
        """
        return self._slots.evictions

    def get(self, slot: Slot) -> StoredResponse | None:
        """
        The response stored in C{slot}, if any (without its body on disk).
        """
        return self._slots.get(slot)

    def variants(self, key: bytes) -> list[StoredResponse]:
        """
        The responses stored for C{key}, most recently stored first.
        """
        return self._slots.variants(key)

    def keys(self) -> list[bytes]:
        """
        The keys something is stored for.
        """
        return self._slots.keys()

    def touch(self, entry: StoredResponse) -> None:
        """
        Mark the response in C{entry}'s slot as just used.
        """
        self._slots.touch(slot_of(entry))

    # last: below here, "bytes" in an annotation would name this property
    @property
    def bytes(self) -> int:
        """
        What the responses held cost, in bytes (their files, on disk).
        """
        return self._slots.bytes


class MemoryStore(SlotIndex):
    """
    The memory tier: whole stored responses (with their bodies) in a
    byte-bounded LRU, each costing its L{StoredResponse.size}.

    The store owns the entries it is given: they are not changed after
    L{put} (L{update} stores a copy).
    """

    def __init__(self, max_bytes: int) -> None:
        self._slots = LRUSlots(max_bytes)

    def put(self, entry: StoredResponse) -> bool:
        """
        Store C{entry} (which has its body), replacing the entry in its slot,
        evicting the least recently used entries to make room.

        @return: whether it was stored: not when it has no body or costs more
            than the whole store (its slot emptied all the same).
        """
        if entry.body is None:
            self._slots.pop(slot_of(entry))
            return False
        return self._slots.add(entry, entry.size)

    def update(
        self,
        entry: StoredResponse,
        headers: Fields,
        *,
        request_time: float | None = None,
        response_time: float | None = None,
    ) -> StoredResponse | None:
        """
        Replace the stored header fields (and times, where given) of the
        response C{entry} is (after a 304 revalidated it).

        @param headers: the complete new stored header fields.
        @return: the updated entry, or C{None} when C{entry}'s slot no
            longer holds that response (or the update made it too big).
        """
        held = self._slots.get(slot_of(entry))
        if held is None or not same_response(held, entry):
            return None
        new = updated(held, headers, request_time, response_time)
        return new if self._slots.add(new, new.size) else None

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
        return True

    def purge(self, key: bytes) -> int:
        """
        Remove every entry stored for C{key}.

        @return: how many.
        """
        return len(self._slots.purge(key))

    def purge_prefix(self, prefix: bytes) -> int:
        """
        Remove every entry stored for a key starting with C{prefix}, in time
        linear in the number of keys held.

        @return: how many.
        """
        return len(self._slots.purge_prefix(prefix))
