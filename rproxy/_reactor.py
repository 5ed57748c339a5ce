"""An epoll reactor for the proxy process, without the per-event log context.

Twisted's L{EPollReactor} runs every ready descriptor's C{doRead} inside
C{log.callWithLogger}, which pushes a legacy logging context (the
C{[HTTPFrontProtocol,12,127.0.0.1]} prefix of old-style log lines) and pops
it again.  A proxy answering small requests handles two socket events per
request, and the profile of one showed that wrapping at 17% of its CPU.

L{ProxyReactor} is the same reactor dispatching straight to the
descriptor.  Errors are handled exactly as before (the reactor's own
C{_doReadOrWrite} logs them and disconnects the descriptor); what is lost is
only the C{system} prefix on legacy log lines emitted from inside protocol
callbacks, which rproxy does not use: its events name their own listener,
pool and backend.

C{twistd rproxy} installs it unless a reactor was chosen with C{-r} or is
already installed; an application embedding rproxy keeps its own reactor.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.python import log

__all__ = ["ProxyReactor", "install", "install_if_unset"]

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll on this platform: ProxyReactor is None
    _Base: Any = None
else:
    _Base = EPollReactor


def _make_class() -> Any:
    if _Base is None:
        return None

    class ProxyReactor(_Base):  # type: ignore[misc]
        """
        L{EPollReactor} without the legacy log context around each event.
        """

        def doPoll(self, timeout: float | None) -> None:  # noqa: N802
            if timeout is None:
                timeout = -1
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as error:
                if error.errno == errno.EINTR:
                    return
                raise
            selectable_for = self._selectables.get
            dispatch = self._doReadOrWrite
            for fd, event in events:
                selectable = selectable_for(fd)
                if selectable is None:
                    continue
                try:
                    dispatch(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    # What escapes _doReadOrWrite (a connectionLost that
                    # raised) is logged; the other ready descriptors are
                    # still served, as callWithLogger allowed.
                    log.err(None, f"error while handling {selectable!r}")

        doIteration = doPoll  # noqa: N815

    ProxyReactor.__qualname__ = "ProxyReactor"
    return ProxyReactor


#: L{EPollReactor} without the per-event log context, or C{None} where this
#: platform has no epoll.
ProxyReactor = _make_class()


def install() -> Any:
    """
    Install a L{ProxyReactor} as the global reactor and return it.

    @raise RuntimeError: this platform has no epoll.
    """
    from twisted.internet.main import installReactor

    if ProxyReactor is None:
        raise RuntimeError("ProxyReactor needs epoll")
    reactor = ProxyReactor()
    installReactor(reactor)
    return reactor


def install_if_unset() -> bool:
    """
    Install L{ProxyReactor} if no reactor is installed yet and this platform
    has epoll; say whether it was installed.
    """
    if "twisted.internet.reactor" in sys.modules or ProxyReactor is None:
        return False
    install()
    return True
