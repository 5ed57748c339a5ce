"""What a pool asks of every connection and request sent to it: one frozen
L{PoolPolicy} per pool, held by the L{rproxy.backends.Pool} and replaced
whole by a reload.  HTTP, TCP and SNI fronts read it from the pool; nobody
copies it."""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = ["CLIENT_IP", "HashKey", "PoolPolicy"]


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
    """

    connect_timeout: float = field(default=5.0, validator=validators.gt(0.0))
    response_timeout: float = field(default=60.0, validator=validators.gt(0.0))
    idle_timeout: float = field(default=300.0, validator=validators.gt(0.0))
    connect_tries: int = field(default=3, validator=validators.ge(1))
    keep_alive_max_idle: int = field(default=256, validator=validators.ge(0))
    keep_alive_timeout: float = field(default=30.0, validator=validators.gt(0.0))
    send_proxy: str | None = None
    hash_key: HashKey = CLIENT_IP
    panic_threshold: float = field(
        default=0.5, validator=[validators.ge(0.0), validators.le(1.0)]
    )
