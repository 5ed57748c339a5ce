"""Backend connections driven by hand: the keep-alive pool on a Clock, and the
response parser reporting to a recording sink."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rproxy.backends import Backend
from rproxy.http.framing import ResponseHead
from rproxy.http.keepalive import KeepAlivePool
from rproxy.http.upstream import MAX_INTERIM, UpstreamProtocol
from rproxy.testing import HalfCloseTransport, connect

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def upstream(
    backend: Backend | None = None, reusable: bool = True
) -> tuple[UpstreamProtocol, HalfCloseTransport]:
    """
    A connected upstream protocol (reusable unless told otherwise) and its
    transport.
    """
    proto = UpstreamProtocol(backend or Backend("127.0.0.1", 8001))
    transport = connect(proto, HalfCloseTransport("127.0.0.1", 8001))
    proto.reusable = reusable
    return proto, transport


def closed(transport: HalfCloseTransport) -> bool:
    """
    Whether the connection was closed (a call, so that type checkers do not
    take the attribute for a constant between assertions).
    """
    return bool(transport.disconnecting)


class RecordingSink:
    """An L{IResponseSink} that records every call in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        """The names of the calls so far."""
        return [call[0] for call in self.calls]

    def body(self) -> bytes:
        """All body bytes reported."""
        return b"".join(c[1] for c in self.calls if c[0] == "response_body")

    def response_head(self, head: ResponseHead) -> None:
        self.calls.append(("response_head", head))

    def interim_response(self, head: ResponseHead) -> None:
        self.calls.append(("interim_response", head))

    def response_body(self, data: bytes | memoryview) -> None:
        self.calls.append(("response_body", bytes(data)))

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("response_trailers", headers))

    def response_end(self) -> None:
        self.calls.append(("response_end",))

    def flush_output(self) -> None:
        self.calls.append(("flush_output",))

    def upstream_failed(self, reason: str, status: int) -> None:
        self.calls.append(("upstream_failed", reason, status))

    def switched(self, head: ResponseHead, rest: bytes) -> None:
        self.calls.append(("switched", head, bytes(rest)))

    def tunnel_data(self, data: bytes) -> None:
        self.calls.append(("tunnel_data", bytes(data)))

    def tunnel_closed(self) -> None:
        self.calls.append(("tunnel_closed",))


def requested(
    method: bytes = b"GET", upgrade: bool = False
) -> tuple[UpstreamProtocol, HalfCloseTransport, RecordingSink]:
    """
    A connected upstream waiting for the response to a C{method} request.
    """
    proto, transport = upstream(reusable=False)
    sink = RecordingSink()
    proto.start(sink, method, upgrade=upgrade)
    return proto, transport, sink


# KeepAlivePool


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(clock: Clock) -> Iterator[KeepAlivePool]:
    pool = KeepAlivePool(clock, max_idle=4, idle_timeout=30.0)
    yield pool
    pool.close_all()
    assert clock.getDelayedCalls() == []


@pytest.fixture
def backend() -> Backend:
    return Backend("127.0.0.1", 8001)


def test_take_returns_the_most_recently_put_first(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """Idle connections come back last in, first out."""
    first, _ = upstream(backend)
    second, _ = upstream(backend)
    pool.put(first)
    pool.put(second)
    assert pool.take(backend) is second
    assert pool.take(backend) is first
    assert pool.take(backend) is None


def test_take_from_an_empty_pool_is_none(pool: KeepAlivePool, backend: Backend) -> None:
    """A backend with nothing idle gets None."""
    assert pool.take(backend) is None
    assert pool.idle_count(backend) == 0


def test_take_skips_disconnected_connections(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """A connection no longer connected is dropped, and the next one given;
    None when only disconnected ones remain."""
    older, _ = upstream(backend)
    newer, _ = upstream(backend)
    pool.put(older)
    pool.put(newer)
    newer.connected_ = False
    assert pool.take(backend) is older
    pool.put(older)
    older.connected_ = False
    assert pool.take(backend) is None
    assert pool.idle_count(backend) == 0


def test_put_closes_a_connection_that_is_not_reusable(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """A connection whose response did not end cleanly is closed, not kept."""
    proto, transport = upstream(backend, reusable=False)
    pool.put(proto)
    assert closed(transport)
    assert pool.idle_count(backend) == 0


def test_put_closes_a_connection_that_is_not_connected(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """A connection already lost is not kept."""
    proto, transport = upstream(backend)
    proto.connected_ = False
    pool.put(proto)
    assert closed(transport)
    assert pool.idle_count(backend) == 0


def test_put_closes_a_connection_beyond_max_idle(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """With max_idle idle already, a further connection is closed."""
    kept = [upstream(backend) for _ in range(4)]
    for proto, _ in kept:
        pool.put(proto)
    extra, transport = upstream(backend)
    pool.put(extra)
    assert closed(transport)
    assert pool.idle_count(backend) == 4
    assert not any(closed(t) for _, t in kept)


def test_max_idle_is_per_backend(pool: KeepAlivePool) -> None:
    """One backend's idle connections leave room for another's."""
    one, two = Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)
    for _ in range(4):
        pool.put(upstream(one)[0])
    proto, transport = upstream(two)
    pool.put(proto)
    assert not closed(transport)
    assert (pool.idle_count(one), pool.idle_count(two)) == (4, 1)


def test_put_max_idle_argument_overrides_the_default(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """max_idle given to put() replaces the pool's, smaller or larger."""
    first, _ = upstream(backend)
    second, transport = upstream(backend)
    pool.put(first, max_idle=1)
    pool.put(second, max_idle=1)
    assert closed(transport)
    for _ in range(4):
        pool.put(upstream(backend)[0], max_idle=6)
    assert pool.idle_count(backend) == 5


def test_put_idle_timeout_argument_overrides_the_default(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """idle_timeout given to put() replaces the pool's."""
    proto, transport = upstream(backend)
    pool.put(proto, idle_timeout=5.0)
    clock.advance(4.5)
    assert not closed(transport)
    clock.advance(0.5)
    assert closed(transport)
    assert pool.idle_count(backend) == 0


def test_fresh_within_refuses_a_connection_idle_that_long(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """A connection idle for fresh_within seconds is not given out, but is
    kept for a request that does not care."""
    proto, transport = upstream(backend)
    pool.put(proto)
    clock.advance(2.0)
    assert pool.take(backend, fresh_within=2.0) is None
    assert pool.idle_count(backend) == 1
    assert not closed(transport)
    assert pool.take(backend) is proto


def test_fresh_within_gives_a_connection_idle_less_than_that(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """A connection idle for less than fresh_within seconds is given out."""
    proto, _ = upstream(backend)
    pool.put(proto)
    clock.advance(1.5)
    assert pool.take(backend, fresh_within=2.0) is proto


def test_idle_connection_closes_exactly_at_idle_timeout(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """An idle connection is kept until idle_timeout has passed, then closed."""
    proto, transport = upstream(backend)
    pool.put(proto)
    clock.advance(29.5)
    assert not closed(transport)
    assert pool.idle_count(backend) == 1
    clock.advance(0.5)
    assert closed(transport)
    assert pool.idle_count(backend) == 0
    assert clock.getDelayedCalls() == []


def test_connections_expire_at_their_own_times(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """Connections put back at different times are closed at different
    times."""
    early, early_transport = upstream(backend)
    late, late_transport = upstream(backend)
    pool.put(early)
    clock.advance(10)
    pool.put(late)
    clock.advance(20)
    assert closed(early_transport)
    assert not closed(late_transport)
    assert pool.idle_count(backend) == 1
    clock.advance(9.5)
    assert not closed(late_transport)
    clock.advance(0.5)
    assert closed(late_transport)
    assert pool.idle_count(backend) == 0
    assert clock.getDelayedCalls() == []


def test_one_timer_for_the_whole_pool(clock: Clock, pool: KeepAlivePool) -> None:
    """However many connections are idle, on however many backends, at most
    one delayed call is pending."""
    backends = [Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)]
    for step in range(6):
        pool.put(upstream(backends[step % 2])[0])
        clock.advance(1)
        assert len(clock.getDelayedCalls()) == 1
    clock.advance(25)  # the first expired, the rest still idle
    assert len(clock.getDelayedCalls()) == 1


def test_no_timer_left_once_everything_was_taken(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """A sweep that finds nothing to expire does not schedule another, and
    does not close a connection that was taken."""
    proto, transport = upstream(backend)
    pool.put(proto)
    assert pool.take(backend) is proto
    clock.advance(30)
    assert clock.getDelayedCalls() == []
    assert not closed(transport)


def test_shorter_idle_timeout_brings_the_sweep_forward(
    clock: Clock, pool: KeepAlivePool
) -> None:
    """A put() with a shorter idle_timeout than the pending sweep's makes it
    fire at the new, earlier time."""
    one, two = Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)
    slow, slow_transport = upstream(one)
    quick, quick_transport = upstream(two)
    pool.put(slow)
    pool.put(quick, idle_timeout=5.0)
    [sweep] = clock.getDelayedCalls()
    assert sweep.getTime() == 5.0
    clock.advance(5)
    assert closed(quick_transport)
    assert not closed(slow_transport)
    [sweep] = clock.getDelayedCalls()
    assert sweep.getTime() == 30.0


def test_shorter_idle_timeout_on_the_same_backend_expires_on_time(
    clock: Clock, pool: KeepAlivePool, backend: Backend
) -> None:
    """put(idle_timeout=) applies to that connection even when an older idle
    connection of the same backend has a longer timeout."""
    slow, _ = upstream(backend)
    quick, quick_transport = upstream(backend)
    pool.put(slow)
    clock.advance(1)
    pool.put(quick, idle_timeout=5.0)
    clock.advance(5)
    assert closed(quick_transport)
    assert pool.idle_count(backend) == 1


def test_connection_lost_while_idle_leaves_the_pool(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """A backend closing an idle connection removes it from the pool."""
    older, _ = upstream(backend)
    newer, newer_transport = upstream(backend)
    pool.put(older)
    pool.put(newer)
    newer_transport.finish(Failure(ConnectionDone()))
    assert pool.idle_count(backend) == 1
    assert pool.take(backend) is older
    assert pool.take(backend) is None


def test_stray_bytes_on_an_idle_connection_take_it_out_of_the_pool(
    pool: KeepAlivePool, backend: Backend
) -> None:
    """An idle connection that receives bytes nobody asked for is closed and
    never handed out again, even before its connectionLost arrives."""
    older, _ = upstream(backend)
    pool.put(older)
    talker = UpstreamProtocol(backend)
    # A StringTransport: loseConnection does not call connectionLost, as a
    # real socket's does only on a later reactor turn.
    talker_transport = StringTransport()
    talker.makeConnection(talker_transport)
    talker.reusable = True
    pool.put(talker)
    talker.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
    assert talker_transport.disconnecting
    assert pool.idle_count(backend) == 1
    assert pool.take(backend) is older
    assert pool.take(backend) is None
    talker.connectionLost(Failure(ConnectionDone()))
    assert pool.idle_count(backend) == 0


def test_close_all_closes_idle_connections_and_cancels_the_timer(
    clock: Clock, pool: KeepAlivePool
) -> None:
    """On shutdown every idle connection is closed and no timer remains."""
    one, two = Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002)
    transports = []
    for b in (one, one, two):
        proto, transport = upstream(b)
        pool.put(proto)
        transports.append(transport)
    pool.close_all()
    assert all(closed(t) for t in transports)
    assert (pool.idle_count(one), pool.idle_count(two)) == (0, 0)
    assert clock.getDelayedCalls() == []


# UpstreamProtocol


def test_content_length_body_across_reads() -> None:
    """A Content-Length body split over reads is reported piece by piece and
    ends exactly at its length, leaving a reusable connection."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-")
    proto.dataReceived(b"Length: 10\r\n\r\nhel")
    proto.dataReceived(b"lo wo")
    assert "response_end" not in sink.names()
    proto.dataReceived(b"rl")
    [head] = [c[1] for c in sink.calls if c[0] == "response_head"]
    assert (head.status, head.content_length) == (200, 10)
    pieces = [c[1] for c in sink.calls if c[0] == "response_body"]
    assert pieces == [b"hel", b"lo wo", b"rl"]
    assert sink.names()[-1] == "response_end"
    assert proto.reusable
    assert not closed(transport)


def test_chunked_body_with_trailers() -> None:
    """A chunked body is decoded and its trailers reported before the end."""
    proto, _, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe")
    proto.dataReceived(b"llo\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")
    assert sink.body() == b"hello world"
    assert [c for c in sink.calls if c[0] != "response_body"][-3:] == [
        ("flush_output",),
        ("response_trailers", [(b"X-Sum", b"1")]),
        ("response_end",),
    ]
    assert proto.reusable


def test_response_to_head_has_no_body() -> None:
    """A response to HEAD ends with its head, whatever Content-Length says."""
    proto, _, sink = requested(method=b"HEAD")
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert sink.names() == ["response_head", "response_end"]
    assert proto.reusable


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_end_with_the_head(status: int) -> None:
    """204 and 304 responses have no body."""
    proto, _, sink = requested()
    proto.dataReceived(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert sink.names() == ["response_head", "response_end"]
    assert proto.reusable


def test_close_delimited_body_ends_when_the_backend_closes() -> None:
    """A body without framing ends at a clean close; the connection is not
    reusable."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome")
    proto.dataReceived(b" body")
    transport.finish(Failure(ConnectionDone()))
    assert sink.body() == b"some body"
    assert sink.names()[-1] == "response_end"
    assert "upstream_failed" not in sink.names()
    assert not proto.reusable


def test_close_delimited_body_cut_by_an_error_fails() -> None:
    """A close-delimited body ended by a broken connection is a failure."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome")
    transport.finish(Failure(ConnectionLost()))
    assert sink.calls[-1] == ("upstream_failed", "backend closed the connection", 502)
    assert "response_end" not in sink.names()


def test_100_continue_then_the_final_response() -> None:
    """An interim response is reported, then the final one."""
    proto, _, sink = requested()
    proto.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
    proto.dataReceived(OK_EMPTY)
    names = [n for n in sink.names() if n != "flush_output"]
    assert names == ["interim_response", "response_head", "response_end"]
    assert sink.calls[0][1].status == 100
    assert proto.reusable


def test_too_many_interim_responses_is_502() -> None:
    """More than MAX_INTERIM interim responses fail the exchange with 502."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 103 Early Hints\r\n\r\n" * (MAX_INTERIM + 1))
    assert sink.names().count("interim_response") == MAX_INTERIM
    assert sink.calls[-1] == (
        "upstream_failed",
        "bad response: too many interim responses",
        502,
    )
    assert transport.aborted


def test_unrequested_101_is_502() -> None:
    """A 101 to a request that did not ask to upgrade is a bad gateway."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    assert sink.names() == ["upstream_failed"]
    assert sink.calls[0][2] == 502
    assert transport.aborted
    assert not proto.tunnel


def test_101_on_upgrade_switches_with_the_bytes_after_the_head() -> None:
    """An accepted upgrade hands over the head and what followed it, then
    relays raw bytes until the backend closes."""
    proto, transport, sink = requested(upgrade=True)
    proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nhi")
    proto.dataReceived(b"HTTP/1.1 200 raw")
    transport.finish(Failure(ConnectionDone()))
    (_, head, rest), *after = sink.calls
    assert (head.status, rest) == (101, b"hi")
    assert after == [
        ("flush_output",),
        ("tunnel_data", b"HTTP/1.1 200 raw"),
        ("tunnel_closed",),
    ]


def test_garbage_status_line_is_502_and_aborts() -> None:
    """A response that is not HTTP fails with 502 and the connection is
    aborted, reported once."""
    proto, transport, sink = requested()
    proto.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert sink.calls == [("upstream_failed", "bad response: invalid status line", 502)]
    assert transport.aborted
    assert not proto.reusable


def test_oversized_response_head_is_502() -> None:
    """A head that never ends within the limit fails with 502."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 12000)
    assert sink.names() == ["upstream_failed"]
    assert sink.calls[0][2] == 502
    assert transport.aborted


def test_bad_chunk_is_502() -> None:
    """A malformed chunk size fails the response with 502."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert sink.names() == ["response_head", "upstream_failed"]
    assert sink.calls[-1][2] == 502
    assert transport.aborted


def test_bytes_after_the_response_close_the_connection() -> None:
    """Anything after a complete response makes the connection unusable."""
    proto, transport, sink = requested()
    proto.dataReceived(OK_EMPTY + b"HTTP/1.1 200 OK\r\n")
    assert sink.names() == ["response_head", "response_end"]
    assert not proto.reusable
    assert closed(transport)


def test_bytes_after_a_chunked_response_close_the_connection() -> None:
    """Bytes after the last chunk make the connection unusable."""
    proto, transport, sink = requested()
    proto.dataReceived(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra"
    )
    assert sink.names()[-1] == "response_end"
    assert not proto.reusable
    assert closed(transport)


def test_next_request_started_from_response_end_gets_a_fresh_parse() -> None:
    """A sink that sends its next request on the same connection from
    response_end (the front protocol answering a pipelined request) gets
    that response parsed from its own first byte, not from the middle of
    the one just ended."""
    proto, _, _ = requested()

    class Pipelining(RecordingSink):
        def response_end(self) -> None:
            super().response_end()
            if self.names().count("response_end") == 1:
                proto.start(self, b"GET")

    sink = Pipelining()
    proto.start(sink, b"GET")
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    proto.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\ntwo")
    heads = [c[1].status for c in sink.calls if c[0] == "response_head"]
    assert heads == [200, 201]
    assert sink.body() == b"onetwo"
    assert "upstream_failed" not in sink.names()
    assert sink.names().count("response_end") == 2


def test_connection_close_from_the_backend_is_not_reusable() -> None:
    """A backend that says Connection: close is not sent another request."""
    proto, _, sink = requested()
    proto.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    assert sink.names()[-1] == "response_end"
    assert not proto.reusable


def test_http_10_response_without_keep_alive_is_not_reusable() -> None:
    """An HTTP/1.0 backend closes after the response unless it says
    otherwise."""
    proto, _, _ = requested()
    proto.dataReceived(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not proto.reusable


def test_clean_keep_alive_response_is_reusable_for_the_next_request() -> None:
    """A response that ends where its framing says leaves the connection open
    for another request, whose response is parsed afresh."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert proto.reusable
    assert not closed(transport)
    second = RecordingSink()
    proto.start(second, b"GET")
    assert (proto.reusable, proto.received_any) == (False, False)
    proto.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx")
    assert second.calls[0][1].status == 404
    assert second.body() == b"x"
    assert proto.reusable
    assert sink.names().count("response_end") == 1


def test_bytes_with_no_request_outstanding_close_the_connection() -> None:
    """A backend talking when nothing was asked is closed."""
    proto, transport = upstream(reusable=False)
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
    assert closed(transport)


def test_connection_lost_before_the_head_fails_502() -> None:
    """A backend closing before any answer fails the exchange with 502."""
    _, transport, sink = requested()
    transport.finish(Failure(ConnectionDone()))
    assert sink.calls == [("upstream_failed", "backend closed the connection", 502)]


def test_connection_lost_mid_body_fails_502() -> None:
    """A backend closing inside a Content-Length body fails the exchange."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    transport.finish(Failure(ConnectionDone()))
    assert sink.calls[-1] == ("upstream_failed", "backend closed the connection", 502)
    assert "response_end" not in sink.names()
    assert not proto.reusable


def test_flush_output_once_per_read_while_a_response_is_in_progress() -> None:
    """Each read that leaves the response unfinished is followed by exactly
    one flush_output, after what it produced."""
    proto, _, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\n")
    proto.dataReceived(b"Content-Length: 6\r\n\r\nab")
    proto.dataReceived(b"cd")
    assert sink.names() == [
        "flush_output",
        "response_head",
        "response_body",
        "flush_output",
        "response_body",
        "flush_output",
    ]


def test_nothing_is_reported_after_response_end() -> None:
    """The read that ends a response reports nothing after response_end."""
    proto, _, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert sink.names() == ["response_head", "response_body", "response_end"]


def test_received_any_tracks_the_current_response() -> None:
    """received_any is set by the first byte and cleared by the next start."""
    proto, _, _ = requested()
    seen = [proto.received_any]
    proto.dataReceived(b"H")
    seen.append(proto.received_any)
    proto.start(RecordingSink(), b"GET")
    seen.append(proto.received_any)
    assert seen == [False, True, False]


def test_release_timeout_aborts_without_a_report() -> None:
    """A timed-out response drops the connection and tells the sink
    nothing."""
    proto, transport, sink = requested()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nx")
    del sink.calls[:]
    proto.release_timeout()
    assert transport.aborted
    assert sink.calls == []
    assert not proto.reusable
