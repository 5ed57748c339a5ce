"""A minimal in-memory store for the cache filter's tests (the real tiers
are tested on their own), with an optional disk-like tier whose bodies are
read through Deferreds the test fires."""

from __future__ import annotations

from attrs import evolve
from twisted.internet.defer import Deferred

from rproxy.cache.entry import Fields, StoredResponse


class FakeStore:
    """
    Entries per key, most recent first; no eviction.

    @ivar disk: when true, stored bodies are kept aside and L{body} returns
        a Deferred (in C{reads}) the test fires with L{read_all}.
    """

    def __init__(self, max_object: int = 1 << 20, disk: bool = False) -> None:
        self.max_object = max_object
        self.disk = disk
        self.entries: dict[bytes, list[StoredResponse]] = {}
        self.bodies: dict[int, bytes] = {}
        self.reads: list[tuple[Deferred[bytes], StoredResponse]] = []
        self.updates = 0
        #: the entries served, in order (L{touch}).
        self.touched: list[StoredResponse] = []

    @property
    def bytes(self) -> int:
        return sum(e.size for v in self.entries.values() for e in v)

    @property
    def objects(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def touch(self, entry: StoredResponse) -> None:
        self.touched.append(entry)

    def variants(self, key: bytes) -> list[StoredResponse]:
        return list(self.entries.get(key, ()))

    def body(self, entry: StoredResponse) -> bytes | Deferred[bytes]:
        if entry.body is not None:
            return entry.body
        d: Deferred[bytes] = Deferred()
        self.reads.append((d, entry))
        return d

    def read_all(self) -> None:
        """Complete every body read under way."""
        reads, self.reads = self.reads, []
        for d, entry in reads:
            d.callback(self.bodies[id(entry)])

    def put(self, entry: StoredResponse) -> None:
        if entry.length > self.max_object:
            return
        same = self.entries.setdefault(entry.key, [])
        same[:] = [e for e in same if e.variant != entry.variant]
        same.insert(0, entry)
        if self.disk and entry.body is not None:
            self.bodies[id(entry)] = entry.body
            entry.body = None

    def update(
        self,
        entry: StoredResponse,
        headers: Fields,
        *,
        request_time: float | None = None,
        response_time: float | None = None,
    ) -> StoredResponse | None:
        """A new entry with the new fields and times, in C{entry}'s place."""
        self.updates += 1
        same = self.entries.get(entry.key, [])
        if entry not in same:
            return None
        new = evolve(
            entry,
            headers=headers,
            request_time=entry.request_time if request_time is None else request_time,
            response_time=entry.response_time
            if response_time is None
            else response_time,
        )
        same[same.index(entry)] = new
        if id(entry) in self.bodies:
            self.bodies[id(new)] = self.bodies[id(entry)]
        return new

    def remove(self, entry: StoredResponse) -> None:
        same = self.entries.get(entry.key, [])
        if entry in same:
            same.remove(entry)
        if not same:
            self.entries.pop(entry.key, None)

    def purge(self, key: bytes) -> int:
        return len(self.entries.pop(key, []))

    def purge_prefix(self, prefix: bytes) -> int:
        keys = [k for k in self.entries if k.startswith(prefix)]
        return sum(self.purge(k) for k in keys)
