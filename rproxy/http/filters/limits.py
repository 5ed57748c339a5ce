"""Rate limits as a filter: L{RateLimit} checks each request against one
L{Limiter} and refuses, holds or lets it on.

A refused request gets C{429 Too Many Requests} with C{Retry-After} and the
C{RateLimit-Policy} and C{RateLimit} fields of the IETF httpapi draft
(draft-ietf-httpapi-ratelimit-headers-11), and its access event names the
limiter (C{refused_by}).  With C{mode = "delay"} a request early for the
rate is held (the exchange suspended, the client not read) until it is on
it, up to the burst, as nginx's C{limit_req} without C{nodelay}; a client
that goes away while held gives its place back and leaves no timer.  A
limiter whose shared store is unreachable with C{fail = "closed"} answers
C{503}.  No refusal reads the request body: the connection closes after the
answer unless the request was read whole.

With C{headers} (off by default, as nginx, HAProxy and Envoy leave them
off), allowed responses carry the two fields too, so that a client sees its
quota run down and slows before it is refused; the filter then has a
response hook, and the response side of the filter chain costs about as
much as the check itself.  The policy
is C{"NAME";q=QUOTA;w=WINDOW} (L{policy_window}: QUOTA requests at once
every WINDOW seconds keep to the limit); the service limit is
C{"NAME";r=REMAINING;t=SECONDS}, SECONDS until the whole burst is back (on
a refusal, until one request is, the same as C{Retry-After}).  No
partition key is sent: the key may be the client's address or a credential.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from rproxy.http.filters import PLAIN_TEXT, HTTPFilter, LocalReply, Step
from rproxy.http.framing import RequestHead, ResponseHead
from rproxy.limits._local import service_limit
from rproxy.limits.gcra import SLACK, Decision, ceil_seconds
from rproxy.limits.limiter import Limiter

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["REFUSED_BY", "RateLimit"]

#: the note (in C{exchange.notes}) naming what refused a request, which its
#: access event carries as C{refused_by}.
REFUSED_BY = "refused_by"

_TOO_MANY = b"too many requests\n"
_UNAVAILABLE = b"rate limit unavailable\n"


def _sf_string(text: str) -> bytes:
    """
    C{text} as a Structured Fields string (RFC 8941 section 3.3.3).
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return b'"%s"' % escaped.encode("ascii", "replace")


class RateLimit(HTTPFilter):
    """
    Apply C{limiter} to each request (see the module's docstring).

    @param headers: add the RateLimit fields to allowed responses too (by
        default, as C{limiter.headers} says).  Without them the filter has
        no response hook, so a response costs it nothing.
    """

    def __new__(cls, limiter: Limiter, *, headers: bool | None = None) -> RateLimit:
        if cls is RateLimit and (limiter.headers if headers is None else headers):
            cls = _RateLimitFields
        return super().__new__(cls)

    def __init__(self, limiter: Limiter, *, headers: bool | None = None) -> None:
        self.limiter = limiter
        self.name = f"limit:{limiter.name}"
        self.headers = limiter.headers if headers is None else headers
        self._note = self.name
        self._id = _sf_string(limiter.name)
        self._policy = (
            b"RateLimit-Policy",
            b"%s;q=%d;w=%d" % (self._id, limiter.quota, limiter.window),
        )
        self._remaining = self._id + b";r=%d;t=%d"
        self._interval = limiter.interval
        self._tolerance = limiter.tolerance
        #: each request is checked in this process's state and let on or
        #: refused at once (no store to ask, no delay mode).
        self._at_once = limiter.store is None and not limiter.delays

    # Requests ----------------------------------------------------------------

    def request_head(self, exchange: Exchange, head: RequestHead) -> Step:
        limiter = self.limiter
        if self._at_once:
            # The per-request path, compiled: a number, not a Decision.
            backlog = limiter.take_request(exchange)
            if backlog is None:
                return None  # not counted
            if backlog <= 0:
                return self._refuse(exchange, -backlog - limiter.tolerance)
            if self.headers:
                exchange.notes[self._note] = backlog
            return None
        key = limiter.key(exchange)
        if key is None:
            return None  # not counted (see rproxy.limits.keys)
        if limiter.store is None:  # delay mode
            backlog = limiter.take(key)
            if backlog <= 0:
                return self._refuse(exchange, -backlog - limiter.tolerance)
            return self._allowed(exchange, key, backlog, None)
        decided = limiter.check(key)
        if isinstance(decided, Deferred):
            hold = _Hold(self, exchange, key)
            decided.addCallbacks(hold.decided, hold.failed)
            return hold.deferred
        return self._decided(decided, exchange, key, None)

    def _decided(
        self,
        decided: Decision | None,
        exchange: Exchange,
        key: str,
        hold: _Hold | None,
    ) -> Step:
        if decided is None:
            exchange.notes[REFUSED_BY] = self.name
            return LocalReply(503, (*PLAIN_TEXT, (b"Retry-After", b"1")), _UNAVAILABLE)
        if not decided.allowed:
            return self._refuse(exchange, decided.retry_after)
        return self._allowed(exchange, key, decided.reset, hold)

    def _allowed(
        self, exchange: Exchange, key: str, backlog: float, hold: _Hold | None
    ) -> Step:
        """
        Let a request on that left its key C{backlog} seconds ahead: at
        once, or in delay mode once it is on the rate.
        """
        if self.headers:
            exchange.notes[self._note] = backlog
        limiter = self.limiter
        if limiter.delays:
            early = backlog - limiter.interval
            if early > SLACK:
                if hold is None:
                    hold = _Hold(self, exchange, key)
                hold.hold(early)
                return hold.deferred
        return None

    def _refuse(self, exchange: Exchange, retry_after: float) -> LocalReply:
        exchange.notes[REFUSED_BY] = self.name
        seconds = b"%d" % max(ceil_seconds(retry_after), 1)
        return LocalReply(
            429,
            (
                *PLAIN_TEXT,
                (b"Retry-After", seconds),
                self._policy,
                (b"RateLimit", b"%s;r=0;t=%s" % (self._id, seconds)),
            ),
            _TOO_MANY,
        )


class _RateLimitFields(RateLimit):
    """
    A L{RateLimit} that adds the RateLimit fields to allowed responses.
    """

    def response_head(self, exchange: Exchange, head: ResponseHead) -> None:
        backlog = exchange.notes.get(self._note)
        if backlog is None:
            return
        headers = head.headers
        headers.append(self._policy)
        left = service_limit(self._remaining, backlog, self._tolerance, self._interval)
        headers.append((b"RateLimit", left))


class _Hold:
    """
    One exchange the filter suspended: waiting for the shared store's
    answer, or held until it is on the rate.  Cancelling C{deferred} (the
    exchange ended: its client went away) stops the timer and gives the
    request's place back.
    """

    __slots__ = ("deferred", "exchange", "key", "owner", "timer")

    def __init__(self, owner: RateLimit, exchange: Exchange, key: str) -> None:
        self.owner = owner
        self.exchange = exchange
        self.key = key
        self.timer: IDelayedCall | None = None
        self.deferred: Deferred[Any] = Deferred(self._cancelled)

    def decided(self, decided: Decision | None) -> None:
        """
        The store answered.
        """
        if self.deferred.called:
            return  # the exchange ended meanwhile
        step = self.owner._decided(decided, self.exchange, self.key, self)
        if step is not self.deferred:
            self.deferred.callback(step)

    def failed(self, failure: Any) -> None:
        if not self.deferred.called:
            self.deferred.errback(failure)

    def hold(self, delay: float) -> None:
        """
        Let the exchange on after C{delay} seconds.
        """
        self.owner.limiter.held += 1
        self.timer = self.exchange.clock.callLater(delay, self._release)

    def _release(self) -> None:
        self.timer = None
        self.owner.limiter.held -= 1
        self.deferred.callback(None)

    def _cancelled(self, _: object) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
            limiter = self.owner.limiter
            limiter.held -= 1
            limiter.refund(self.key)
