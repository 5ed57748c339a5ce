"""The response side of an HTTP exchange: what the backend connection
reports (L{rproxy.http.upstream.IResponseSink}) relayed to the client, and the
raw tunnel after a 101."""

from __future__ import annotations

from rproxy._fastwrite import Data, send_parts
from rproxy.http._front_state import (
    BODY,
    CLOSED,
    HEAD,
    TUNNEL,
    FrontState,
    end_stream,
)
from rproxy.http._tunnel import Tunnel
from rproxy.http.chunked import encode_last_chunk
from rproxy.http.framing import ResponseHead
from rproxy.http.messages import response_head, response_trailers, switching_head

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ResponseSide(FrontState):
    """
    The part of L{rproxy.http.server.HTTPFrontProtocol} that relays a
    backend's response (it is the L{IResponseSink} of the exchange).
    """

    def interim_response(self, head: ResponseHead) -> None:
        request = self.request
        self._last_io = self.clock.seconds()
        if (
            head.status == 100
            and request is not None
            and request.expect_continue
            and request.version >= (1, 1)
            and not self._sent_continue
        ):
            self._sent_continue = True
            self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def response_head(self, head: ResponseHead) -> None:
        self._last_io = self.clock.seconds()
        request = self.request
        assert request is not None
        self.status = head.status
        self.upstream_time = self.clock.seconds() - self._upstream_started
        settings = self.settings
        data, self._chunk_out, self._keep_client = response_head(
            head,
            request,
            keep_alive=request.keep_alive
            and (not self._closing or self._more_before_eof()),
            remove=settings.remove_response_headers,
            via=settings.policy.via,
            add=settings.add_response_headers,
        )
        self._out.append(data)
        self._response_started = True

    def response_body(self, data: Data) -> None:
        self.bytes_out += len(data)
        self._last_io = self.clock.seconds()
        if self._chunk_out:
            if data:
                self._chunk_parts.append(data)
        else:
            self._out.append(data)

    def _end_chunk(self) -> None:
        """
        Frame the body bytes of one read from the backend as one chunk (the
        backend's own chunks rarely line up with its reads), without copying
        them.
        """
        parts = self._chunk_parts
        size = sum(map(len, parts))
        self._out.append(b"%x\r\n" % size)
        self._out.extend(parts)
        self._out.append(b"\r\n")
        parts.clear()

    def flush_output(self) -> None:
        """
        Send what the last read from the backend produced.
        """
        if self._chunk_parts:
            self._end_chunk()
        out = self._out
        if not out:
            return
        transport = self.transport
        sent = send_parts(transport, out)
        out.clear()
        if not sent and self._state != CLOSED:
            # The client is slower than the backend: from now on the
            # backend connection is paused whenever the client's buffer is
            # full (registered only now, as most responses never need it).
            upstream = self.upstream
            if (
                upstream is not None
                and upstream.transport is not None
                and getattr(transport, "producer", None) is None
            ):
                transport.registerProducer(upstream.transport, True)  # type: ignore[union-attr]

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        request = self.request
        if request is not None and request.te_trailers:
            self._trailers = response_trailers(
                headers, remove=self.settings.remove_response_headers
            )

    def response_end(self) -> None:
        transport = self.transport
        assert transport is not None
        if self._chunk_out:
            if self._chunk_parts:
                self._end_chunk()
            self._out.append(encode_last_chunk(self._trailers))
        self.flush_output()
        end_stream(transport)
        upstream = self.upstream
        self.upstream = None
        self._release_backend()
        pool = self.pool
        assert pool is not None and self.backend is not None
        # A whole response: the backend's run of failures (connects, resets,
        # garbage, timeouts) is over.
        pool.report_success(self.backend)
        still_sending = self._state == BODY
        if upstream is not None:
            if still_sending:
                # The backend answered before the request body was all sent:
                # neither connection can carry another request.
                upstream.reusable = False
                end_stream(upstream.transport, resume=False)
            max_idle, idle_timeout = self.settings.keep_alive_for(pool.name)
            self._keep_alive_for(pool, upstream).put(upstream, max_idle, idle_timeout)
        self._emit()
        keep = self._keep_client and not still_sending
        self._new_exchange()
        if (not keep or self._closing) and not (
            keep and self._closing_for_eof and self._buffer
        ):
            self._state = CLOSED
            self._close()
            return
        self._state = HEAD
        self._resume()
        self._since = self.clock.seconds()
        if self._buffer:
            self._idle_wait = False
            self._read_head()
        else:
            self._idle_wait = True

    def _more_before_eof(self) -> bool:
        """
        Whether the client sent more of a request before its FIN, so this
        response is not the last one read: the next is answered, or if cut
        short, given up (in the access log) once this one has been sent.
        """
        return self._closing_for_eof and bool(self._buffer.strip(b"\r\n"))

    def switched(self, head: ResponseHead, rest: bytes) -> None:
        """
        The backend switched protocols: pass the 101 on and relay raw bytes
        both ways until either side closes or the tunnel is idle too long.

        A 101 may come before the request body was all sent.  The client
        still sends the rest of it before any byte of the new protocol, and
        it must reach the backend framed as announced (a chunked body is
        decoded and chunked again, so raw bytes would not do): the switch
        waits for the body, and the backend connection is not read until
        then.
        """
        pool, backend, upstream = self.pool, self.backend, self.upstream
        assert pool is not None and backend is not None and upstream is not None
        pool.report_success(backend)
        self.upstream_time = self.clock.seconds() - self._upstream_started
        if self._state == BODY:
            self._switch = (head, bytearray(rest))
            upstream.transport.pauseProducing()  # type: ignore[union-attr]
            return
        self._open_tunnel(head, rest)

    def _complete_switch(self) -> None:
        """
        The request body that was still coming when the backend switched
        protocols has all been sent: open the tunnel now.
        """
        switch, self._switch = self._switch, None
        upstream = self.upstream
        assert switch is not None and upstream is not None
        upstream.transport.resumeProducing()  # type: ignore[union-attr]
        self._open_tunnel(switch[0], bytes(switch[1]))

    def _open_tunnel(self, head: ResponseHead, rest: bytes) -> None:
        self._cancel_timer()
        self.status = 101
        settings = self.settings
        transport, upstream = self.transport, self.upstream
        assert transport is not None and upstream is not None
        transport.write(
            switching_head(
                head, remove=settings.remove_response_headers, via=settings.policy.via
            )
        )
        self._state = TUNNEL
        self._response_started = True
        early = bytes(self._buffer)
        self._buffer.clear()
        end_stream(upstream.transport, resume=False)
        self._tunnel = Tunnel(
            transport, upstream, self.clock, settings.tunnel_timeout, self._tunnel_idle
        )
        self._tunnel.start(early, rest)
        if self._read_closed:
            # The client sent its FIN while waiting for the 101.
            upstream.transport.loseWriteConnection()  # type: ignore[union-attr]
            return
        self._resume()

    def tunnel_data(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_backend(data)
        elif self._switch is not None:
            self._switch[1].extend(data)  # held until the request body is sent

    def tunnel_closed(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            end_stream(upstream.transport, resume=False)
        if self._switch is not None:
            # Switched, then gone before the request body was through: the
            # client has seen nothing of it.
            self._switch = None
            self._release_backend()
            if self._state != CLOSED:
                self._reject(502)
            return
        self._end_tunnel()
        self._release_backend()
        if self._state != CLOSED:
            self._emit()
            self._close()

    def _end_tunnel(self) -> None:
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.stop()
            self.bytes_in += tunnel.bytes_in
            self.bytes_out += tunnel.bytes_out

    def _tunnel_idle(self) -> None:
        self._end_tunnel()
        self._drop_upstream()
        self._emit()
        self._abort()
