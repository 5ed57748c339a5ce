"""Response header rewriting, as a filter: fields removed (the backend's
C{Server}, say) and fields added where the backend sent none (C{HSTS})."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rproxy._fastwrite import Data
from rproxy.http.filters import HTTPFilter
from rproxy.http.framing import ResponseHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["ResponseHeaders"]


class ResponseHeaders(HTTPFilter):
    """
    Remove the fields named in C{remove} (any case) from responses, their
    trailers and 101 heads, and add each (name, value) of C{add} to
    responses that have no field of that name.
    """

    name = "response-headers"

    def __init__(
        self,
        remove: Iterable[bytes] = (),
        add: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        self.remove = frozenset(name.lower() for name in remove)
        self.add = tuple(add)

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        remove = self.remove
        headers = head.headers
        if remove:
            headers = head.headers = [
                field for field in headers if field[0].lower() not in remove
            ]
        if self.add and head.status != 101:
            present = {name.lower() for name, _ in headers}
            for name, value in self.add:
                if name.lower() not in present:
                    headers.append((name, value))

    def response_end(
        self, exchange: Exchange, trailers: list[tuple[bytes, bytes]]
    ) -> Data:
        if self.remove and trailers:
            trailers[:] = [t for t in trailers if t[0].lower() not in self.remove]
        return b""
