"""Response compression, as a filter: L{Compress} codes response bodies in
gzip, br or zstd, as the client's C{Accept-Encoding} allows and its
L{CompressSettings} say; L{compress_settings} reads those from a route's
TOML C{compress} table.

The coding is chosen when the request head arrives (how:
L{rproxy.http._codings}); requests with C{Cache-Control: no-transform} and
HTTP/1.0 requests get none (an HTTP/1.0 client cannot take a body of
unknown length and keep its connection, and old HTTP/1.0 caches ignore
C{Vary}, which is why nginx's C{gzip_http_version} is 1.1 too).

A response is compressed when it is a 2xx but 204 and 206, answers no HEAD,
has one of the configured C{types}, a C{Content-Length} of at least
C{min_length} or no length (chunked, or until close), no C{Content-Range},
no C{Cache-Control: no-transform}, no transfer coding but chunked, and no
C{Content-Encoding}.  A C{Content-Encoding} naming only C{identity} (which
RFC 9110 reserves for C{Accept-Encoding}; a backend should not send it)
counts as none: it is replaced when the body is compressed and left as it
is otherwise.

A response that would be compressed for some client gets
C{Vary: Accept-Encoding} whoever asked (merged into the backend's C{Vary};
not added where C{Vary: *} is), and so does a 304 of such a type or of no
stated type.  When the body is compressed:

  - C{Content-Encoding} names the coding, C{Content-Length} and
    C{Accept-Ranges} go (the codec chunks the body for the client), and so
    do digests of the uncoded body (C{Content-Digest}, C{Repr-Digest},
    C{Digest}, C{Content-MD5}), in the head and in the trailers; other
    trailers pass.
  - A strong C{ETag} becomes weak (C{W/"x"}), as nginx does: the coded body
    is not byte-identical but is equivalent.  So does the C{ETag} of a 304
    to a request this filter would have compressed the answer of.
    C{If-None-Match} goes upstream as the client sent it: RFC 9110 §13.1.2
    has the backend compare it weakly, so C{W/"x"} matches its C{"x"}.
  - The body is coded as it streams: each backend read gives what the
    encoder gives (often nothing yet), and C{text/event-stream} is flushed
    after every read so that each event reaches the client when it comes.
    Body bytes larger than L{SLICE} in one call (a filter before this one
    may hand over a whole stored body) are coded one slice per reactor turn
    (C{exchange.clock.callLater(0, ...)}), the response suspended meanwhile,
    so that other connections are served between slices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.internet.defer import Deferred

from rproxy._fastwrite import Data
from rproxy.http._codings import (
    CODINGS,
    DIGESTS,
    LEVELS,
    MediaTypes,
    add_vary,
    choose_coding,
    media_range,
    scan_response,
    tokens,
    weaken_etag,
)
from rproxy.http._encoders import Encoder, new_encoder
from rproxy.http.filters import HTTPFilter
from rproxy.http.framing import RequestHead, ResponseHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_PREFER",
    "DEFAULT_TYPES",
    "MIN_LENGTH",
    "SLICE",
    "Compress",
    "CompressSettings",
    "compress_settings",
]

#: the media types compressed unless the settings say otherwise.
DEFAULT_TYPES = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
)
#: the level of each coding unless the settings say otherwise, measured
#: with bench/compress_bench.py on 1 MiB of JSON and on HTML pages: gzip 6
#: is zlib's and nginx's usual level (9 saves 1-2% for twice the CPU); br 5
#: codes 5-8% smaller than gzip 6 for about its CPU (4 is 5-7% bigger, 6
#: saves 1-2% for a quarter more CPU); zstd 3 codes about as small as gzip
#: 6 for a fifth of its CPU.
DEFAULT_LEVELS = {"gzip": 6, "br": 5, "zstd": 3}
#: the codings used, the preferred first, unless the settings say otherwise:
#: zstd first as the cheapest for one reactor thread to code (a client that
#: accepts it accepts br too), then br, then gzip, which every client takes.
DEFAULT_PREFER = ("zstd", "br", "gzip")
#: the smallest Content-Length compressed unless the settings say otherwise:
#: at 256 bytes a coding saves about 50, which the Content-Encoding field
#: and chunked framing take back; at 512 it saves about 40% (200 bytes) for
#: 10-35 microseconds of CPU.
MIN_LENGTH = 512
#: the most body bytes coded in one go.
SLICE = 1 << 16

_EVENT_STREAM = "text/event-stream"
#: fields left out of a response this filter compresses.
_DROPPED = DIGESTS | {b"content-length", b"accept-ranges", b"content-encoding"}


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _types(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(media_range(value) for value in values)


def _levels(
    value: Mapping[str, int] | Iterable[tuple[str, int]],
) -> tuple[tuple[str, int], ...]:
    given = dict(value.items() if isinstance(value, Mapping) else value)
    for coding, level in given.items():
        if coding not in LEVELS:
            raise ValueError(f"no coding {coding!r}; the codings are {CODINGS}")
        _level(coding)(level)
    return tuple(
        (coding, given.get(coding, DEFAULT_LEVELS[coding])) for coding in CODINGS
    )


def _level(coding: str) -> Callable[[object], int]:
    allowed = LEVELS[coding]

    def convert(value: object) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value not in allowed
        ):
            raise ValueError(
                f"must be a {coding} level {allowed.start}-{allowed.stop - 1}, "
                f"got {value!r}"
            )
        return value

    return convert


def _check_prefer(settings: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("prefer must name at least one coding")
    for coding in value:
        if coding not in LEVELS:
            raise ValueError(f"no coding {coding!r}; the codings are {CODINGS}")
    if len(set(value)) != len(value):
        raise ValueError(f"prefer names a coding twice: {value}")


def _check_min_length(settings: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"min_length must be an integer >= 0, got {value!r}")


@frozen
class CompressSettings:
    """
    What a L{Compress} filter compresses, and how.

    @ivar types: media types compressed: C{"text/html"}, C{"text/*"} (every
        subtype) or C{"application/*+json"} (every subtype with that
        structured suffix); lowercased.
    @ivar min_length: responses with a smaller C{Content-Length} go as they
        are (a coding saves little on a few hundred bytes and adds a field
        and chunked framing); responses of unknown length are compressed.
    @ivar levels: the level of each coding, as (coding, level) pairs; give a
        mapping of those to change, the others keep L{DEFAULT_LEVELS}.
    @ivar prefer: the codings used, the preferred first: it breaks ties
        between codings the client weighs the same; a coding left out is
        never used.
    """

    types: tuple[str, ...] = field(default=DEFAULT_TYPES, converter=_types)
    min_length: int = field(default=MIN_LENGTH, validator=_check_min_length)
    levels: tuple[tuple[str, int], ...] = field(default=(), converter=_levels)
    prefer: tuple[str, ...] = field(
        default=DEFAULT_PREFER, converter=_names, validator=_check_prefer
    )

    def level(self, coding: str) -> int:
        """
        The level C{coding} is applied at.
        """
        return dict(self.levels)[coding]


def compress_settings(table: Mapping[str, Any], where: str) -> CompressSettings:
    """
    Check the TOML C{compress} value C{table} of a route
    (C{compress = { types = [...], min_length = 512, levels = { gzip = 6 },
    prefer = ["zstd", "br", "gzip"] }}, every key optional) and build its
    settings.

    @param where: the file and key path of C{table}, as messages begin
        (C{"rproxy.toml: listeners[0].routes[1].compress"}).
    @raise rproxy.config.ConfigError: listing every problem, each line
        C{"<where>.<key>: problem"} (the error is a C{ValueError} too).
    """
    # Imported here: rproxy.config imports the route model, which may come
    # to import this module.
    from rproxy.config._validate import Problems, Table, non_negative_int, one_of

    error = _settings_error()

    class _Under(Problems):
        def add(self, path: str, problem: str) -> None:
            self.lines.append(
                f"{where}.{path}: {problem}" if path else f"{where}: {problem}"
            )

    problems = _Under(where)
    read = Table.open(problems, "", table, ("types", "min_length", "levels", "prefer"))
    if read is None:
        problems.lines[:] = [
            f"{where}: must be a table, as compress = "
            '{ types = ["text/*", "application/json"], min_length = 512 }'
        ]
        raise error(problems.lines)
    types: tuple[str, ...] = DEFAULT_TYPES
    need = 'list the media types to compress, as types = ["text/*"]'
    if "types" in read and read.nonempty("types", list, need) is not None:
        types = read.array("types", media_range)
    min_length = read.get("min_length", non_negative_int, MIN_LENGTH)
    levels: dict[str, int] = {}
    if (level_table := read.table("levels", CODINGS)) is not None:
        for coding in CODINGS:
            level = level_table.get(coding, _level(coding), None)
            if level is not None:
                levels[coding] = level
    prefer: tuple[str, ...] = DEFAULT_PREFER
    need = "name the codings to use, as prefer = ['zstd', 'br', 'gzip']"
    if "prefer" in read and read.nonempty("prefer", list, need) is not None:
        prefer = read.array("prefer", one_of(CODINGS))
        if len(set(prefer)) != len(prefer):
            read.report("prefer", "names a coding more than once")
    if problems.lines:
        raise error(problems.lines)
    return CompressSettings(types, min_length, levels, prefer)


@functools.cache
def _settings_error() -> type[Exception]:
    """
    The error L{compress_settings} raises: a L{rproxy.config.ConfigError}
    that callers may also catch as a C{ValueError}, as they catch a bad
    value.
    """
    from rproxy.config import ConfigError

    class CompressSettingsError(ConfigError, ValueError):
        """Compression settings in a config file cannot be used."""

    return CompressSettingsError


class _Stream:
    """One response body being compressed."""

    __slots__ = ("encoder", "flush_each")

    def __init__(self, encoder: Encoder, flush_each: bool) -> None:
        self.encoder = encoder
        self.flush_each = flush_each


def _client_gone(exchange: Exchange) -> bool:
    """
    Whether the client connection of C{exchange} is closing or closed.  (Not
    the exchange's phase: a local answer, a cache hit say, is C{DONE} while
    its body still goes through the filters.)
    """
    transport = exchange.codec.transport
    return bool(
        transport is None
        or getattr(transport, "disconnecting", False)
        or getattr(transport, "disconnected", False)
    )


class Compress(HTTPFilter):
    """
    Compress response bodies (see the module docstring for which, and how).

    Two filters with equal settings are equal, so a reloaded route whose
    settings did not change compares equal to the one it replaces.
    """

    name = "compress"

    def __init__(self, settings: CompressSettings | None = None) -> None:
        self.settings = settings = (
            settings if settings is not None else CompressSettings()
        )
        self._types = MediaTypes(settings.types)
        self._levels = dict(settings.levels)
        self._prefer = settings.prefer
        self._min_length = settings.min_length
        # The exchange notes key of this filter's state: the coding chosen
        # (str) until the response head, then the response's _Stream.
        self._key = f"compress-{id(self):x}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compress):
            return NotImplemented
        return other.settings == self.settings

    def __hash__(self) -> int:
        return hash(self.settings)

    def __repr__(self) -> str:
        return f"Compress({self.settings!r})"

    def request_head(self, exchange: Exchange, head: RequestHead) -> None:
        if head.version < (1, 1):
            return
        accept = []
        for name, value in head.headers:
            lname = name.lower()
            if lname == b"accept-encoding":
                accept.append(value)
            elif lname == b"cache-control" and b"no-transform" in tokens(value):
                return
        coding = choose_coding(accept, self._prefer)
        if coding is not None:
            exchange.notes[self._key] = coding

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        notes = exchange.notes
        coding = notes.pop(self._key, None)
        status = head.status
        if (not 200 <= status < 300 and status != 304) or status in (204, 206):
            return
        headers = head.headers
        media_type, untouchable = scan_response(headers)
        if untouchable:
            return
        if status == 304:
            # Whatever the 200 would have said about the coding.
            if media_type is None or media_type in self._types:
                add_vary(headers)
                if coding is not None:
                    weaken_etag(headers)
            return
        if media_type is None or media_type not in self._types:
            return
        length = head.content_length
        if length is not None and length < self._min_length:
            return
        request = exchange.request
        head_only = request is not None and request.method == b"HEAD"
        if head.body == "none" and not head_only:
            return
        add_vary(headers)
        if coding is None or head_only:
            return
        kept = [one for one in headers if one[0].lower() not in _DROPPED]
        weaken_etag(kept)
        kept.append((b"Content-Encoding", coding.encode("ascii")))
        head.headers = kept
        head.content_length = None
        head.body = "close"
        encoder = new_encoder(coding, self._levels[coding])
        notes[self._key] = _Stream(encoder, media_type == _EVENT_STREAM)

    def response_body(self, exchange: Exchange, data: Data) -> Data | Deferred[Data]:
        stream: _Stream | None = exchange.notes.get(self._key)
        if stream is None:
            return data
        if len(data) > SLICE:
            return self._sliced(exchange, stream, memoryview(bytes(data)))
        out = stream.encoder.compress(data)
        if stream.flush_each:
            out += stream.encoder.flush()
        return out

    def _sliced(
        self, exchange: Exchange, stream: _Stream, data: memoryview
    ) -> Deferred[Data]:
        """
        Code C{data} one L{SLICE} per reactor turn; the Deferred fires with
        all it gave (never, if the client has gone meanwhile).
        """
        done: Deferred[Data] = Deferred()
        encoder = stream.encoder
        parts = [encoder.compress(data[:SLICE])]
        offset = SLICE

        def next_slice() -> None:
            nonlocal offset
            if _client_gone(exchange):
                return
            parts.append(encoder.compress(data[offset : offset + SLICE]))
            offset += SLICE
            if offset < len(data):
                exchange.clock.callLater(0, next_slice)
                return
            if stream.flush_each:
                parts.append(encoder.flush())
            done.callback(b"".join(parts))

        exchange.clock.callLater(0, next_slice)
        return done

    def response_end(
        self, exchange: Exchange, trailers: list[tuple[bytes, bytes]]
    ) -> Data:
        stream = exchange.notes.pop(self._key, None)
        if not isinstance(stream, _Stream):
            return b""
        if trailers:
            trailers[:] = [one for one in trailers if one[0].lower() not in DIGESTS]
        return stream.encoder.finish()
