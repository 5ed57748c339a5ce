"""What the cache filter knows of one request: L{RequestState} (kept in
the exchange's notes, so it goes with the exchange), its cache directives
(L{request_directives}), and the L{Tee} that copies a response body into a
new stored response as it streams to the client."""

from __future__ import annotations

from attrs import define, field

from rproxy._fastwrite import Data
from rproxy.cache.answers import Answer
from rproxy.cache.coalescing import Fetch
from rproxy.cache.control import Directives, field_values, parse_cache_control
from rproxy.cache.entry import StoredResponse
from rproxy.cache.status import CacheStatus

__all__ = ["RequestState", "Tee", "request_directives"]

Fields = list[tuple[bytes, bytes]]


def request_directives(headers: Fields, names: frozenset[bytes]) -> Directives:
    """
    A request's cache directives (C{Pragma: no-cache} counts as
    C{Cache-Control: no-cache} where there is no C{Cache-Control}), given
    the lower-case C{names} of its fields.
    """
    if b"cache-control" in names:
        return parse_cache_control(field_values(headers, b"cache-control"))
    if b"pragma" in names and any(
        b"no-cache" in p.lower() for p in field_values(headers, b"pragma")
    ):
        return {b"no-cache": None}
    return {}


class Tee:
    """
    The body of a response being stored, copied as it passes, up to
    C{limit} bytes.

    @ivar entry: the stored response it becomes (its body not set yet).
    """

    __slots__ = ("_parts", "entry", "limit", "size")

    def __init__(self, entry: StoredResponse, limit: int) -> None:
        self.entry = entry
        self.limit = limit
        self.size = 0
        self._parts: list[bytes] = []

    def feed(self, data: Data) -> bool:
        """
        Copy C{data}; C{False} when the body has grown past the limit (the
        copy is dropped).
        """
        self.size += len(data)
        if self.size > self.limit:
            self._parts = []
            return False
        self._parts.append(bytes(data))
        return True

    def finish(self, trailers: Fields) -> StoredResponse:
        """The stored response, with the whole body and C{trailers}."""
        body = b"".join(self._parts)
        self._parts = []
        entry = self.entry
        entry.body, entry.length, entry.trailers = body, len(body), list(trailers)
        return entry


@define(slots=True, weakref_slot=True)
class RequestState:
    """
    What the cache filter knows of one request.

    @ivar key: its primary cache key.
    @ivar client_headers: its fields as the client sent them (the fields
        sent upstream may differ: validators replaced).
    @ivar names: the lower-case names of those fields.
    @ivar request_time: when the cache's request went upstream.
    @ivar status: this cache's C{Cache-Status} member for the response.
    @ivar unsafe: an unsafe method: a non-error response invalidates.
    @ivar background: a background refresh (no client).
    @ivar store: a GET the cache fetches to store its response.
    @ivar revalidating: the request upstream carries the stored validators.
    @ivar check_client: the client's own validators were left out upstream
        (its preconditions are evaluated on the response).
    @ivar stale: the stored response being revalidated, or the one that
        may be served in place of a backend's failure.
    @ivar fetch: the coalesced fetch this request leads.
    @ivar tee: the copy of a response body being stored.
    @ivar replace: what is sent in place of the backend's body: the answer
        and the stored response it is cut from.
    """

    key: bytes
    method: bytes
    client_headers: Fields
    names: frozenset[bytes]
    request_time: float
    directives: Directives = field(factory=dict)
    status: CacheStatus = field(factory=CacheStatus)
    unsafe: bool = False
    background: bool = False
    store: bool = False
    revalidating: bool = False
    check_client: bool = False
    stale: StoredResponse | None = None
    fetch: Fetch | None = None
    tee: Tee | None = None
    replace: tuple[Answer, StoredResponse] | None = None
