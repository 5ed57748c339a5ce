"""What a pool asks of every connection and request sent to it: one frozen
L{PoolPolicy} per pool (with its L{OutlierPolicy}), held by the
L{rproxy.backends.Pool} and replaced whole by a reload.  HTTP, TCP and SNI
fronts read it from the pool; nobody copies it."""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = ["CLIENT_IP", "HashKey", "OutlierPolicy", "PoolPolicy"]


@frozen
class HashKey:
    """
    What a hashing balancer hashes, parsed once from C{hash_key}.

    @ivar header: the lowercased name of the request header to hash, or
        C{None} to hash the client's IP address.
    """

    header: bytes | None = None

    @classmethod
    def parse(cls, text: str) -> HashKey:
        """
        C{"client_ip"} or C{"header:NAME"} as written in the config.

        @raise ValueError: for anything else.
        """
        if text == "client_ip":
            return CLIENT_IP
        kind, sep, name = text.partition(":")
        if kind != "header" or not sep or not name:
            raise ValueError(f"expected 'client_ip' or 'header:NAME', got {text!r}")
        return cls(name.lower().encode("ascii"))

    def __str__(self) -> str:
        return "client_ip" if self.header is None else f"header:{self.header.decode()}"


#: hash on the client's IP address (the default).
CLIENT_IP = HashKey()

_fraction = [validators.ge(0.0), validators.le(1.0)]


@frozen
class OutlierPolicy:
    """
    When a backend answering too many 5xx responses is ejected: taken out of
    balancing for a while, whatever its health (L{rproxy.outlier}).

    @ivar consecutive_5xx: eject after this many 5xx responses in a row
        (0: never for a run).
    @ivar rate_5xx: eject when more than this share of the responses of one
        window are 5xx (C{None}: never for a rate).
    @ivar min_requests: a window with fewer responses is not judged.
    @ivar interval: the shortest window, in seconds; also how long a backend
        must go unejected for its next ejection to be one step shorter.
    @ivar base_ejection: how long, in seconds, a first ejection lasts; the
        n-th one in a row lasts n times that.
    @ivar max_ejection_time: the longest an ejection lasts, in seconds.
    @ivar max_ejection: at most this share of the pool's backends is
        ejected at once (rounded down); one is never ejected when no other
        backend of the pool would be left to take traffic.
    """

    consecutive_5xx: int = field(default=5, validator=validators.ge(0))
    rate_5xx: float | None = field(
        default=None, validator=validators.optional(_fraction)
    )
    min_requests: int = field(default=20, validator=validators.ge(1))
    interval: float = field(default=10.0, validator=validators.gt(0.0))
    base_ejection: float = field(default=30.0, validator=validators.gt(0.0))
    max_ejection_time: float = field(default=300.0, validator=validators.gt(0.0))
    max_ejection: float = field(default=0.5, validator=_fraction)


@frozen
class PoolPolicy:
    """
    One pool's settings for the traffic sent to it.

    @ivar connect_timeout: seconds for a backend to accept a connection.
    @ivar response_timeout: seconds an HTTP exchange may go without a byte
        moving while its response is awaited or relayed (else 504, or the
        response is cut).
    @ivar idle_timeout: seconds a TCP connection pair may stay silent.
    @ivar connect_tries: backends tried per connection or request.
    @ivar keep_alive_max_idle: idle HTTP connections kept per backend.
    @ivar keep_alive_timeout: seconds an idle HTTP connection is kept.
    @ivar send_proxy: the PROXY protocol version (C{"v1"}, C{"v2"}) every
        backend connection starts with, or C{None}.
    @ivar hash_key: what C{balance = "hash"} hashes.
    @ivar panic_threshold: passive health never takes a backend out when
        fewer than this fraction of the pool's enabled, non-backup backends
        would be left up (0.5: a lone backend always stays, one of two may
        go); 0 disables the guard, 1 keeps every backend in.  Active checks
        ignore it.
    @ivar queue_max: requests (or TCP connections) that may wait in the
        pool's queue while every backend is at its C{max_connections}; one
        more is refused at once (503).  0: no queue.
    @ivar queue_timeout: seconds one may wait there before it is refused
        (503).
    @ivar slow_start: seconds over which a backend that comes back (up
        again, enabled, or back from an ejection) ramps from a hundredth of
        its weight to all of it; 0: at once.
    @ivar retry_budget: the share of the pool's requests in flight that may
        be retries (to another backend after a failure) at once, with at
        least C{min_retries} allowed; past it a failure goes to the client.
        C{None}: no budget, every attempt has its C{connect_tries}.
    @ivar min_retries: the retries the budget always allows at once.
    @ivar outlier: when backends answering 5xx are ejected, or C{None}.
    """

    connect_timeout: float = field(default=5.0, validator=validators.gt(0.0))
    response_timeout: float = field(default=60.0, validator=validators.gt(0.0))
    idle_timeout: float = field(default=300.0, validator=validators.gt(0.0))
    connect_tries: int = field(default=3, validator=validators.ge(1))
    keep_alive_max_idle: int = field(default=256, validator=validators.ge(0))
    keep_alive_timeout: float = field(default=30.0, validator=validators.gt(0.0))
    send_proxy: str | None = None
    hash_key: HashKey = CLIENT_IP
    panic_threshold: float = field(default=0.5, validator=_fraction)
    queue_max: int = field(default=128, validator=validators.ge(0))
    queue_timeout: float = field(default=5.0, validator=validators.gt(0.0))
    slow_start: float = field(default=0.0, validator=validators.ge(0.0))
    retry_budget: float | None = field(
        default=None, validator=validators.optional(_fraction)
    )
    min_retries: int = field(default=3, validator=validators.ge(0))
    outlier: OutlierPolicy | None = None
