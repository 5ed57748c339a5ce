"""The disk tier's files: their names, their format and the blocking
operations on them, which L{rproxy.cache.disk} runs in a thread pool.

A stored response is one file, named by the SHA-256 of its slot, in two
levels of fan-out directories (C{ab/cd/abcd...}). The file is a fixed prefix
(magic, format version, metadata length, CRC-32 of the body), the metadata
as JSON (every byte string as Latin-1 text) and the body. Files are written
to a temporary file beside their final name and renamed over it, so a crash
leaves either file whole, or a C{.tmp} file the next scan removes; a file cut
short (its size disagrees with its metadata) or not ours is removed by the
scan, one whose body fails its CRC by the load that finds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from typing import IO, Any

from attrs import frozen

from rproxy.cache.entry import Fields, StoredResponse
from rproxy.cache.memory import Slot, same_response

__all__ = [
    "MAGIC",
    "CorruptFileError",
    "EntryGoneError",
    "Scan",
    "delete_file",
    "encode_meta",
    "file_size",
    "read_file",
    "rewrite_file",
    "scan",
    "slot_name",
    "write_file",
]

MAGIC = b"RPXC"
VERSION = 1
#: magic, version, metadata length, CRC-32 of the body
_PREFIX = struct.Struct(">4sHII")
#: more metadata than this is not ours (the codec bounds header sizes)
_MAX_META = 1 << 20
_HEX = frozenset("0123456789abcdef")


class EntryGoneError(LookupError):
    """
    The store no longer holds that response (removed, replaced, or its file
    lost or damaged).
    """


class CorruptFileError(ValueError):
    """
    A file under the cache's directory that is not a whole stored response.
    """


def slot_name(slot: Slot) -> str:
    """
    The file name (SHA-256, hex) of what C{slot} holds.
    """
    key, vary, variant = slot
    text = json.dumps(
        [_text(key), [_text(v) for v in vary], [_opt(v) for v in variant]],
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def slot_path(root: str, name: str) -> str:
    """
    Where the file named C{name} lives under C{root}.
    """
    return os.path.join(root, name[:2], name[2:4], name)


def encode_meta(entry: StoredResponse) -> bytes:
    """
    The metadata part of C{entry}'s file.
    """
    meta = {
        "key": _text(entry.key),
        "vary": [_text(v) for v in entry.vary],
        "variant": [_opt(v) for v in entry.variant],
        "status": entry.status,
        "reason": _text(entry.reason),
        "headers": [[_text(n), _text(v)] for n, v in entry.headers],
        "trailers": [[_text(n), _text(v)] for n, v in entry.trailers],
        "request_time": entry.request_time,
        "response_time": entry.response_time,
        "length": entry.length,
    }
    return json.dumps(meta, separators=(",", ":")).encode("ascii")


def file_size(meta: bytes, length: int) -> int:
    """
    The size of a file with metadata C{meta} and a body of C{length} bytes.
    """
    return _PREFIX.size + len(meta) + length


def write_file(path: str, meta: bytes, body: bytes) -> None:
    """
    Write a stored response's file, atomically.
    """

    def write(out: IO[bytes]) -> None:
        out.write(_PREFIX.pack(MAGIC, VERSION, len(meta), zlib.crc32(body)))
        out.write(meta)
        out.write(body)

    _replace(path, write)


def rewrite_file(path: str, meta: bytes, old: StoredResponse) -> None:
    """
    Give the file at C{path}, which holds the response C{old}, new metadata
    (the body copied across), atomically.

    @raise EntryGoneError: the file is not there or holds another response.
    """
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise EntryGoneError(path) from None
    with source:
        held, crc = _read_head(source, os.fstat(source.fileno()).st_size)
        if not same_response(held, old):
            raise EntryGoneError(path)

        def write(out: IO[bytes]) -> None:
            out.write(_PREFIX.pack(MAGIC, VERSION, len(meta), crc))
            out.write(meta)
            shutil.copyfileobj(source, out)

        _replace(path, write)


def read_file(path: str, entry: StoredResponse) -> StoredResponse:
    """
    Read the response C{entry} is, with its body, and mark the file used
    (its modification time orders the index a restart rebuilds).

    @raise EntryGoneError: the file is not there or holds another response.
    @raise CorruptFileError: the file is damaged.
    """
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise EntryGoneError(path) from None
    with source:
        held, crc = _read_head(source, os.fstat(source.fileno()).st_size)
        if not same_response(held, entry):
            raise EntryGoneError(path)
        body = source.read(held.length)
    if len(body) != held.length or zlib.crc32(body) != crc:
        raise CorruptFileError(f"{path}: the body fails its check")
    with contextlib.suppress(OSError):
        os.utime(path)
    held.body = body
    return held


def delete_file(path: str) -> None:
    """
    Remove the file at C{path}, if it is there.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@frozen
class Scan:
    """
    What a scan of a cache directory found.

    @ivar found: (response without its body, file size), least recently
        used first.
    @ivar removed: files removed as damaged or not ours.
    @ivar temporary: temporary files (from a crash) removed.
    """

    found: list[tuple[StoredResponse, int]]
    removed: int
    temporary: int


def scan(root: str) -> Scan:
    """
    Read the metadata of every file under the fan-out directories of
    C{root} (created if missing); remove temporary files and files that are
    damaged or not ours. Nothing outside the fan-out directories is touched.
    """
    os.makedirs(root, exist_ok=True)
    found: list[tuple[float, StoredResponse, int]] = []
    removed = temporary = 0
    for first in _fan_dirs(root):
        for second in _fan_dirs(first.path):
            for item in os.scandir(second.path):
                if not item.is_file(follow_symlinks=False):
                    continue
                if item.name.endswith(".tmp"):
                    delete_file(item.path)
                    temporary += 1
                    continue
                try:
                    entry, size = _read_record(item.path, item.name)
                    if not item.name.startswith(first.name + second.name):
                        raise CorruptFileError(item.path)
                except (CorruptFileError, OSError):
                    delete_file(item.path)
                    removed += 1
                else:
                    found.append((item.stat().st_mtime, entry, size))
    found.sort(key=lambda record: record[0])
    return Scan([(entry, size) for _, entry, size in found], removed, temporary)


def _fan_dirs(path: str) -> list[os.DirEntry[str]]:
    return [
        item
        for item in os.scandir(path)
        if len(item.name) == 2
        and set(item.name) <= _HEX
        and item.is_dir(follow_symlinks=False)
    ]


def _read_record(path: str, name: str) -> tuple[StoredResponse, int]:
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        entry, _ = _read_head(source, size)
    if slot_name((entry.key, entry.vary, entry.variant)) != name:
        raise CorruptFileError(f"{path}: not named for what it holds")
    return entry, size


def _read_head(source: IO[bytes], size: int) -> tuple[StoredResponse, int]:
    """
    Read a file's prefix and metadata, leaving C{source} at the body.

    @return: the response without its body, and the body's CRC-32.
    """
    prefix = source.read(_PREFIX.size)
    if len(prefix) != _PREFIX.size:
        raise CorruptFileError("shorter than a prefix")
    magic, version, meta_length, crc = _PREFIX.unpack(prefix)
    if magic != MAGIC or version != VERSION or meta_length > _MAX_META:
        raise CorruptFileError("not a stored response of this format")
    try:
        entry = _decode_meta(json.loads(source.read(meta_length)))
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(f"unreadable metadata: {e}") from None
    if size != _PREFIX.size + meta_length + entry.length:
        raise CorruptFileError("cut short (or too long)")
    return entry, crc


def _decode_meta(meta: dict[str, Any]) -> StoredResponse:
    return StoredResponse(
        key=_bytes(meta["key"]),
        vary=tuple(_bytes(v) for v in meta["vary"]),
        variant=tuple(None if v is None else _bytes(v) for v in meta["variant"]),
        status=_int(meta["status"]),
        reason=_bytes(meta["reason"]),
        headers=_fields(meta["headers"]),
        trailers=_fields(meta["trailers"]),
        request_time=_float(meta["request_time"]),
        response_time=_float(meta["response_time"]),
        length=_int(meta["length"]),
    )


def _replace(path: str, write: Callable[[IO[bytes]], None]) -> None:
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(temporary, path)
    except BaseException:
        delete_file(temporary)
        raise


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _opt(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    return value.encode("latin-1")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"not a count: {value!r}")
    return value


def _float(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    return float(value)


def _fields(value: object) -> Fields:
    if not isinstance(value, list):
        raise TypeError(f"not fields: {value!r}")
    return [(_bytes(name), _bytes(v)) for name, v in value]
