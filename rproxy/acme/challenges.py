"""ACME HTTP-01 challenge answers, shared between the ACME client that
publishes them and the plain HTTP listeners that serve them."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CHALLENGE_PREFIX", "Challenges"]

#: Where an ACME server asks for a token (RFC 8555, section 8.3).
CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"


class Challenges:
    """
    The key authorizations of the HTTP-01 challenges in progress, by token.

    The ACME client L{publish}es one before telling the server to validate
    and L{withdraw}s it afterwards; HTTP listeners answer
    C{GET /.well-known/acme-challenge/TOKEN} with L{answer}.
    """

    def __init__(self) -> None:
        self._answers: dict[str, bytes] = {}
        self._observers: list[Callable[[str, str | None], None]] = []

    def observe(self, observer: Callable[[str, str | None], None]) -> None:
        """
        Call C{observer(token, key_authorization)} after every L{publish},
        and C{observer(token, None)} after every L{withdraw} (the workers'
        supervisor passes them on to the workers that serve them).
        """
        self._observers.append(observer)

    def __len__(self) -> int:
        return len(self._answers)

    def publish(self, token: str, key_authorization: str) -> None:
        """
        Answer requests for C{token} with C{key_authorization}.
        """
        self._answers[token] = key_authorization.encode("ascii")
        for observer in self._observers:
            observer(token, key_authorization)

    def withdraw(self, token: str) -> None:
        """
        Stop answering for C{token}.
        """
        self._answers.pop(token, None)
        for observer in self._observers:
            observer(token, None)

    def answer(self, path: bytes) -> bytes | None:
        """
        The body to send for a request to C{path}, or None if C{path} is not
        a challenge in progress.
        """
        if not path.startswith(CHALLENGE_PREFIX):
            return None
        token = path[len(CHALLENGE_PREFIX) :].decode("ascii", "replace")
        return self._answers.get(token)
