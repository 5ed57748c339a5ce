"""An exchange answered by rproxy itself instead of a backend: a filter's
L{LocalReply}, an error for a backend that failed or gave no answer in time,
and a filter that raised."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.attempts import QUEUE_FULL, QUEUE_TIMEOUT, RETRY_BUDGET, AttemptState
from rproxy.http._phase import Phase
from rproxy.http.errors import error_body
from rproxy.http.filters import LocalReply
from rproxy.http.filters._chain import (
    BODY,
    END,
    HEAD,
    NO_FILTERS,
    RESPONSE,
    FilterChain,
    Pipe,
)
from rproxy.http.framing import ResponseHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "fail",
    "fail_upstream",
    "filter_failed",
    "gave_up",
    "give_up",
    "replace_response",
    "reply",
    "send_local",
    "timed_out",
]

log = Logger(namespace="rproxy.http")

_FILTERING = Phase.FILTERING
_PROXYING = Phase.PROXYING
_DONE = Phase.DONE


def gave_up(exchange: Exchange, status: int) -> None:
    attempt = exchange._attempt
    assert attempt is not None
    exchange.backend = attempt.backend  # the last one tried, if any
    refused = attempt.refused
    if refused is not None:
        # The pool's queue or retry budget refused it: the access event
        # says so.
        exchange.notes["refused_by"] = refused
        reason = _REFUSED[refused]
    else:
        reason = _GAVE_UP.get(status, "backend failed")
    fail_upstream(exchange, status, reason)


def reply(
    exchange: Exchange, reply: LocalReply, through: FilterChain = NO_FILTERS
) -> None:
    """
    Answer C{reply} instead of proxying (a filter's answer), through the
    response hooks of the filters C{through} (those before the filter
    that answered).
    """
    if exchange.phase is _DONE:
        return
    exchange._drop_upstream()
    if exchange._requests is not None:
        exchange._requests.close()
    status, body = reply.status, reply.body
    headers = list(reply.headers)
    if status < 200 or status in (204, 304):
        body = b""  # these never have a body
    else:
        headers.append((b"Content-Length", b"%d" % len(body)))
    head = ResponseHead(
        status,
        reply.reason if reply.reason is not None else _reason(status),
        (1, 1),
        headers,
        body="length" if body else "none",
        content_length=len(body),
    )
    request = exchange.request
    if request is not None and request.method == b"HEAD":
        head.body = "none"
    send_local(exchange, head, body if head.body != "none" else b"", through)


def send_local(
    exchange: Exchange, head: ResponseHead, body: bytes, through: FilterChain
) -> None:
    # An answer of rproxy's own: through the response hooks of
    # C{through}, or straight to the codec.
    exchange.response = head
    exchange.phase = _DONE
    exchange._local = True
    if exchange._responses is not None:
        exchange._responses.close()
    if through.responses:
        pipe = exchange._responses = Pipe(
            exchange,
            RESPONSE,
            (through.response_head, through.response_body, through.response_end),
        )
        pipe.push(HEAD, head)
        if body:
            exchange.bytes_out += len(body)
            pipe.push(BODY, body)
        pipe.push(END, [])
        return
    exchange._responses = None
    exchange._start_response(head)
    if body:
        exchange.bytes_out += len(body)
        exchange.codec.send_body(body)
    exchange._end_response([])


def replace_response(
    exchange: Exchange, reply: LocalReply, through: FilterChain
) -> None:
    # A response filter answered instead of the backend: the backend
    # connection is not reused (its response is not read to its end).
    upstream = exchange.upstream
    if upstream is not None:
        upstream.reusable = False
    if exchange._local and not exchange.response_started:
        # In place of rproxy's own answer (an error for a failed
        # backend), which was not sent.
        exchange.phase = _PROXYING
    exchange.upstream_error = None
    exchange.reply(reply, through)


def fail_upstream(exchange: Exchange, status: int, reason: str) -> None:
    """
    The backend failed (C{reason}) before the client saw a response:
    where the route has response filters, they see rproxy's answer
    C{status} as a response head (a cache may serve a stale response in
    its place); otherwise, or once the response has begun, L{fail}.
    """
    chain = exchange._chain
    if not chain.response_head or exchange.response_started or exchange.phase is _DONE:
        exchange.fail(status)
        return
    exchange.upstream_error = reason
    exchange._drop_upstream()
    if exchange._requests is not None:
        exchange._requests.close()
    body = error_body(status)
    head = ResponseHead(
        status,
        _reason(status),
        (1, 1),
        [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", b"%d" % len(body)),
        ],
        body="length",
        content_length=len(body),
    )
    request = exchange.request
    if request is not None and request.method == b"HEAD":
        head.body = "none"
        body = b""
    send_local(exchange, head, body, chain)


def timed_out(exchange: Exchange) -> None:
    """
    Nothing moved for the response timeout: a client that stopped
    sending its body gets 408, a request filter or a backend that has
    not decided or started answering 504, and a response that stalled
    midway is cut.  A request still waiting in its pool's queue ends
    its wait there as if C{queue_timeout} had come (503).
    """
    if exchange.phase is _FILTERING:
        # A filter did not decide in time (the client is paused meanwhile).
        exchange.fail(504)
        return
    attempt = exchange._attempt
    if attempt is not None and attempt.state is AttemptState.QUEUED:
        attempt.stop_waiting()
        return
    if not exchange._request_ended and not exchange.response_started:
        exchange.fail(408)
        return
    if attempt is not None and attempt.state is AttemptState.CONNECTED:
        attempt.failed("no response in time")
    fail_upstream(exchange, 504, "no response in time")


def filter_failed(exchange: Exchange, failure: Failure) -> None:
    log.failure(
        "HTTP filter failed on {method} {target} from {client}",
        failure,
        method=exchange.request.method if exchange.request else b"",
        target=exchange.request.target if exchange.request else b"",
        client=exchange.client,
    )
    exchange.fail(500)


#: the reasons for the statuses a gave-up attempt answers.
_GAVE_UP = {
    502: "connect failed",
    503: "no backend available",
    504: "connect timed out",
}
#: the reasons when a protection of the pool refused it.
_REFUSED = {
    QUEUE_FULL: "every backend full and the queue too",
    QUEUE_TIMEOUT: "waited in the queue too long",
    RETRY_BUDGET: "no retry: the retry budget is spent",
}


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def fail(exchange: Exchange, status: int) -> None:
    """
    The exchange failed (no route, no backend, a malformed or too large
    body, a broken or silent backend): answer C{status} and close, or
    cut the client off if its response has begun.
    """
    if exchange.phase is _DONE:
        return
    exchange.phase = _DONE
    exchange._drop_upstream()
    if exchange._requests is not None:
        exchange._requests.close()
    if exchange._responses is not None:
        exchange._responses.close()
    exchange.codec.fail(exchange, status)


def give_up(exchange: Exchange, status: int | str) -> None:
    """
    The client stopped (a FIN half-way through the request, or it
    closed): record C{status} and drop the backend side.
    """
    exchange.status = status
    exchange.phase = _DONE
    exchange._drop_upstream()
    exchange.record()
