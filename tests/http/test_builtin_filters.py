"""Tests for the built-in filters: requests an HTTP listener answers itself
(ACME HTTP-01 challenges, the redirect to https), alone and through the
HTTP/1.1 codec, and the response fields a TLS listener adds (HSTS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rproxy.acme.challenges import Challenges
from rproxy.backends import Backend, Pool, Registry
from rproxy.http.filters import LocalReply
from rproxy.http.filters.acme import AcmeChallenges
from rproxy.http.filters.redirect import HTTPSRedirect
from rproxy.http.framing import Limits, RequestHead, parse_request_head
from rproxy.http.h1 import H1Connection
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.testing import FakeEndpoints, HalfCloseTransport, captured_access, connect

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
CHALLENGE_PATH = b"/.well-known/acme-challenge/" + TOKEN.encode()


def head(request: bytes) -> RequestHead:
    """
    The parsed head of the raw request C{request}.
    """
    return parse_request_head(request, Limits())


def get(
    target: bytes, *, host: bytes = b"example.com", method: bytes = b"GET"
) -> RequestHead:
    """
    An HTTP/1.1 request for C{target} on C{host}.
    """
    return head(method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")


PLAIN = (
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"Cache-Control", b"no-store"),
)

Answer = Callable[[RequestHead], "LocalReply | None"]


class _Asked:
    """What a request-head hook reads of an exchange: its request."""

    def __init__(self, request: RequestHead) -> None:
        self.request = request


def answering(one: Any) -> Answer:
    """
    Ask filter C{one}'s request-head hook about a request head.
    """

    def ask(request: RequestHead) -> LocalReply | None:
        reply = one.request_head(_Asked(request), request)
        assert reply is None or isinstance(reply, LocalReply)
        return reply

    return ask


def acme_challenges(challenges: Challenges) -> Answer:
    return answering(AcmeChallenges(challenges))


def https_redirect(port: Callable[[], int | None]) -> Answer:
    return answering(HTTPSRedirect(port))


def challenge_reply(body: bytes) -> LocalReply:
    """
    The local reply expected for a challenge answered with C{body}.
    """
    return LocalReply(200, PLAIN, body)


def challenge_response(body: bytes, *, with_body: bool = True) -> bytes:
    """
    The whole response the client gets for a challenge answered with C{body}.
    """
    return (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Cache-Control: no-store\r\n"
        b"Content-Length: %d\r\n"
        b"\r\n" % len(body)
    ) + (body if with_body else b"")


def published() -> Challenges:
    """
    Challenges with L{TOKEN} published.
    """
    challenges = Challenges()
    challenges.publish(TOKEN, KEY_AUTHORIZATION)
    return challenges


def location(answered: LocalReply | None) -> bytes | None:
    """
    The Location field of a local reply.
    """
    assert answered is not None
    for name, value in answered.headers:
        if name.lower() == b"location":
            return value
    return None


class AcmeChallengeTests(SynchronousTestCase):
    """acme_challenges answers exactly the tokens published, only to GET and
    HEAD."""

    def test_get_is_answered_with_the_key_authorization(self) -> None:
        """GET for a published token gets 200 with exactly its key
        authorization as a text/plain response."""
        answered = acme_challenges(published())(get(CHALLENGE_PATH))
        self.assertEqual(answered, challenge_reply(KEY_AUTHORIZATION.encode()))

    def test_head_is_answered_like_get(self) -> None:
        """HEAD gets the same reply (the codec sends its head only)."""
        answered = acme_challenges(published())(get(CHALLENGE_PATH, method=b"HEAD"))
        self.assertEqual(answered, challenge_reply(KEY_AUTHORIZATION.encode()))

    def test_query_string_is_ignored(self) -> None:
        """The token is the path; a query string does not hide it."""
        answered = acme_challenges(published())(get(CHALLENGE_PATH + b"?x=1"))
        self.assertEqual(answered, challenge_reply(KEY_AUTHORIZATION.encode()))

    def test_absolute_form_target_is_answered(self) -> None:
        """A request with an absolute-form target is answered like its
        origin form."""
        answered = acme_challenges(published())(
            head(b"GET http://example.com" + CHALLENGE_PATH + b" HTTP/1.1\r\n\r\n")
        )
        self.assertEqual(answered, challenge_reply(KEY_AUTHORIZATION.encode()))

    def test_other_requests_pass(self) -> None:
        """Unknown tokens, other paths, a token with more path after it and
        other methods are not answered."""
        answer = acme_challenges(published())
        prefix = b"/.well-known/acme-challenge/"
        for request in [
            get(prefix + b"unknown"),
            get(prefix),
            get(CHALLENGE_PATH + b"/more"),
            get(b"/" + TOKEN.encode()),
            get(b"/"),
            get(CHALLENGE_PATH, method=b"POST"),
            get(CHALLENGE_PATH, method=b"PUT"),
            get(CHALLENGE_PATH, method=b"DELETE"),
        ]:
            self.assertIsNone(answer(request), (request.method, request.target))

    def test_nothing_published_answers_nothing(self) -> None:
        """With no challenge in progress every request passes."""
        answer = acme_challenges(Challenges())
        self.assertIsNone(answer(get(CHALLENGE_PATH)))
        self.assertIsNone(answer(get(b"/.well-known/acme-challenge/")))

    def test_withdrawn_token_is_no_longer_answered(self) -> None:
        """After withdraw the token's requests pass; others still answer."""
        challenges = published()
        challenges.publish("other", "other.key")
        answer = acme_challenges(challenges)
        challenges.withdraw(TOKEN)
        self.assertIsNone(answer(get(CHALLENGE_PATH)))
        self.assertEqual(
            answer(get(b"/.well-known/acme-challenge/other")),
            challenge_reply(b"other.key"),
        )

    def test_published_later_is_answered(self) -> None:
        """The answer sees tokens published after it was made."""
        challenges = Challenges()
        answer = acme_challenges(challenges)
        challenges.publish(TOKEN, KEY_AUTHORIZATION)
        self.assertIsNotNone(answer(get(CHALLENGE_PATH)))


class HTTPSRedirectTests(SynchronousTestCase):
    """https_redirect sends every request to the same URL over https."""

    def test_redirect_is_308_to_https_keeping_target_and_query(self) -> None:
        """A request gets a 308 whose Location is the https URL of the same
        host and target, query included."""
        answered = https_redirect(lambda: None)(get(b"/a/b?c=d&e", host=b"example.com"))
        assert answered is not None
        self.assertEqual(answered.status, 308)
        self.assertEqual(location(answered), b"https://example.com/a/b?c=d&e")
        self.assertEqual(answered.body, b"Moved to https://example.com/a/b?c=d&e\n")

    def test_request_port_is_dropped(self) -> None:
        """The port of the plain request's Host is not the https port."""
        answered = https_redirect(lambda: None)(get(b"/x", host=b"example.com:8080"))
        self.assertEqual(location(answered), b"https://example.com/x")

    def test_port_443_is_left_out(self) -> None:
        """The default https port is not written."""
        answered = https_redirect(lambda: 443)(get(b"/x", host=b"example.com:80"))
        self.assertEqual(location(answered), b"https://example.com/x")

    def test_other_https_port_is_written(self) -> None:
        """Another https port is written after the host."""
        answered = https_redirect(lambda: 8443)(get(b"/x", host=b"example.com:8080"))
        self.assertEqual(location(answered), b"https://example.com:8443/x")

    def test_port_is_asked_at_each_request(self) -> None:
        """The https port is looked up per request (it is known only once
        the TLS listener listens)."""
        ports: list[int | None] = [None, 8443]
        redirect = https_redirect(lambda: ports[0])
        self.assertEqual(location(redirect(get(b"/"))), b"https://example.com/")
        ports[0] = ports[1]
        self.assertEqual(location(redirect(get(b"/"))), b"https://example.com:8443/")

    def test_ipv6_hosts_keep_their_brackets(self) -> None:
        """A bracketed IPv6 host stays bracketed, its own port dropped."""
        redirect = https_redirect(lambda: 8443)
        self.assertEqual(
            location(redirect(get(b"/x", host=b"[2001:db8::1]:8080"))),
            b"https://[2001:db8::1]:8443/x",
        )
        self.assertEqual(
            location(https_redirect(lambda: None)(get(b"/x", host=b"[::1]"))),
            b"https://[::1]/x",
        )

    def test_absolute_form_uses_its_authority(self) -> None:
        """An absolute-form request is sent to its own authority and path."""
        answered = https_redirect(lambda: None)(
            head(b"GET http://example.org:8080/p?q HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        self.assertEqual(location(answered), b"https://example.org/p?q")

    def test_asterisk_form_goes_to_the_root(self) -> None:
        """OPTIONS * has no path to keep: it goes to /."""
        answered = https_redirect(lambda: None)(get(b"*", method=b"OPTIONS"))
        self.assertEqual(location(answered), b"https://example.com/")

    def test_no_host_is_400(self) -> None:
        """An HTTP/1.0 request without Host cannot be redirected: 400."""
        answered = https_redirect(lambda: None)(head(b"GET /x HTTP/1.0\r\n\r\n"))
        assert answered is not None
        self.assertEqual(answered.status, 400)
        self.assertIsNone(location(answered))


# Through the HTTP front protocol --------------------------------------------------


class _FrontCase(SynchronousTestCase):
    """One pool of one backend behind fake endpoints, on a Clock."""

    add: tuple[tuple[bytes, bytes], ...] = ()

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend("127.0.0.1", 8001)
        self.pool = Pool("web", [self.backend], now=self.clock.seconds)
        self.endpoints = FakeEndpoints()
        self.challenges = published()
        self.factory = HTTPProxyFactory(
            Registry([self.pool]),
            self.clock,
            HTTPSettings(
                listener="front",
                router=Router([Route(pool="web")]),
                filters=self.make_filters(),
                add_response_headers=self.add,
            ),
            endpoint_for=self.endpoints,
        )

    def make_filters(self) -> tuple[Any, ...]:
        return ()

    def tearDown(self) -> None:
        self.factory.keep_alive.close_all()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def client(self) -> tuple[H1Connection, HalfCloseTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        return proto, connect(proto, HalfCloseTransport())


class AnsweringFrontTests(_FrontCase):
    """A listener with the AcmeChallenges filter."""

    def make_filters(self) -> tuple[Any, ...]:
        return (AcmeChallenges(self.challenges),)

    def test_challenge_is_answered_without_a_backend(self) -> None:
        """A challenge request is answered by the listener itself, which
        connects to no backend, logs the exchange and keeps the connection
        for the next request."""
        proto, transport = self.client()
        with captured_access() as events:
            proto.dataReceived(
                b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n"
            )
        self.assertEqual(
            transport.value(), challenge_response(KEY_AUTHORIZATION.encode())
        )
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])
        self.assertEqual([e["status"] for e in events], [200])
        transport.loseConnection()

    def test_head_gets_the_head_only(self) -> None:
        """A HEAD challenge gets the same head, Content-Length included, and
        no body."""
        proto, transport = self.client()
        proto.dataReceived(b"HEAD " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            transport.value(),
            challenge_response(KEY_AUTHORIZATION.encode(), with_body=False),
        )
        transport.loseConnection()

    def test_pipelined_request_after_a_challenge_is_proxied_in_turn(self) -> None:
        """A request pipelined behind an answered challenge is proxied after
        it, on the same connection."""
        proto, transport = self.client()
        proto.dataReceived(
            b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(
            transport.value(), challenge_response(KEY_AUTHORIZATION.encode())
        )
        server = self.endpoints.last.succeed()
        self.assertTrue(server.value().startswith(b"GET /next HTTP/1.1\r\n"))
        server.loseConnection()
        transport.loseConnection()

    def test_a_challenge_with_a_body_closes_after_the_answer(self) -> None:
        """A request answered before its body was read gets the answer and
        the connection closes (the rest of the body is not read)."""
        proto, transport = self.client()
        proto.dataReceived(
            b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n"
            b"Content-Length: 10\r\n\r\nabc"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoints.attempts, [])

    def test_other_requests_are_proxied(self) -> None:
        """A request the answer does not take goes to the backend."""
        proto, transport = self.client()
        proto.dataReceived(b"GET /app HTTP/1.1\r\nHost: a\r\n\r\n")
        server = self.endpoints.last.succeed()
        self.assertTrue(server.value().startswith(b"GET /app HTTP/1.1\r\n"))
        self.endpoints.last.protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertFalse(transport.disconnecting)
        server.loseConnection()
        transport.loseConnection()

    def test_withdrawn_challenge_is_proxied(self) -> None:
        """Once withdrawn, the token's path is an ordinary request."""
        self.challenges.withdraw(TOKEN)
        proto, transport = self.client()
        proto.dataReceived(b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.assertEqual(transport.value(), b"")
        self.endpoints.last.fail(ConnectionRefusedError())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))


class RedirectListenerTests(_FrontCase):
    """A plain listener answering challenges, then redirecting to https."""

    def make_filters(self) -> tuple[Any, ...]:
        return (AcmeChallenges(self.challenges), HTTPSRedirect(lambda: 8443))

    def test_redirects_and_answers_challenges_never_connecting(self) -> None:
        """Challenges get their key authorization, everything else a 308;
        no backend is ever connected to."""
        proto, transport = self.client()
        proto.dataReceived(b"GET /x?y HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
        )
        self.assertIn(
            b"\r\nLocation: https://example.com:8443/x?y\r\n", transport.value()
        )
        self.assertFalse(transport.disconnecting)
        transport.loseConnection()
        proto, transport = self.client()
        proto.dataReceived(b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            transport.value(), challenge_response(KEY_AUTHORIZATION.encode())
        )
        self.assertEqual(self.endpoints.attempts, [])
        transport.loseConnection()

    def test_challenges_before_redirect(self) -> None:
        """The listener's filters run in order: a challenge is answered, not
        redirected."""
        proto, transport = self.client()
        proto.dataReceived(b"GET " + CHALLENGE_PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.dataReceived(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        value = transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"HTTP/1.1 308 Permanent Redirect\r\n", value)
        transport.loseConnection()


class AddedResponseHeaderTests(_FrontCase):
    """add_response_headers (HSTS on TLS listeners)."""

    add = ((b"Strict-Transport-Security", b"max-age=1"),)

    def respond(self, response: bytes) -> bytes:
        """
        Proxy one request answered by the backend with C{response}; return
        what the client got.
        """
        proto, transport = self.client()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        server = self.endpoints.last.succeed()
        self.endpoints.last.protocol.dataReceived(response)
        server.loseConnection()
        return transport.value()

    def test_field_is_added_when_the_backend_has_none(self) -> None:
        """A response without the field gets it."""
        got = self.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        head, _, body = got.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nStrict-Transport-Security: max-age=1", head)
        self.assertEqual(body, b"ok")

    def test_backend_value_is_kept(self) -> None:
        """A response with its own field, in any case, keeps its value and
        gets no second one."""
        got = self.respond(
            b"HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=99\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        head = got.partition(b"\r\n\r\n")[0].lower()
        self.assertEqual(head.count(b"strict-transport-security"), 1)
        self.assertIn(b"strict-transport-security: max-age=99", head)
