"""Remembered forward-auth answers: L{ResultCache} (a bounded LRU of the
fields a 2xx copied, per credential, each with its expiry), the key
(L{credential_key}) and how long an answer may be kept (L{cache_ttl})."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

__all__ = ["ResultCache", "cache_ttl", "credential_key"]

Fields = tuple[tuple[bytes, bytes], ...]


def credential_key(credentials: Sequence[tuple[bytes, bytes]]) -> bytes:
    """
    A digest of the credential fields a request forwards (names folded to
    lowercase, in the order sent), so that the cache holds no secrets and
    every key is the same small size.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, value in credentials:
        digest.update(name.lower())
        digest.update(b"\0")
        digest.update(value)
        digest.update(b"\n")
    return digest.digest()


def cache_ttl(
    headers: Sequence[tuple[bytes, bytes]], most: float, unmarked: bool
) -> float:
    """
    How many seconds a 2xx with C{headers} may be reused: at most C{most};
    0 for C{no-store}, C{no-cache} or C{max-age=0}; its C{max-age} if lower;
    without C{Cache-Control} (or without C{max-age}), C{most} if
    C{unmarked}, else 0.
    """
    values = [v for n, v in headers if n.lower() == b"cache-control"]
    if not values:
        return most if unmarked else 0.0
    max_age = None
    for directive in b",".join(values).split(b","):
        name, _, argument = directive.strip().partition(b"=")
        name = name.strip().lower()
        if name in (b"no-store", b"no-cache"):
            return 0.0
        if name == b"max-age":
            try:
                max_age = int(argument.strip().strip(b'"'))
            except ValueError:
                return 0.0
    if max_age is None:
        return most if unmarked else 0.0
    return float(max(0, min(most, max_age)))


class ResultCache:
    """
    The copied fields of allowed answers, by credential key, each until it
    expires on C{clock}; at most C{size} keys, the least recently used
    dropped first, so distinct credentials cannot grow it past that.
    """

    def __init__(self, size: int, clock: Any) -> None:
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Fields]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Fields | None:
        """
        The fields remembered for C{key}, or None (an expired entry is
        dropped).
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock.seconds():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, fields: Fields, ttl: float) -> None:
        """
        Remember C{fields} for C{key} for C{ttl} seconds.
        """
        entries = self._entries
        entries[key] = (self._clock.seconds() + ttl, fields)
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)
