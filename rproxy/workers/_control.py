"""The control channel between the supervisor and one worker: JSON messages,
each a length-prefixed string (L{Int32StringReceiver}), over a UNIX socket
pair, with listening sockets passed alongside (C{SCM_RIGHTS}).

Why not AMP: a pool picture or a worker's metrics grow with the config and
AMP caps a value at 64 KiB; these messages are plain JSON documents, easy to
log and to test, and the only request that wants an answer (a reload)
carries an C{id} its reply names in C{reply_to}.

Every message is an object with a C{type}:

supervisor to worker
  - C{start}: C{config} (the file's text), C{source} (its path),
    C{listeners} (C{name}, C{listen}, C{fd} in the worker, C{family}).
  - C{listener}: C{name}, C{listen}, C{family}; the socket comes with it.
  - C{config}: C{config}, C{source}, C{id}: apply it, reply with
    C{problems}.
  - C{pools}: C{pools}, the picture of L{rproxy.workers._snapshot}.
  - C{certificate}: C{cert} and C{key} (PEM) obtained by ACME.
  - C{challenge}: C{token}, C{answer} (None: withdrawn).
  - C{purge}: C{cache} and C{url} or C{prefix}, C{id}: reply C{purged}.

worker to supervisor
  - C{ready}: C{pid}, once it serves every listener.
  - C{log}: C{level}, C{namespace}, C{text}: one of its log events.
  - C{stats}: C{status} (the JSON status) and C{metrics} (Prometheus
    text), every L{STATS_INTERVAL} seconds.
  - C{reply}: C{reply_to} and the answer's fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["STATS_INTERVAL", "ControlLostError", "ControlProtocol", "Message"]

log = Logger(namespace="rproxy.workers")

#: seconds between two stats messages of a worker.
STATS_INTERVAL = 1.0

Message = dict[str, Any]
#: what handles a message: it gets the message and the descriptors that came
#: with it (which it then owns), and returns the reply's fields (or None).
Handler = Callable[[Message, list[int]], Message | None]


class ControlLostError(Exception):
    """
    The control channel closed before the answer came.
    """


@implementer(IFileDescriptorReceiver)
class ControlProtocol(Int32StringReceiver):
    """
    One end of the control channel: L{send} and L{ask} write messages,
    L{send_socket} passes a descriptor with one; each message received goes
    to C{handler}, and C{lost} is called once when the channel closes.

    A message of type C{listener} takes the first descriptor received and
    not taken yet (the one sent with it).
    """

    #: pictures and metrics of big configs stay far below this.
    MAX_LENGTH = 64 << 20

    def __init__(self, handler: Handler, lost: Callable[[Failure], None]) -> None:
        self._handler = handler
        self._lost = lost
        self._fds: list[int] = []
        self._asked: dict[int, Deferred[Message]] = {}
        self._next_id = 0
        self.connected_now = False

    # Sending ---------------------------------------------------------------

    def send(self, message: Message) -> None:
        """
        Write C{message} (it must have a C{type}); dropped if closed.
        """
        if self.transport is None or not self.connected_now:
            return
        self.sendString(json.dumps(message, separators=(",", ":")).encode())

    def send_socket(self, fd: int, message: Message) -> None:
        """
        Pass descriptor C{fd} (a copy: the caller keeps its own) with
        C{message}.
        """
        if self.transport is None or not self.connected_now:
            return
        self.transport.sendFileDescriptor(fd)  # type: ignore[attr-defined]
        self.send(message)

    def ask(self, message: Message) -> Deferred[Message]:
        """
        Send C{message} with a new C{id}; the Deferred fires with the reply
        (or fails with L{ControlLostError}).
        """
        self._next_id += 1
        asked: Deferred[Message] = Deferred()
        if not self.connected_now:
            asked.errback(ControlLostError("the control channel is closed"))
            return asked
        self._asked[self._next_id] = asked
        self.send({**message, "id": self._next_id})
        return asked

    # Receiving -------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_now = True

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def stringReceived(self, string: bytes) -> None:
        try:
            message = json.loads(string)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            log.error("control: not a message: {data!r}", data=string[:200])
            return
        if kind == "reply":
            asked = self._asked.pop(message.get("reply_to"), None)
            if asked is not None:
                asked.callback(message)
            return
        fds = self._take_fds(message)
        try:
            reply = self._handler(message, fds)
        except Exception:
            log.failure("control: handling a {kind} message failed", kind=kind)
            reply = {"problems": [f"handling {kind} failed; see the log"]}
        if "id" in message and reply is not None:
            self.send({"type": "reply", "reply_to": message["id"], **reply})

    def _take_fds(self, message: Message) -> list[int]:
        if message["type"] != "listener":
            return []
        taken, self._fds = self._fds[:1], self._fds[1:]
        return taken

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected_now = False
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        asked, self._asked = self._asked, {}
        for waiting in asked.values():
            waiting.errback(ControlLostError("the control channel closed"))
        self._lost(reason)
