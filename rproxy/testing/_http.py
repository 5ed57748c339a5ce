"""Reading what an HTTP client received (L{parse_responses}) and writing
what it sends (L{request_bytes}), independently of rproxy's own codec."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

__all__ = ["Response", "parse_responses", "request_bytes"]

Fields = list[tuple[bytes, bytes]]


@frozen
class Response:
    """
    One response as a client read it.

    @ivar framing: how its body was delimited: C{"length"}
        (Content-Length), C{"chunked"}, C{"close"} (by closing the
        connection) or C{"none"}.
    @ivar complete: its end was read (a close-delimited body: the
        connection is closed).
    """

    status: int
    reason: bytes
    headers: Fields
    body: bytes
    framing: str
    trailers: Fields
    complete: bool

    def header(self, name: bytes) -> bytes | None:
        """
        The value of the first field called C{name} (any case), or None.
        """
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def headers_named(self, name: bytes) -> list[bytes]:
        """
        The values of every field called C{name} (any case), in order.
        """
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_responses(
    data: bytes, *, closed: bool = False, head: bool = False
) -> list[Response]:
    """
    The HTTP/1.x responses in C{data}, the bytes a client received; the last
    may be incomplete.  C{closed}: the connection has closed since;
    C{head}: they answer HEAD requests (no bodies).
    """
    responses = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            raise AssertionError(f"no whole response head in {data!r}")
        line, *lines = data[:end].decode("latin-1").split("\r\n")
        data = data[end + 4 :]
        version, status, reason = [*line.split(" ", 2), ""][:3]
        assert version.startswith("HTTP/1."), f"not a status line: {line!r}"
        headers = [_field(one) for one in lines]
        code = int(status)
        names = {name.lower(): value for name, value in headers}
        trailers: Fields = []
        complete = True
        if head or 100 <= code < 200 or code in (204, 304):
            framing, body = "none", b""
        elif b"chunked" in names.get(b"transfer-encoding", b"").lower():
            framing = "chunked"
            body, trailers, data, complete = _unchunk(data)
        elif b"content-length" in names:
            framing, size = "length", int(names[b"content-length"])
            body, data = data[:size], data[size:]
            complete = len(body) == size
        else:
            framing, body, data, complete = "close", data, b"", closed
        responses.append(
            Response(code, reason.encode("latin-1"), headers, body, framing,
                     trailers, complete)
        )  # fmt: skip
    return responses


def _field(line: str) -> tuple[bytes, bytes]:
    name, _, value = line.partition(":")
    return name.encode("latin-1"), value.strip().encode("latin-1")


def _unchunk(data: bytes) -> tuple[bytes, Fields, bytes, bool]:
    body = b""
    while True:
        end = data.find(b"\r\n")
        if end < 0:
            return body, [], b"", False
        size = int(data[:end].split(b";")[0], 16)
        if size == 0:
            rest = data[end + 2 :]
            close = rest.find(b"\r\n\r\n") if not rest.startswith(b"\r\n") else -2
            if close == -1:
                return body, [], b"", False
            section = rest[:close].decode("latin-1") if close > 0 else ""
            trailers = [_field(one) for one in section.split("\r\n") if one]
            return body, trailers, rest[close + 4 :], True
        chunk = data[end + 2 : end + 2 + size]
        if len(chunk) < size or data[end + 2 + size : end + 4 + size] != b"\r\n":
            return body + chunk, [], b"", False
        body += chunk
        data = data[end + 4 + size :]


def request_bytes(
    method: str,
    target: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    host: str = "example.com",
    version: str = "HTTP/1.1",
) -> bytes:
    """
    A request as a client sends it: C{Host} and C{Content-Length} are added
    unless C{headers} has them (or a C{Transfer-Encoding}).
    """
    names = {name.lower() for name, _ in headers}
    fields = list(headers)
    if "host" not in names:
        fields.insert(0, ("Host", host))
    if body and not names & {"content-length", "transfer-encoding"}:
        fields.append(("Content-Length", str(len(body))))
    lines = [f"{method} {target} {version}", *(f"{n}: {v}" for n, v in fields)]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body
