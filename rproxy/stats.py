"""Traffic counters kept on the hot path: responses by status class, an
upstream-latency histogram, and a listener's totals.

Everything here is a few integer additions per request or connection; the
admin interface (L{rproxy.admin}) reads the counters when asked.  Counters
only grow, and live on objects that a config reload keeps (a L{Backend}, a
listener's factory), so they survive it.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = [
    "LATENCY_BUCKETS",
    "NO_RESPONSE",
    "REFUSALS",
    "STATUS_CLASSES",
    "LatencyHistogram",
    "ListenerStats",
    "status_class",
]

#: the labels of L{status_class}'s indexes: a status class, or C{none} for
#: an exchange that got no response (the client left first, no backend
#: answered).
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
#: the index of C{none} in L{STATUS_CLASSES}.
NO_RESPONSE = 5

#: why a listener refused a connection at accept (see
#: L{rproxy.admission.gate.REASONS}), or C{route_denied}: a request a
#: route's address lists answered 403.
REFUSALS = ("full", "per_ip", "rate", "denied", "route_denied")

#: upper bounds, in seconds, of the upstream-latency histogram's buckets
#: (Prometheus' own defaults); one more bucket holds everything slower.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def status_class(status: int | str) -> int:
    """
    The index in L{STATUS_CLASSES} of an exchange's C{status}: an HTTP
    status code, or C{"-"} (or anything else) when there was none.
    """
    if type(status) is int and 100 <= status < 600:
        return status // 100 - 1
    return NO_RESPONSE


def new_class_counts() -> list[int]:
    """
    A zero count per entry of L{STATUS_CLASSES}.
    """
    return [0] * len(STATUS_CLASSES)


class LatencyHistogram:
    """
    How long backends took to start answering, in the fixed
    L{LATENCY_BUCKETS}.

    L{observe} adds one to a single bucket (found by bisection); the
    cumulative counts Prometheus wants are worked out when read.

    @ivar counts: per bucket, the observations above the previous bound and
        at most this one; the last entry counts those above every bound.
    @ivar sum: the total of every observation, in seconds.
    """

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """
        Count one observation of C{seconds}.
        """
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        """
        How many observations there were.
        """
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """
        (upper bound, observations at most that) per bucket, ending with
        (infinity, all of them).
        """
        result = []
        running = 0
        bounds = (*LATENCY_BUCKETS, float("inf"))
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


class ListenerStats:
    """
    One listener's counters, held by its factory.

    Connections are counted as they close (C{connections_closed}); those
    still open are the factory's connection tracker, so the total accepted
    is the sum of the two.  Bytes are counted as each HTTP exchange or TCP
    connection ends.

    @ivar requests: HTTP requests answered, per L{STATUS_CLASSES} entry
        (what the client was sent; C{none} when it was sent nothing).
    @ivar bytes_in: body (HTTP) or stream (TCP) bytes from clients.
    @ivar bytes_out: body or stream bytes to clients.
    @ivar request_body_timeouts: HTTP requests answered 408 because the
        client left too long between two reads of its body.
    @ivar request_body_too_slow: HTTP requests answered 408 because the body
        came more slowly than the listener's minimum rate.
    @ivar refused: refusals by kind, per L{REFUSALS} entry.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections_closed",
        "refused",
        "request_body_timeouts",
        "request_body_too_slow",
        "requests",
    )

    def __init__(self) -> None:
        self.connections_closed = 0
        self.requests = new_class_counts()
        self.bytes_in = 0
        self.bytes_out = 0
        self.request_body_timeouts = 0
        self.request_body_too_slow = 0
        self.refused = dict.fromkeys(REFUSALS, 0)

    def connection_ended(self, bytes_in: int, bytes_out: int) -> None:
        """
        A TCP connection has ended having moved these bytes.
        """
        self.connections_closed += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
