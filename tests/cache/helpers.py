"""What the cache filter tests share: a harness with one cached route on a
clock set to a real date, and backend responses dated by that clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.task import Clock

from rproxy.cache.dates import format_date
from rproxy.cache.settings import CacheSettings
from rproxy.http.filters.cache import Cache, CacheFilter
from rproxy.http.routing import Route
from rproxy.testing import HTTPHarness
from tests.cache.fakes import FakeStore

#: when the tests' clocks start (HTTP dates need a real epoch time).
START = 1_700_000_000.0


class CachedRoute:
    """
    An HTTP harness whose one route is cached in C{cache} (on C{store}).
    """

    def __init__(
        self,
        settings: CacheSettings | None = None,
        store: FakeStore | None = None,
        filters: Sequence[Any] = (),
    ) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = store if store is not None else FakeStore()
        self.cache = Cache(
            "static", settings or CacheSettings(), self.store, self.clock
        )
        route = Route(pool="web", filters=[*filters, CacheFilter(self.cache)])
        self.harness = HTTPHarness([route], clock=self.clock)

    def response(
        self,
        body: bytes = b"hello",
        headers: Sequence[tuple[str, str]] = (("Cache-Control", "max-age=60"),),
        status: str = "200 OK",
        date: float | None = None,
        chunked: bool = False,
    ) -> bytes:
        """A backend response, C{Date}d now unless C{date} (or a Date) is given."""
        lines = [f"HTTP/1.1 {status}"]
        names = {n.lower() for n, _ in headers}
        if "date" not in names:
            when = self.clock.seconds() if date is None else date
            lines.append("Date: " + format_date(when).decode())
        lines.extend(f"{n}: {v}" for n, v in headers)
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            data = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            data = body
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + data

    @property
    def backend_requests(self) -> int:
        """How many requests reached a backend (one connection each at most)."""
        return sum(
            a.received.count(b" HTTP/1.1\r\n")
            for a in self.harness.endpoints.attempts
            if a.transport is not None
        )

    def close(self) -> None:
        self.harness.close()
