"""Chunked transfer coding (RFC 9112 section 7.1): an incremental decoder
with bounded memory, and the encoders for re-chunking a body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rproxy.http._grammar import HTTPError, parse_chunk_size, parse_fields
from rproxy.http.framing import Headers, Limits

__all__ = [
    "LAST_CHUNK",
    "ChunkEvent",
    "ChunkedDecoder",
    "End",
    "Trailers",
    "encode_chunk",
    "encode_last_chunk",
]

LAST_CHUNK = b"0\r\n\r\n"
_MAX_CHUNK_LINE = 4096

_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Trailers:
    """The trailer fields after the last chunk, if there were any."""

    headers: Headers


@dataclass(frozen=True, slots=True)
class End:
    """
    The chunked body is complete.

    @ivar rest: bytes fed after the body (the next pipelined message).
    """

    rest: bytes = b""


ChunkEvent = bytes | Trailers | End

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """
    Incremental decoder of a chunked body (RFC 9112 §7.1).

    L{feed} returns payload pieces as C{bytes} (slices of what was fed, the
    fed object itself when it is all payload), then at the end possibly
    L{Trailers}, then L{End}.  Memory stays bounded whatever the input: a
    chunk's data is never buffered, only a size line (at most 4 KiB) or the
    trailer section (at most C{limits.max_head}).
    """

    __slots__ = ("_bad", "_buf", "_left", "_limits", "_state", "_total")

    def __init__(self, limits: Limits | None = None, bad_status: int = 400) -> None:
        """
        @param bad_status: what malformed input raises: 400 for a client's
            body, 502 for a backend's.
        """
        self._limits = limits or _DEFAULT_LIMITS
        self._bad = bad_status
        self._state = _SIZE
        self._buf = b""
        self._left = 0
        self._total = 0

    @property
    def done(self) -> bool:
        """Whether L{End} has been returned."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[ChunkEvent]:
        """
        Decode the next bytes of the body.

        @raise HTTPError: C{bad_status} for malformed framing, 413 when the
            payload passes C{limits.max_body}; the decoder is then unusable.
        """
        if self._state == _DONE:
            raise RuntimeError("chunked body already complete")
        events: list[ChunkEvent] = []
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                events.append(data if take == n else data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DATA_END:
                # Exactly CRLF after the data, possibly split between feeds.
                need = b"\r\n"[len(self._buf) :]
                got = data[pos : pos + len(need)]
                if not need.startswith(got):
                    raise HTTPError(self._bad, "missing CRLF after chunk data")
                pos += len(got)
                self._buf += got
                if len(self._buf) == 2:
                    self._buf = b""
                    self._state = _SIZE
            elif state == _SIZE:
                pos = self._size_line(data, pos)
            else:
                pos = self._trailer(data, pos, events)
                if self._state == _DONE:
                    events.append(End(data[pos:]))
                    break
        return events

    def _size_line(self, data: bytes, pos: int) -> int:
        """Consume (part of) a chunk-size line; return the new position."""
        eol = data.find(b"\n", pos)
        if eol < 0:
            self._buf += data[pos:]
            if len(self._buf) > _MAX_CHUNK_LINE:
                raise HTTPError(self._bad, "chunk size line too long")
            return len(data)
        line = self._buf + data[pos:eol]
        self._buf = b""
        if len(line) > _MAX_CHUNK_LINE:
            raise HTTPError(self._bad, "chunk size line too long")
        size = parse_chunk_size(line, self._bad)
        self._total += size
        max_body = self._limits.max_body
        if max_body is not None and self._total > max_body:
            raise HTTPError(413, "body too large")
        if size:
            self._left, self._state = size, _DATA
        else:
            self._state = _TRAILER
        return eol + 1

    def _trailer(self, data: bytes, pos: int, events: list[ChunkEvent]) -> int:
        """Consume (part of) the trailer section; return the new position."""
        buf = self._buf + data[pos:]
        if buf.startswith(b"\r\n"):
            end = 2
        else:
            end = buf.find(b"\r\n\r\n")
            end = -1 if end < 0 else end + 4
        if end < 0:
            if len(buf) > self._limits.max_head:
                raise HTTPError(self._bad, "trailer section too large")
            if buf.startswith(b"\n") or buf.count(b"\n") != buf.count(b"\r\n"):
                raise HTTPError(self._bad, "bare LF in trailer section")
            self._buf = buf
            return len(data)
        if end > self._limits.max_head:
            raise HTTPError(self._bad, "trailer section too large")
        section = buf[: end - 2]
        fields = parse_fields(section, self._limits.max_headers, self._bad, self._bad)
        if fields:
            events.append(Trailers(fields))
        self._state = _DONE
        self._buf = b""
        # Position in data just past the section.
        return len(data) - (len(buf) - end)


def encode_chunk(data: bytes | memoryview) -> bytes:
    """One chunk carrying C{data}; empty data gives C{b""}, never a last chunk."""
    if not data:
        return b""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def encode_last_chunk(trailers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The last chunk, with a trailer section if C{trailers} are given."""
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + b"".join(b"%b: %b\r\n" % t for t in trailers) + b"\r\n"
