"""The process's file descriptors: raising the soft RLIMIT_NOFILE at start
(L{raise_fd_limit}), and the budget (L{FdBudget}) that decides, against
that limit, whether a listener may take another connection and whether a
TCP pair may have splice pipes.

Every connection a listener tracks is counted as L{CONNECTION_FDS} (the
client socket and its backend socket: an HTTP client's backend connection,
busy or kept alive, a TCP pair's other end), and a spliced pair's pipes as
L{PIPE_FDS} more.  What is open besides (listening sockets, log files, the
reactor's own) is counted once at start and recounted, at most once per
C{recount_every} seconds, whenever a decision comes near the edge, so that
descriptors opened out of sight (health checks, idle kept-alive backend
connections beyond the estimate, the admin interface) correct the estimate.

Three numbers come out of the limit:

  - the I{floor}, never given to connections: a refused client is accepted
    and closed at once (accept(2) needs a descriptor for that), and checks
    and log files need a few;
  - the I{reserve} above it, which only listeners holding less than their
    fair share (the limit, less what is open besides, less the floor,
    divided by the listeners) may use, so that one listener's flood leaves
    the others room;
  - splice pipes are made only while half the limit (and at least the
    floor and twice the reserve) stays free: below that a pair is relayed
    through Python, at a third of the descriptors, so the last half serves
    three times the connections it would spliced.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.logger import Logger

if TYPE_CHECKING:
    from rproxy.config import Config

__all__ = [
    "CONNECTION_FDS",
    "PIPE_FDS",
    "FdBudget",
    "FdLimit",
    "count_open_fds",
    "is_out_of_fds",
    "kept_alive_most",
    "raise_fd_limit",
    "soft_fd_limit",
]

log = Logger(namespace="rproxy.fds")

#: descriptors one tracked connection holds: the client's and the backend's.
CONNECTION_FDS = 2
#: descriptors the two pipes of a spliced pair hold.
PIPE_FDS = 4
#: a hard limit of RLIM_INFINITY is raised to at most this (Linux refuses
#: more than fs.nr_open, whose default this is).
_NR_OPEN_DEFAULT = 1 << 20


def count_open_fds() -> int | None:
    """
    How many file descriptors the process has open now, or None where the
    system does not say (no C{/proc/self/fd} nor C{/dev/fd}).  It lists a
    directory: O(open descriptors), for start and occasional recounts.
    """
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # The listing counts the descriptor it reads the directory with.
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return None


def soft_fd_limit() -> int:
    """
    The soft RLIMIT_NOFILE in force now.
    """
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def kept_alive_most(config: Config) -> int:
    """
    The most idle kept-alive backend connections C{config}'s HTTP listeners
    may keep: each listener keeps up to C{max_idle} per backend of a pool.
    """
    http = sum(1 for listener in config.listeners if listener.protocol == "http")
    per_listener = sum(
        pool.keep_alive.max_idle * len(pool.backends) for pool in config.pools
    )
    return http * per_listener


@frozen
class FdLimit:
    """
    The soft RLIMIT_NOFILE after L{raise_fd_limit}.

    @ivar soft: the limit in force now.
    @ivar hard: the hard limit.
    @ivar before: the soft limit found.
    @ivar in_use: descriptors open when it was raised (None if unknown).
    @ivar error: why it could not be raised, or None.
    """

    soft: int
    hard: int
    before: int
    in_use: int | None = None
    error: str | None = None


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return _NR_OPEN_DEFAULT


def raise_fd_limit(
    *,
    kept_alive: int = 0,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
    count_open: Callable[[], int | None] = count_open_fds,
) -> FdLimit:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit (as nginx's
    C{worker_rlimit_nofile} and HAProxy do), and log one C{rproxy.fds}
    event with the limit and the connections it has room for.  A failure
    to raise is logged in that event (as a warning) and is not fatal.
    L{rproxy.ProxyService} calls it when it starts; an embedder wiring the
    parts without it may call it once at start.

    @param kept_alive: the most idle kept-alive HTTP backend connections the
        config allows, for the log.
    @return: the limit in force.
    """
    before, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    soft, error = before, None
    if before == resource.RLIM_INFINITY:
        soft = target
    elif before < target:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as failure:
            error = str(failure) or type(failure).__name__
        else:
            soft = target
    limit = FdLimit(soft, hard, before, count_open(), error)
    _log_limit(limit, kept_alive)
    return limit


def _log_limit(limit: FdLimit, kept_alive: int) -> None:
    budget = FdBudget(limit.soft, in_use=limit.in_use or 0, now=lambda: 0.0)
    spliced, relayed = budget.tcp_room()
    fields = {
        "limit": limit.soft,
        "hard": limit.hard,
        "before": limit.before,
        "in_use": limit.in_use if limit.in_use is not None else "?",
        "tcp": spliced + relayed,
        "spliced": spliced,
        "http": budget.http_room(),
        "kept_alive": kept_alive,
        "floor": budget.floor,
        "reserve": budget.reserve,
        "error": limit.error,
    }
    text = (
        "file descriptor limit {limit} (soft limit was {before}, hard {hard}), "
        "{in_use} open: room for {tcp} TCP connections ({spliced} of them "
        "spliced, 6 descriptors each, the rest 2) or {http} HTTP clients "
        "(2 each: the client and its backend connection; idle kept-alive "
        "backend connections, up to {kept_alive}, share that room); "
        "{floor} kept free, {reserve} more for listeners under their share"
    )
    if limit.error is None:
        log.info(text, **fields)
    else:
        log.warn(text + "; could not raise it: {error}", **fields)


def is_out_of_fds(error: OSError) -> bool:
    """
    Whether C{error} says the process (EMFILE) or system (ENFILE) has no
    file descriptor left.
    """
    return error.errno in (errno.EMFILE, errno.ENFILE)


class FdBudget:
    """
    The process's file descriptors against its limit, as the module
    docstring describes: which listener may take another connection
    (L{admit}) and which pair may have pipes (L{take_pipes}).  Pure
    bookkeeping: the listeners' connection counts are read through the
    callables they register, the clock and the recount are injected.

    @param limit: the soft RLIMIT_NOFILE.
    @param in_use: descriptors open now, none of them a tracked connection.
    @param now: the time in seconds (a reactor's C{seconds}).
    @param count_open: the descriptors open, for recounts (None if unknown).
    @param recount_every: the least seconds between two recounts.
    """

    def __init__(
        self,
        limit: int,
        *,
        in_use: int = 0,
        now: Callable[[], float],
        count_open: Callable[[], int | None] = count_open_fds,
        recount_every: float = 1.0,
    ) -> None:
        self._now = now
        self._count_open = count_open
        self._recount_every = recount_every
        self._recounted = float("-inf")
        self._recount_now = False
        self._listeners: dict[object, tuple[str, Callable[[], int]]] = {}
        self._pipes: dict[str, int] = {}
        self.limit = self.floor = self.reserve = self.splice_floor = self.base = 0
        self.resize(limit, in_use)

    def resize(self, limit: int, in_use: int) -> None:
        """
        Count against C{limit} from now on, with C{in_use} descriptors open
        (those of tracked connections and pipes among them).
        """
        self.limit = limit
        self.floor = min(max(8, limit // 64), 256)
        self.reserve = min(max(16, limit // 16), 4096)
        self.splice_floor = max(self.floor + 2 * self.reserve, limit // 2)
        self.base = in_use - self._tracked()

    def resize_to(self, limit: FdLimit) -> None:
        """
        Count against what L{raise_fd_limit} returned (if it could count
        the descriptors open).
        """
        if limit.in_use is not None:
            self.resize(limit.soft, limit.in_use)

    # Listeners and pipes ---------------------------------------------------

    def add_listener(self, key: object, name: str, open_: Callable[[], int]) -> None:
        """
        Count the connections of listener C{key} (named C{name}, as its
        pipes are), C{open_()} of them at any time.
        """
        self._listeners[key] = (name, open_)

    def remove_listener(self, key: object) -> None:
        """
        Listener C{key} holds nothing any more.
        """
        self._listeners.pop(key, None)

    def take_pipes(self, name: str) -> bool:
        """
        Whether a pair of listener C{name} may have splice pipes now; if so
        they are counted until L{return_pipes}.
        """
        if not self._room_for(lambda: PIPE_FDS + self.splice_floor):
            return False
        self._pipes[name] = self._pipes.get(name, 0) + PIPE_FDS
        return True

    def return_pipes(self, name: str) -> None:
        """
        Pipes L{take_pipes} allowed listener C{name} are closed.
        """
        left = self._pipes.get(name, 0) - PIPE_FDS
        if left > 0:
            self._pipes[name] = left
        else:
            self._pipes.pop(name, None)

    def pipes_failed(self) -> None:
        """
        pipe() failed for want of descriptors although the budget allowed
        it: the estimate is off, recount at the next decision.
        """
        self._recount_now = True

    # Decisions ---------------------------------------------------------------

    def held(self, key: object) -> int:
        """
        Descriptors listener C{key} holds: its connections and its pipes.
        """
        name, open_ = self._listeners[key]
        return CONNECTION_FDS * open_() + self._pipes.get(name, 0)

    def in_use(self) -> int:
        """
        Descriptors counted as open.
        """
        return self.base + self._tracked()

    def free(self) -> int:
        """
        Descriptors left under the limit, as counted.
        """
        return self.limit - self.in_use()

    def share(self) -> int:
        """
        A listener's fair share: what connections may have, divided evenly.
        """
        usable = self.limit - self.base - self.floor
        return usable // max(1, len(self._listeners))

    def admit(self, key: object) -> bool:
        """
        Whether listener C{key} may take another connection: one that
        leaves the floor free, and the reserve too unless the listener
        holds less than its share.
        """

        def needed() -> int:
            over = key in self._listeners and self.held(key) >= self.share()
            return CONNECTION_FDS + self.floor + (self.reserve if over else 0)

        return self._room_for(needed)

    def tcp_room(self) -> tuple[int, int]:
        """
        Connections a TCP listener over its share has room for now, if no
        other listener takes any: (spliced, then relayed through Python
        once pipes stop).
        """
        free = self.free()
        spliced = max(0, (free - self.splice_floor) // (CONNECTION_FDS + PIPE_FDS))
        left = free - spliced * (CONNECTION_FDS + PIPE_FDS)
        relayed = max(0, (left - self.floor - self.reserve) // CONNECTION_FDS)
        return spliced, relayed

    def http_room(self) -> int:
        """
        Clients an HTTP listener over its share has room for now, if no
        other listener takes any.
        """
        return max(0, (self.free() - self.floor - self.reserve) // CONNECTION_FDS)

    def _room_for(self, needed: Callable[[], int]) -> bool:
        if self._recount_now or self.free() - needed() < self.reserve:
            # Near the edge: make sure the count is true before deciding
            # (the share, and so what is needed, may change with it).
            self._recount()
        return self.free() >= needed()

    def _recount(self) -> None:
        now = self._now()
        if not self._recount_now and now - self._recounted < self._recount_every:
            return
        self._recounted = now
        self._recount_now = False
        counted = self._count_open()
        if counted is not None:
            self.base = counted - self._tracked()

    def _tracked(self) -> int:
        connections = sum(open_() for _, open_ in self._listeners.values())
        return CONNECTION_FDS * connections + sum(self._pipes.values())
