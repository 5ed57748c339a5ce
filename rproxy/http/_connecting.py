"""An exchange's request on its way to a backend: routed, the attempt
(pick, connect, retry), an idle backend connection reused, the request
sent on the connection attached, and a backend connection that failed
under it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.attempts import BackendAttempt
from rproxy.backends import Pool
from rproxy.http import _answers
from rproxy.http._phase import Phase, retryable
from rproxy.http.messages import header
from rproxy.http.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange
    from rproxy.http.framing import RequestHead

__all__ = ["attach", "connect", "hash_key", "route", "upstream_failed"]

_CONNECTING = Phase.CONNECTING
_PROXYING = Phase.PROXYING
_DONE = Phase.DONE


def route(exchange: Exchange, head: RequestHead) -> bool:
    """
    Route C{exchange} (404 when no route takes it, 503 when its pool is
    gone) and find its filters; whether it was routed.
    """
    settings = exchange.settings
    match = settings.router.route(head.host, head.target)
    if match is None:
        exchange.fail(404)
        return False
    exchange.route = route = match.route
    exchange.target = match.target
    try:
        exchange.pool = exchange.factory.registry.get(route.pool)
    except KeyError:
        exchange.fail(503)
        return False
    if not settings.plain:
        found = settings.chains.get(id(route))
        exchange._chain = (
            found[1]
            if found is not None and found[0] is route
            else settings.chain_for(route)
        )
    return True


def hash_key(exchange: Exchange, pool: Pool) -> str | None:
    header_name = pool.policy.hash_key.header
    if header_name is None:
        return exchange.client
    request = exchange.request
    value = header(request.headers, header_name) if request is not None else None
    return value.decode("latin-1") if value is not None else None


def connect(exchange: Exchange) -> None:
    """
    Send the request to the backends the pool gives, reusing an idle
    connection to one if there is one (L{BackendAttempt}: it answers
    503 when no backend was up, 504 when the last connect timed out, as
    nginx does, and 502 otherwise).
    """
    pool = exchange.pool
    assert pool is not None
    exchange._attempt = attempt = BackendAttempt(
        pool,
        exchange.clock,
        exchange.factory.endpoint_for,
        exchange._upstream_factory,
        connected=exchange._connected,
        gave_up=exchange._gave_up,
        key=hash_key(exchange, pool),
        client=exchange.codec.transport,
        reuse=exchange._reuse,
    )
    exchange.tried = attempt.tried
    attempt.start()


def attach(exchange: Exchange, upstream: UpstreamProtocol) -> None:
    # Success is reported to the pool when the response has come, not
    # here: a backend that accepts connections but answers garbage,
    # resets or never answers must run up failures.
    head, backend = exchange.request, exchange.backend
    assert head is not None and backend is not None
    exchange.phase = _PROXYING
    exchange.upstream = upstream
    upstream.start(exchange, head.method, upgrade=head.upgrade is not None)
    settings = exchange.settings
    upstream.send_request(
        head,
        exchange.target,
        backend.address_bytes,
        exchange.client,
        settings.scheme,
        settings.policy,
    )
    exchange._upstream_started = exchange.last_io = exchange.clock.seconds()
    codec = exchange.codec
    timeout = exchange.response_timeout
    if timeout < settings.shortest_timeout:
        codec.wake_by(exchange.last_io + timeout)
    if head.body == "none":
        exchange._request_sent = exchange._request_ended = True
        codec.body_forwarded()
        return
    upstream.set_producer(codec.producer())
    held, exchange._held = exchange._held, None
    exchange._held_size = 0
    for data in held or ():
        upstream.send_body(data)
    if exchange._request_ended:
        exchange._body_sent()
    else:
        codec.resume_reading()


def upstream_failed(exchange: Exchange, reason: str, status: int) -> None:
    upstream, request, attempt = exchange.upstream, exchange.request, exchange._attempt
    exchange.upstream = None
    if exchange.phase is _DONE or attempt is None:
        exchange._release_backend()
        return
    assert request is not None
    received = upstream is not None and upstream.received_any
    # A reused connection the backend had closed meanwhile is not the
    # backend's fault, and the same backend may be asked again.
    forget = attempt.reused and not received
    if not exchange.response_started and not received and retryable(request):
        exchange.phase = _CONNECTING
        attempt.retry(reason, forget=forget)
        return
    if forget:
        attempt.release()
    else:
        attempt.failed(reason)
    _answers.fail_upstream(exchange, status, reason)
