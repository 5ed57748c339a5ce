"""The responses rproxy answers itself: short plain-text errors that never
carry a traceback, an address or anything the client sent."""

from __future__ import annotations

from functools import cache

REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


@cache
def error_body(status: int) -> bytes:
    """
    The plain-text body of rproxy's own C{status} answer.
    """
    return f"{status} {REASONS.get(status, 'Error')}\n".encode("ascii")


@cache
def error_response(status: int) -> bytes:
    """
    The whole response for C{status}, closing the connection.
    """
    reason = REASONS.get(status, "Error")
    body = error_body(status)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head + body
