"""Header rewriting, as filters: request fields set or removed before a
request goes upstream, response fields removed (the backend's C{Server},
say) and added where the backend sent none (C{HSTS}).  L{HeaderRules} is the
config's model of them; L{HeaderRules.filters} builds the filters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from attrs import field, frozen

from rproxy._fastwrite import Data
from rproxy.http.filters import HTTPFilter
from rproxy.http.framing import RequestHead, ResponseHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange
    from rproxy.interfaces import IHTTPFilter

__all__ = ["UNREWRITABLE", "HeaderRules", "RequestHeaders", "ResponseHeaders"]

#: fields no rule may set or remove: they frame the message, route it or
#: belong to one hop.
UNREWRITABLE = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"connection"}
    | {b"te", b"trailer", b"upgrade", b"keep-alive", b"proxy-connection"}
)

Fields = tuple[tuple[bytes, bytes], ...]


def _names(names: Iterable[bytes]) -> frozenset[bytes]:
    return frozenset(name.lower() for name in names)


class RequestHeaders(HTTPFilter):
    """
    Remove the request fields named in C{remove} (any case), then set each
    (name, value) of C{fields}, replacing any field of that name the client
    sent.
    """

    name = "request-headers"

    def __init__(self, fields: Fields = (), remove: Iterable[bytes] = ()) -> None:
        self.fields = tuple(fields)
        self.remove = _names(remove) | {name.lower() for name, _ in self.fields}

    def request_head(self, exchange: Exchange, head: RequestHead) -> None:
        remove = self.remove
        head.headers = [f for f in head.headers if f[0].lower() not in remove]
        head.headers.extend(self.fields)


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
        self.remove = _names(remove)
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


@frozen
class HeaderRules:
    """
    The header rewriting of a listener or a route, as configured.

    @ivar set_request: (name, value) fields that replace the client's.
    @ivar remove_request: lowercased names removed from requests.
    @ivar add_response: (name, value) fields added to responses without one.
    @ivar remove_response: lowercased names removed from responses.
    """

    set_request: Fields = ()
    remove_request: frozenset[bytes] = field(default=frozenset(), converter=_names)
    add_response: Fields = ()
    remove_response: frozenset[bytes] = field(default=frozenset(), converter=_names)

    def __bool__(self) -> bool:
        return bool(
            self.set_request
            or self.remove_request
            or self.add_response
            or self.remove_response
        )

    def filters(self) -> tuple[IHTTPFilter, ...]:
        """
        The filters that do what these rules say (none for no rules).
        """
        built: list[IHTTPFilter] = []
        if self.set_request or self.remove_request:
            built.append(RequestHeaders(self.set_request, self.remove_request))
        if self.add_response or self.remove_response:
            built.append(ResponseHeaders(self.remove_response, self.add_response))
        return tuple(built)
