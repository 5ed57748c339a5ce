"""The response half of an HTTP/1.1 connection: L{H1Writer} frames a
response head for the client, re-chunks a body of unknown length, passes a
100 Continue on once, ends a chunked body with its trailers, and sends what
one read from the backend produced in one go."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rproxy._fastwrite import Data, send_parts
from rproxy.http.chunked import encode_last_chunk
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.http.messages import response_head

__all__ = ["H1Writer"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class H1Writer:
    """
    What one client connection is sent, one response at a time.

    @ivar keep_client: whether the connection stays open after the current
        response (the head said so).
    @ivar sent: whether any byte of the current response has gone out.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.keep_client = True
        self.sent = False
        self._sent_continue = False
        self._out: list[Data] = []
        #: body bytes of a re-chunked response read in this pass, framed as
        #: one chunk when sent.
        self._chunk_parts: list[Data] = []
        self._chunk_out = False

    def next_response(self) -> None:
        """
        A new request began: nothing of its response is out yet.
        """
        self.sent = self._sent_continue = False

    def interim(self, request: RequestHead | None, head: ResponseHead) -> None:
        """
        A 1xx other than 101: only a 100 the client asked for is passed on.
        """
        if (
            head.status == 100
            and request is not None
            and request.expect_continue
            and request.version >= (1, 1)
            and not self._sent_continue
        ):
            self._sent_continue = True
            self.transport.write(_CONTINUE)

    def head(self, head: ResponseHead, request: RequestHead, keep_alive: bool) -> None:
        """
        Frame the final response head (sent with the next L{flush}).
        """
        data, self._chunk_out, self.keep_client = response_head(
            head, request, keep_alive=keep_alive
        )
        self._out.append(data)

    def body(self, data: Data) -> None:
        """
        Body bytes (a view of a received buffer: sent, or copied, by the
        next L{flush} of this read).
        """
        if self._chunk_out:
            if data:
                self._chunk_parts.append(data)
        else:
            self._out.append(data)

    def _end_chunk(self) -> None:
        # The body bytes of one read from the backend as one chunk (the
        # backend's own chunks rarely line up with its reads), not copied.
        parts = self._chunk_parts
        size = sum(map(len, parts))
        self._out.append(b"%x\r\n" % size)
        self._out.extend(parts)
        self._out.append(b"\r\n")
        parts.clear()

    def flush(self) -> bool:
        """
        Send what was framed since the last flush.

        @return: whether the transport took it all at once (C{False}: some
            waits in its buffer, the client is slower than the backend).
        """
        if self._chunk_parts:
            self._end_chunk()
        out = self._out
        if not out:
            return True
        self.sent = True
        sent = send_parts(self.transport, out)
        out.clear()
        return sent

    def end(self, trailers: Sequence[tuple[bytes, bytes]], te_trailers: bool) -> bool:
        """
        End the response (the last chunk, with the trailers if the client
        asked for them) and flush.
        """
        if self._chunk_out:
            if self._chunk_parts:
                self._end_chunk()
            self._out.append(encode_last_chunk(trailers if te_trailers else ()))
        return self.flush()

    def discard(self) -> None:
        """
        Drop what was framed and not sent (a response replaced by an error).
        """
        self._out.clear()
        self._chunk_parts.clear()
