"""Backends, pools and the registry: membership, state, weights, live counters.

This is the one shared model both front protocols read.  Protocols never keep
their own list of backends: they ask a L{Pool} for one (L{Pool.pick}) and
report what happened back to it (L{Pool.acquire}, L{Pool.release},
L{Pool.report_failure}, L{Pool.report_success}).  Health checks report through
L{Pool.record_check}.  Nothing here does I/O or schedules anything.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from enum import Enum

from attrs import define, field, setters, validators
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from rproxy.interfaces import IBalancer, IRegistry
from rproxy.stats import LatencyHistogram, new_class_counts

log = Logger(namespace="rproxy.backends")


class BackendState(Enum):
    """
    What a backend is to new traffic.

    Health decides between C{UP} and C{DOWN}; an operator's drain or disable
    takes precedence over health.
    """

    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    DISABLED = "disabled"


class AdminState(Enum):
    """
    What an operator has asked of a backend, whatever its health.
    """

    ENABLED = "enabled"
    DRAINING = "draining"
    DISABLED = "disabled"


def parse_address(address: str) -> tuple[str, int]:
    """
    Split C{host:port} (IPv6 as C{[::1]:port}) into a host and a port.

    @raise ValueError: with a message fit for a config error.
    """
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {address!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected 'host:port', got {address!r}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address as '[{host}]:port'")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """
    The inverse of L{parse_address}.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Validators run when a backend is built; assignments (counters change on every
# chunk relayed) are plain attribute writes.
@define(eq=False, on_setattr=setters.NO_OP)
class Backend:
    """
    One server behind a pool, with its live state and counters.

    Construct with L{Backend.from_address} or directly with a host and port.
    Counters only grow; C{active} is the number of connections open now (for
    HTTP, the requests in flight: an idle kept-alive connection holds none).
    C{bytes_in} and C{bytes_out} count bytes to and from it.
    """

    host: str
    port: int
    name: str = ""
    #: change a live backend's weight with L{Pool.set_weight}, which tells
    #: the balancer.
    weight: int = field(default=1, validator=validators.ge(1))
    max_connections: int | None = None
    backup: bool = False
    #: how to speak TLS to it (a Twisted client connection creator, as
    #: L{rproxy.tls.backend_tls} makes); None for plain TCP.
    tls: IOpenSSLClientConnectionCreator | None = None

    healthy: bool = True
    admin: AdminState = AdminState.ENABLED
    active: int = 0
    connections_total: int = 0
    failures_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: consecutive passes / failures seen since health last changed.
    passes: int = 0
    fails: int = 0
    #: when and why health or admin state last changed (seconds since epoch).
    changed_at: float = 0.0
    reason: str = "initial state"
    #: the result of the last active check: None before the first one.
    last_check_ok: bool | None = None
    last_check_at: float | None = None
    last_check_duration: float | None = None
    #: HTTP exchanges sent to it, by the class of its response
    #: (L{rproxy.stats.STATUS_CLASSES}; C{none}: it sent no response).
    responses: list[int] = field(factory=new_class_counts)
    #: how long it took to start each HTTP response.
    latency: LatencyHistogram = field(factory=LatencyHistogram)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            self.name = format_address(self.host, self.port)

    @classmethod
    def from_address(cls, address: str, **kwargs: object) -> Backend:
        """
        Build a backend from C{host:port}; keyword arguments set the rest.
        """
        host, port = parse_address(address)
        return cls(host, port, **kwargs)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        """
        C{host:port}, as written in a config file.
        """
        return format_address(self.host, self.port)

    @property
    def state(self) -> BackendState:
        """
        The state new traffic sees: admin state first, then health.
        """
        if self.admin is AdminState.DISABLED:
            return BackendState.DISABLED
        if self.admin is AdminState.DRAINING:
            return BackendState.DRAINING
        return BackendState.UP if self.healthy else BackendState.DOWN

    @property
    def is_up(self) -> bool:
        """
        Healthy and enabled: a candidate unless full.
        """
        return self.healthy and self.admin is AdminState.ENABLED

    @property
    def is_full(self) -> bool:
        """
        Whether C{max_connections} connections are open now.
        """
        return self.max_connections is not None and self.active >= self.max_connections


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


StateObserver = Callable[["Pool", Backend, BackendState, BackendState, str], None]


@implementer(IRegistry)
class Registry:
    """
    The named pools shared by every listener of one process.
    """

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self._pools: dict[str, Pool] = {}
        for pool in pools:
            self.add(pool)

    def add(self, pool: Pool) -> None:
        """
        Add C{pool}; its name must be new.
        """
        if pool.name in self._pools:
            raise ValueError(f"a pool named {pool.name!r} exists already")
        self._pools[pool.name] = pool

    def remove(self, name: str) -> Pool:
        """
        Remove and return the pool called C{name}.
        """
        return self._pools.pop(name)

    def get(self, name: str) -> Pool:
        return self._pools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def __len__(self) -> int:
        return len(self._pools)


class Pool:
    """
    A named set of backends with a balancing strategy and health thresholds.

    @ivar version: grows whenever membership or a weight changes, so that
        balancers can rebuild what they derive from the membership.
    """

    def __init__(
        self,
        name: str,
        backends: Iterable[Backend] = (),
        balancer: IBalancer | None = None,
        *,
        rise: int = 2,
        fall: int = 3,
        connect_tries: int = 3,
        hash_key: str = "client_ip",
        now: Callable[[], float] = time.time,
        send_proxy: str | None = None,
    ) -> None:
        if balancer is None:
            from rproxy.balancing import RoundRobin

            balancer = RoundRobin()
        self.name = name
        self.balancer: IBalancer = balancer
        self.rise = rise
        self.fall = fall
        self.connect_tries = connect_tries
        #: what a hashing balancer hashes: "client_ip" or "header:NAME".
        self.hash_key = hash_key
        #: the PROXY protocol version ("v1", "v2") every connection to a
        #: backend starts with, health checks included; None for none.
        self.send_proxy = send_proxy
        self.version = 0
        self._now = now
        self._backends: dict[str, Backend] = {}
        self._observers: list[StateObserver] = []
        for backend in backends:
            self.add(backend)

    def __repr__(self) -> str:
        return f"<Pool {self.name} backends={list(self._backends)}>"

    # Membership -------------------------------------------------------

    @property
    def backends(self) -> list[Backend]:
        """
        Every member, in the order added (a copy).
        """
        return list(self._backends.values())

    def get(self, name: str) -> Backend:
        """
        The member called C{name}.

        @raise KeyError: if there is none.
        """
        return self._backends[name]

    def add(self, backend: Backend) -> None:
        """
        Add C{backend}; its name must be new to this pool.
        """
        if backend.name in self._backends:
            raise ValueError(f"pool {self.name!r} has a backend {backend.name!r}")
        if not backend.changed_at:
            backend.changed_at = self._now()
        self._backends[backend.name] = backend
        self.version += 1

    def remove(self, name: str) -> Backend:
        """
        Remove the member called C{name}; its open connections are not
        touched.
        """
        backend = self._backends.pop(name)
        self.version += 1
        return backend

    def set_weight(self, backend: Backend, weight: int) -> None:
        """
        Change C{backend}'s weight.
        """
        if weight < 1:
            raise ValueError(f"weight must be a positive integer, got {weight}")
        backend.weight = weight
        self.version += 1

    # Choosing ---------------------------------------------------------

    def candidates(self, exclude: Collection[Backend] = ()) -> list[Backend]:
        """
        The backends that may take a new connection now, in member order.

        Primaries that are up, not full and not in C{exclude}; backups (on
        the same terms) only while no primary is up.
        """
        members = self._backends.values()
        primaries_up = False
        chosen = []
        for backend in members:
            if backend.backup or not backend.is_up:
                continue
            primaries_up = True
            if not backend.is_full and backend not in exclude:
                chosen.append(backend)
        if primaries_up:
            return chosen
        return [
            b
            for b in members
            if b.backup and b.is_up and not b.is_full and b not in exclude
        ]

    def pick(
        self, key: str | None = None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        """
        Ask the balancer for a backend, or None when no backend may take
        traffic.
        """
        return self.balancer.pick(self, key, exclude)

    # Traffic reports --------------------------------------------------

    def acquire(self, backend: Backend) -> None:
        """
        A connection to C{backend} is being opened.
        """
        backend.active += 1
        backend.connections_total += 1

    def release(self, backend: Backend) -> None:
        """
        A connection to C{backend} has ended (or never got going).

        A draining backend whose last connection ends becomes disabled.
        """
        backend.active = max(backend.active - 1, 0)
        if backend.active == 0 and backend.admin is AdminState.DRAINING:
            self.set_admin(backend, AdminState.DISABLED, "drained")

    def report_failure(self, backend: Backend, reason: str) -> None:
        """
        Real traffic could not reach C{backend} (connect refused, timed out).

        After C{fall} failures in a row the backend is marked down; active
        checks (or the back-off of a pool without them) bring it back.
        """
        backend.failures_total += 1
        self._count_failure(backend, reason, checked=False)

    def report_success(self, backend: Backend) -> None:
        """
        Real traffic reached C{backend}: its run of failures is over.
        """
        if backend.healthy:
            backend.fails = 0

    def record_check(self, backend: Backend, ok: bool, reason: str) -> None:
        """
        Apply the result of one active check with the rise/fall thresholds.
        """
        now = self._now()
        backend.last_check_ok = ok
        backend.last_check_at = now
        if ok:
            backend.fails = 0
            if backend.healthy:
                return
            backend.passes += 1
            if backend.passes >= self.rise:
                self._set_health(
                    backend, True, f"{_count(backend.passes, 'check')} passed"
                )
        else:
            self._count_failure(backend, reason, checked=True)

    def _count_failure(self, backend: Backend, reason: str, checked: bool) -> None:
        backend.passes = 0
        if not backend.healthy:
            return
        backend.fails += 1
        if backend.fails >= self.fall:
            run = (
                f"{_count(backend.fails, 'check')} failed"
                if checked
                else f"{_count(backend.fails, 'failure')} in a row"
            )
            self._set_health(backend, False, f"{run}, last: {reason}")

    def mark_up(self, backend: Backend, reason: str, *, fails: int = 0) -> None:
        """
        Mark C{backend} healthy now, skipping the rise threshold.

        @param fails: failures to count as already seen, so that a trial after
            a back-off needs fewer failures to go down again.
        """
        self._set_health(backend, True, reason)
        backend.fails = fails

    def mark_down(self, backend: Backend, reason: str) -> None:
        """
        Mark C{backend} unhealthy now, skipping the fall threshold.
        """
        self._set_health(backend, False, reason)

    def set_admin(self, backend: Backend, admin: AdminState, reason: str) -> None:
        """
        Enable, drain or disable C{backend}.  Draining a backend with no open
        connection disables it at once.
        """
        if admin is AdminState.DRAINING and backend.active == 0:
            admin = AdminState.DISABLED
        old = backend.state
        backend.admin = admin
        self._changed(backend, old, reason)

    # State changes ----------------------------------------------------

    def observe(self, observer: StateObserver) -> None:
        """
        Call C{observer(pool, backend, old_state, new_state, reason)} after
        every change of a backend's state.
        """
        self._observers.append(observer)

    def unobserve(self, observer: StateObserver) -> None:
        """
        Stop calling C{observer}.
        """
        self._observers.remove(observer)

    def _set_health(self, backend: Backend, healthy: bool, reason: str) -> None:
        old = backend.state
        backend.healthy = healthy
        backend.passes = backend.fails = 0
        self._changed(backend, old, reason)

    def _changed(self, backend: Backend, old: BackendState, reason: str) -> None:
        new = backend.state
        if new is old:
            return
        backend.changed_at = self._now()
        backend.reason = reason
        emit = log.warn if new is BackendState.DOWN else log.info
        emit(
            "backend {backend} in pool {pool} is now {state}: {reason}",
            backend=backend.name,
            pool=self.name,
            state=new.value,
            old_state=old.value,
            reason=reason,
        )
        for observer in list(self._observers):
            observer(self, backend, old, new, reason)
