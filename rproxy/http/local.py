"""Requests an HTTP listener answers itself instead of proxying: ACME
HTTP-01 challenges and the redirect of plain HTTP to https.

An L{Answer} looks at a request head and returns a status and a whole
response (which closes the connection), or None to let the request through.
"""

from __future__ import annotations

from collections.abc import Callable

from rproxy.acme.challenges import Challenges
from rproxy.http.framing import RequestHead

__all__ = ["Answer", "acme_challenges", "first_answer", "https_redirect", "response"]

Answer = Callable[[RequestHead], tuple[int, bytes] | None]

_REASONS = {200: b"OK", 308: b"Permanent Redirect", 400: b"Bad Request"}


def response(
    status: int,
    body: bytes,
    *,
    head_only: bool = False,
    fields: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """
    A whole C{text/plain} response closing the connection; without its body
    (but with its length) if C{head_only}, as for a HEAD request.
    """
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"")),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % len(body),
        b"Cache-Control: no-store",
        *(name + b": " + value for name, value in fields),
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def acme_challenges(challenges: Challenges) -> Answer:
    """
    Answer C{GET} and C{HEAD} requests for the ACME HTTP-01 tokens
    C{challenges} holds now with their key authorizations.
    """

    def answer(head: RequestHead) -> tuple[int, bytes] | None:
        if head.method not in (b"GET", b"HEAD") or not len(challenges):
            return None
        body = challenges.answer(head.target.partition(b"?")[0])
        if body is None:
            return None
        return 200, response(200, body, head_only=head.method == b"HEAD")

    return answer


def https_redirect(port: Callable[[], int | None]) -> Answer:
    """
    Answer every request with a 308 to the same host and target over https,
    on the port C{port()} gives (left out of the URL when None or 443).  A
    request without a Host gets a 400: there is nowhere to send it.
    """

    def answer(head: RequestHead) -> tuple[int, bytes] | None:
        https = port()
        suffix = b"" if https in (None, 443) else b":%d" % https
        host = head.host
        if not host:
            return 400, response(400, b"400 Bad Request: no Host\n")
        name = _without_port(host)
        target = head.target if head.target.startswith(b"/") else b"/"
        location = b"https://" + name + suffix + target
        return 308, response(
            308,
            b"Moved to " + location + b"\n",
            head_only=head.method == b"HEAD",
            fields=((b"Location", location),),
        )

    return answer


def _without_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.rpartition(b":")[0] if b":" in host else host


def first_answer(*answers: Answer) -> Answer:
    """
    The first of C{answers} that answers a request.
    """

    def answer(head: RequestHead) -> tuple[int, bytes] | None:
        for one in answers:
            found = one(head)
            if found is not None:
                return found
        return None

    return answer
