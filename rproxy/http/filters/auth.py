"""Forward auth, as a filter: L{ForwardAuth} asks an auth service about each
request before the backend sees it (nginx C{auth_request}, Traefik
ForwardAuth, Caddy C{forward_auth}), and L{decide} turns the service's
answer into what happens to the request.

The subrequest is a C{GET} of the configured URL carrying the original
request's facts: C{X-Forwarded-Method}, C{X-Forwarded-Proto},
C{X-Forwarded-Host}, C{X-Forwarded-Uri} (the target as the client sent it),
C{X-Forwarded-For} (the real client address, L{client_address}) and the
request fields C{forward_headers} names.  The request body is never read
while the service decides: the head hook suspends the exchange and the
chain pauses the client.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rproxy.http.client_address import client_address
from rproxy.http.filters import PLAIN_TEXT, HTTPFilter, LocalReply
from rproxy.http.filters._auth_cache import ResultCache, cache_ttl, credential_key
from rproxy.http.framing import RequestHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "DEFAULT_FORWARD",
    "PASSED_FIELDS",
    "UNAVAILABLE",
    "AuthAnswer",
    "AuthSettings",
    "Decision",
    "Fetch",
    "ForwardAuth",
    "decide",
]

log = Logger(namespace="rproxy.auth")

Fields = tuple[tuple[bytes, bytes], ...]

#: the request fields sent to the auth service unless the config says others.
DEFAULT_FORWARD = ("Authorization", "Cookie")
#: the fields of a refusing (or redirecting) answer passed to the client.
PASSED_FIELDS = frozenset({b"www-authenticate", b"location", b"set-cookie"})
#: what the client gets when the auth service cannot decide.
UNAVAILABLE = LocalReply(503, PLAIN_TEXT, b"authentication unavailable\n")
#: what the filter sets, whatever the client sent.
_FORWARDED = frozenset(
    {
        b"x-forwarded-method",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-uri",
        b"x-forwarded-for",
    }
)


def _names(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(values)


@frozen
class AuthSettings:
    """
    A route's forward auth (the route key C{auth}).

    @ivar url: the auth service's URL, C{http} or C{https} (verified).
    @ivar copy_headers: fields of a 2xx answer copied into the request; a
        field of these names the client sent is always removed first.
    @ivar forward_headers: the request fields sent to the auth service.
    @ivar timeout: seconds the whole subrequest may take (then 503).
    @ivar cache: seconds a 2xx may be reused for the same credentials, at
        most; 0 asks every time.
    @ivar cache_without_directives: reuse a 2xx without C{Cache-Control} for
        C{cache} seconds (by default only one whose C{max-age} allows it).
    @ivar cache_entries: the most credentials remembered (least recently
        used go first).
    """

    url: str
    copy_headers: tuple[str, ...] = field(default=(), converter=_names)
    forward_headers: tuple[str, ...] = field(default=DEFAULT_FORWARD, converter=_names)
    timeout: float = 5.0
    cache: float = 0.0
    cache_without_directives: bool = False
    cache_entries: int = 10_000


@frozen
class AuthAnswer:
    """
    What the auth service answered: its status, fields and (bounded) body.
    """

    status: int
    headers: Fields = ()
    body: bytes = b""


@frozen
class Decision:
    """
    What to do with a request the auth service answered.

    @ivar outcome: C{"allowed"}, C{"denied"} (its answer goes to the
        client) or C{"error"} (503).
    @ivar reply: the answer for the client, None when allowed.
    @ivar copy: the fields to put in the request, when allowed.
    """

    outcome: str
    reply: LocalReply | None = None
    copy: Fields = ()


def decide(answer: AuthAnswer | None, copy: frozenset[bytes]) -> Decision:
    """
    The fate of a request, given the auth service's C{answer} (None: no
    answer: a connect failure or a timeout) and the lowercase names of the
    fields to C{copy} from a 2xx.

      - 2xx: allowed, with the C{copy} fields of the answer;
      - 401, 403 and 3xx: denied, the answer (status, body,
        C{WWW-Authenticate}, C{Location}, C{Set-Cookie}) goes to the client;
      - anything else, or no answer: 503.
    """
    if answer is None:
        return Decision("error", UNAVAILABLE)
    status = answer.status
    if 200 <= status < 300:
        kept = tuple((n, v) for n, v in answer.headers if n.lower() in copy)
        return Decision("allowed", None, kept)
    if status in (401, 403) or 300 <= status < 400:
        passed = [(n, v) for n, v in answer.headers if n.lower() in PASSED_FIELDS]
        content_type = [v for n, v in answer.headers if n.lower() == b"content-type"]
        if answer.body and content_type:
            passed.append((b"Content-Type", content_type[0]))
        passed.append((b"Cache-Control", b"no-store"))
        return Decision("denied", LocalReply(status, tuple(passed), answer.body))
    return Decision("error", UNAVAILABLE)


#: how the filter asks the auth service: C{fetch(url, headers)} fires with
#: its L{AuthAnswer} or fails (see L{rproxy.http.filters._auth_client}).
Fetch = Callable[[bytes, list[tuple[bytes, bytes]]], "Deferred[AuthAnswer]"]


class ForwardAuth(HTTPFilter):
    """
    Ask the auth service (C{fetch}) about every request of a route, before
    its later filters (a cache among them) and its backend see it.

    Each outcome counts in C{counters} (C{allowed}, C{denied}, C{errors};
    C{cached}: allowed from a remembered answer, also counted in
    C{allowed}); a request it refuses has C{refused_by = "auth"} in its
    access event.

    @param clock: times the subrequest out and ages remembered answers.
    """

    name = "auth"

    def __init__(self, settings: AuthSettings, fetch: Fetch, clock: Any) -> None:
        self.settings = settings
        self._fetch = fetch
        self._clock = clock
        self._url = settings.url.encode("ascii")
        self._copy = frozenset(
            name.lower().encode("ascii") for name in settings.copy_headers
        )
        self._forward = frozenset(
            name.lower().encode("ascii") for name in settings.forward_headers
        )
        self.counters = {"allowed": 0, "denied": 0, "errors": 0, "cached": 0}
        self.results = ResultCache(settings.cache_entries, clock)

    def request_head(
        self, exchange: Exchange, head: RequestHead
    ) -> LocalReply | Deferred[LocalReply | None] | None:
        credentials = [(n, v) for n, v in head.headers if n.lower() in self._forward]
        key = None
        if self.settings.cache > 0:
            key = credential_key(credentials)
            remembered = self.results.get(key)
            if remembered is not None:
                self.counters["cached"] += 1
                return self._apply(
                    exchange, head, Decision("allowed", None, remembered)
                )
        sent = [
            (b"X-Forwarded-Method", head.method),
            (b"X-Forwarded-Proto", exchange.settings.scheme),
            (b"X-Forwarded-Host", head.host or b""),
            (b"X-Forwarded-Uri", head.target),
            (b"X-Forwarded-For", client_address(exchange).encode("ascii")),
            *((n, v) for n, v in credentials if n.lower() not in _FORWARDED),
        ]
        asking = self._fetch(self._url, sent)
        asking.addTimeout(self.settings.timeout, self._clock)

        def answered(answer: AuthAnswer) -> LocalReply | None:
            decision = decide(answer, self._copy)
            if key is not None and decision.outcome == "allowed":
                ttl = cache_ttl(
                    answer.headers,
                    self.settings.cache,
                    self.settings.cache_without_directives,
                )
                if ttl > 0:
                    self.results.put(key, decision.copy, ttl)
            return self._apply(exchange, head, decision)

        def failed(failure: Failure) -> LocalReply | None:
            if failure.check(CancelledError):
                # The exchange ended while the service decided (its client
                # went away): the pipe cancelled the question; nothing to
                # answer, count or log.
                return None
            log.warn(
                "auth service {url} did not answer: {reason}",
                url=self.settings.url,
                reason=failure.getErrorMessage() or repr(failure.value),
            )
            return self._apply(exchange, head, decide(None, self._copy))

        return asking.addCallbacks(answered, failed)

    def _apply(
        self, exchange: Exchange, head: RequestHead, decision: Decision
    ) -> LocalReply | None:
        if decision.reply is None:
            self.counters["allowed"] += 1
            copy = self._copy
            if copy:
                head.headers = [
                    (n, v) for n, v in head.headers if n.lower() not in copy
                ]
                head.headers.extend(decision.copy)
            return None
        self.counters["denied" if decision.outcome == "denied" else "errors"] += 1
        exchange.notes["refused_by"] = "auth"
        return decision.reply
