"""Writing to a plain TCP transport without waiting for the next reactor turn.

Twisted's C{transport.write} only buffers: the bytes leave on a later reactor
iteration, after an epoll registration, and another epoll change when the
buffer empties.  For a proxy answering small requests that is a third of the
work.  L{send_now} sends at once when the transport has nothing buffered and
hands only what the kernel did not take to C{transport.write}, so ordering and
backpressure stay Twisted's.  Anything but a connected plain TCP transport
(TLS, tests' string transports) goes through C{transport.write} unchanged.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp

_TCP = (tcp.Server, tcp.Client)
#: what may be sent: bytes, or a view of received bytes (not copied).
Data = bytes | memoryview


def _can_send_now(transport: Any) -> bool:
    return (
        type(transport) in _TCP
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
        and not transport._writeDisconnected
        and not getattr(transport, "_aborting", False)
        and not getattr(transport, "TLS", False)
    )


def nothing_waiting(transport: Any) -> bool:
    """
    Whether a plain TCP transport has nothing buffered to send (any other
    transport: true).  Bytes written around it, with splice(2), must not
    overtake what it still holds.
    """
    if type(transport) not in _TCP:
        return True
    return not transport._tempDataLen and len(transport.dataBuffer) == transport.offset


def send_now(transport: Any, data: Data) -> bool:
    """
    Write C{data} to C{transport}, sending it straight away if nothing is
    waiting in the transport's own buffer.

    @return: whether all of it was sent at once (C{False}: some of it waits
        in the transport's buffer).
    """
    if _can_send_now(transport):
        sock: socket.socket = transport.socket
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let Twisted find and report the broken connection its own way.
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    transport.write(bytes(data))
    return False


#: below this many bytes, parts are joined and sent in one buffer; above,
#: they go out with sendmsg(2) and are not copied.
_GATHER = 16384


def send_parts(transport: Any, parts: list[Data]) -> bool:
    """
    Write the concatenation of C{parts} to C{transport}, as L{send_now}
    does, without copying large parts into one buffer first.

    @return: whether all of it was sent at once.
    """
    if len(parts) == 1:
        return send_now(transport, parts[0])
    total = sum(map(len, parts))
    if total < _GATHER or not _can_send_now(transport):
        return send_now(transport, b"".join(parts))
    try:
        sent = transport.socket.sendmsg(parts)
    except (BlockingIOError, InterruptedError, OSError):
        sent = 0
    if sent == total:
        return True
    transport.write(b"".join(parts)[sent:])
    return False


def no_delay(transport: Any) -> None:
    """
    Turn off Nagle's algorithm on a TCP transport: a proxy relays writes
    whose boundaries it does not choose (a request head, then its body) and
    must not hold the second back for the peer's delayed ACK.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)
