"""The flood limits of an HTTP/2 connection, counted on the frames as they
arrive, before the C{h2} library parses them: L{FloodGuard} reads frame
headers only (nine bytes each) and says which limit a client went past.

Pure: no I/O, the time is given.
"""

from __future__ import annotations

from rproxy.http.h2.settings import H2Settings

__all__ = ["Budget", "FloodGuard"]

_PREFACE_LENGTH = 24
_HEADER = 9
# Frame types (RFC 9113 section 6) and the flags looked at.
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0, 1, 2, 3, 4
_PUSH_PROMISE, _PING, _CONTINUATION = 5, 6, 9
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


class Budget:
    """
    A leaky bucket: C{size} events, draining at C{size} per C{window}
    seconds.
    """

    def __init__(self, size: int, window: float) -> None:
        self.size = size
        self._rate = size / window if window > 0 else float("inf")
        self._level = 0.0
        self._last = 0.0

    def spend(self, now: float) -> bool:
        """
        Count one event at C{now}; whether it stays within the budget.
        """
        drained = (now - self._last) * self._rate
        self._last = now
        self._level = max(0.0, self._level - drained) + 1.0
        return self._level <= self.size


class FloodGuard:
    """
    Watches the frames a client sends on one connection (the bytes after
    the connection preface, fed as they arrive) for floods: streams reset
    (Rapid Reset), SETTINGS, PING, PRIORITY and empty DATA frames past
    their budgets, and a header block (HEADERS and its CONTINUATION
    frames) larger than C{max_header_block}.
    """

    def __init__(self, settings: H2Settings, preface: bool = True) -> None:
        window = settings.flood_window
        self._budgets = {
            _RST_STREAM: ("rapid_reset", Budget(settings.max_resets, window)),
            _SETTINGS: ("settings", Budget(settings.max_settings, window)),
            _PING: ("ping", Budget(settings.max_pings, window)),
            _PRIORITY: ("priority", Budget(settings.max_priority, window)),
        }
        self._empty_data = Budget(settings.max_empty_data, window)
        self._max_block = settings.max_header_block
        self._skip = _PREFACE_LENGTH if preface else 0
        self._head = b""
        #: bytes of the header block under way, or -1 outside of one.
        self._block = -1

    def feed(self, data: bytes, now: float) -> str | None:
        """
        Count the frames C{data} completes; the name of the first limit
        gone past (see L{rproxy.http.h2.stats.FLOODS}), or C{None}.
        """
        at, size = 0, len(data)
        while at < size:
            if self._skip:
                step = min(self._skip, size - at)
                self._skip -= step
                at += step
                continue
            need = _HEADER - len(self._head)
            self._head += data[at : at + need]
            at += need
            if len(self._head) < _HEADER:
                return None
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            self._skip = length
            flood = self._frame(head[3], head[4], length, now)
            if flood is not None:
                return flood
        return None

    def _frame(self, kind: int, flags: int, length: int, now: float) -> str | None:
        if kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
            if kind != _CONTINUATION:
                self._block = 0
            if self._block >= 0:
                self._block += length
                if self._block > self._max_block:
                    return "header_block"
            if flags & _END_HEADERS:
                self._block = -1
            return None
        if kind == _DATA:
            empty = length == 0 and not flags & _END_STREAM
            return "empty_data" if empty and not self._empty_data.spend(now) else None
        found = self._budgets.get(kind)
        if found is None or (kind in (_SETTINGS, _PING) and flags & _ACK):
            return None
        name, budget = found
        return None if budget.spend(now) else name
