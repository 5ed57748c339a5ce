"""The ACME HTTP-01 challenge answers, as a filter: C{GET} and C{HEAD}
requests for a token the ACME client has published get its key
authorization, on any host and before routing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rproxy.acme.challenges import Challenges
from rproxy.http.filters import PLAIN_TEXT, HTTPFilter, LocalReply
from rproxy.http.framing import RequestHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = ["AcmeChallenges"]


class AcmeChallenges(HTTPFilter):
    """
    Answer the HTTP-01 tokens C{challenges} holds now.
    """

    name = "acme-challenges"

    def __init__(self, challenges: Challenges) -> None:
        self.challenges = challenges

    def request_head(self, exchange: Exchange, head: RequestHead) -> LocalReply | None:
        challenges = self.challenges
        if head is None or head.method not in (b"GET", b"HEAD") or not len(challenges):
            return None
        body = challenges.answer(head.target.partition(b"?")[0])
        if body is None:
            return None
        return LocalReply(200, PLAIN_TEXT, body)
