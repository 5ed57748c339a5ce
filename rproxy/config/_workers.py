"""The top-level C{workers} key: how many worker processes serve the
listeners (C{1}, the default, is one process and no supervisor; C{"auto"} is
one per core this process may run on).  With more than one, caches are
memory-only: a disk tier is refused.

L{rproxy.config} calls L{parse_workers}; problems go to the shared
L{Problems} under C{workers}.  With more than one worker every listener must
listen on an endpoint whose socket the supervisor can hand to the workers:
C{tcp:}, C{tcp6:} or C{unix:} (TLS is configured with C{[listeners.tls]}, on
such an endpoint, and done in each worker).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

from rproxy.config._validate import Table

__all__ = ["HANDED_KINDS", "MAX_WORKERS", "available_cores", "parse_workers"]

#: the endpoint kinds whose bound socket a worker can adopt.
HANDED_KINDS = ("tcp", "tcp6", "unix")
#: the most workers a config may ask for.
MAX_WORKERS = 256

#: a colon not escaped with a backslash: where endpoint string parts end.
_PART = re.compile(r"(?<!\\):")


def available_cores() -> int:
    """
    The CPUs this process may run on (its affinity, so C{taskset} counts),
    at least 1.
    """
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def worker_count(value: object, cores: Callable[[], int] = available_cores) -> int:
    """
    The number of workers C{value} (the TOML value of C{workers}) asks for.

    @raise ValueError: if it is neither C{"auto"} nor an integer from 1 to
        L{MAX_WORKERS}.
    """
    if value == "auto":
        return min(cores(), MAX_WORKERS)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'must be a number of processes or "auto", got {value!r}')
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"must be from 1 to {MAX_WORKERS}, got {value}")
    return value


def endpoint_kind(description: str) -> str:
    """
    The kind of the server endpoint C{description} (C{"tcp"}, C{"ssl"}...).
    """
    return _PART.split(description, 1)[0].strip().lower()


def parse_workers(
    top: Table,
    listens: Iterable[tuple[str, str]],
    disk_caches: Iterable[str] = (),
    cores: Callable[[], int] = available_cores,
) -> int:
    """
    Read C{workers} from the top table; with more than one, check that
    every C{(listener name, endpoint)} of C{listens} can be handed over and
    that no cache has a disk tier (C{disk_caches}, by name): each process
    would keep its own index of one directory.
    """
    workers = top.get("workers", lambda v: worker_count(v, cores), 1)
    if workers > 1:
        for name in disk_caches:
            top.report(
                "workers",
                f"with {workers} workers, cache {name!r} cannot have a disk tier "
                "(each worker would keep its own index of the one directory); "
                "use a memory-only cache",
            )
        for name, listen in listens:
            kind = endpoint_kind(listen)
            if kind not in HANDED_KINDS:
                top.report(
                    "workers",
                    f"with {workers} workers, listener {name!r} must listen on a "
                    f"tcp:, tcp6: or unix: endpoint (the supervisor binds it and "
                    f"hands the socket to the workers), not {kind}: ({listen!r}); "
                    "for TLS use [listeners.tls]",
                )
    return workers
