"""The seams embedders plug into: balancers, health checks and the registry.

Implementations declare ``@implementer(...)`` and the tests call
``verifyObject`` on them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from rproxy.backends import Backend, Pool


class IBalancer(Interface):
    """
    A strategy that chooses the backend for a new connection or request.

    A balancer never does I/O and never changes a backend's state; it may
    keep its own bookkeeping (a round-robin cursor, a hash ring).
    """

    def pick(
        pool: Pool, key: str | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        """
        Return one of ``pool.candidates(exclude)``, or ``None`` when there
        is none.

        @param key: what the connection hashes on (the client IP, a header
            value), used by hashing strategies and ignored by the others.
        @param exclude: backends already tried for this connection.
        """


class IHealthCheck(Interface):
    """
    One active probe of one backend, such as a TCP connect or an HTTP GET.
    """

    name = Attribute("A short word naming the kind of check, e.g. 'tcp'.")

    def check(backend: Backend) -> Deferred[None]:
        """
        Probe C{backend} once.

        @return: a Deferred that fires with None when the backend passes and
            fails (with an exception whose text says why) when it does not.
            The caller applies the timeout and cancels the Deferred on expiry.
        """


class IRegistry(Interface):
    """
    The named pools that every listener of one process shares.
    """

    def get(name: str) -> Pool:
        """
        Return the pool called C{name}.

        @raise KeyError: if there is none.
        """

    def __iter__() -> Iterator[Pool]:
        """
        Iterate over the pools, in the order they were added.
        """
