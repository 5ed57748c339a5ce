"""Tests for rproxy.testing: the README's and the module docstring's examples
run as written, the response reader, and the harness's cleanup check."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

import rproxy.testing
from rproxy.accesslog import access_events
from rproxy.testing import HTTPHarness, parse_responses, request_bytes

README = Path(__file__).parent.parent / "README.md"


def readme_example() -> str:
    """
    The Python block of the README's "Testing your own filters" section.
    """
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- example: harness -->\n```python\n(.*?)```", text, re.S)
    assert found is not None, "no harness example in the README"
    return found.group(1)


def test_readme_example_runs_as_written() -> None:
    """The README's filter test passes, and its assertions are live: it
    fails against a filter that lets every request through."""
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    tests = [name for name in namespace if name.startswith("test_")]
    assert tests == ["test_maintenance"]
    namespace["test_maintenance"]()
    made: list[HTTPHarness] = []

    class Tracked(HTTPHarness):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    namespace["HTTPHarness"] = Tracked
    namespace["Maintenance"].on = False  # a filter that lets everything through
    with pytest.raises(AssertionError):
        namespace["test_maintenance"]()
    made[0].endpoints.last.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
    made[0].close()


def test_module_docstring_example_runs_as_written() -> None:
    """The example in rproxy.testing's docstring runs without failing."""
    doc = rproxy.testing.__doc__
    assert doc is not None
    # The example: the lines indented under "::", up to the next paragraph.
    code = []
    for line in doc.split("::\n", 1)[1].splitlines():
        if line and not line.startswith("    "):
            break
        code.append(line)
    example = textwrap.dedent("\n".join(code))
    assert "harness.close()" in example
    exec(compile(example, "rproxy.testing", "exec"), {})


def test_parse_length_chunked_and_close_delimited() -> None:
    """Responses are split by their own framing: a length, chunks with
    trailers, or the connection's close."""
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nde\r\n1;x=y\r\nf\r\n0\r\nX-Sum: 9\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nto the end"
    )
    got = parse_responses(data, closed=True)
    assert [(r.status, r.framing, r.body) for r in got] == [
        (100, "none", b""),
        (200, "length", b"abc"),
        (200, "chunked", b"def"),
        (204, "none", b""),
        (200, "close", b"to the end"),
    ]
    assert got[2].trailers == [(b"X-Sum", b"9")]
    assert got[4].header(b"CONNECTION") == b"close"
    assert all(r.complete for r in got)


def test_parse_marks_what_is_incomplete() -> None:
    """A body still arriving is returned as far as it came, incomplete."""
    (short,) = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert (short.body, short.complete) == (b"ab", False)
    (chunks,) = parse_responses(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    assert (chunks.body, chunks.complete) == (b"abc", False)
    (open_,) = parse_responses(b"HTTP/1.1 200 OK\r\n\r\nso far")
    assert (open_.body, open_.complete) == (b"so far", False)
    (head,) = parse_responses(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head=True
    )
    assert (head.body, head.complete) == (b"", True)


def test_request_bytes_adds_host_and_length() -> None:
    """A built request has a Host and a Content-Length for its body, unless
    given."""
    assert request_bytes("POST", "/a", body=b"xy") == (
        b"POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nxy"
    )
    assert request_bytes("GET", headers=[("host", "b")], version="HTTP/1.0") == (
        b"GET / HTTP/1.0\r\nhost: b\r\n\r\n"
    )


def test_close_fails_on_a_timer_left_behind() -> None:
    """close() closes open connections (their timers go) but fails when a
    delayed call is still on the clock, and stops collecting events."""
    harness = HTTPHarness()
    client = harness.request("GET", "/")
    harness.backend_responds(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert harness.clock.getDelayedCalls()  # keep-alive timers
    harness.clock.callLater(1.0, lambda: None)
    with pytest.raises(AssertionError, match="delayed calls left"):
        harness.close()
    assert client.closed
    assert not access_events.active


def test_responding_on_a_cancelled_connect_is_an_error() -> None:
    """A backend cannot answer a connect the proxy gave up on."""
    harness = HTTPHarness()
    client = harness.request("GET", "/")
    client.close()
    assert harness.endpoints.last.cancelled
    with pytest.raises(AssertionError, match="cancelled"):
        harness.backend_responds(b"HTTP/1.1 200 OK\r\n\r\n")
    harness.close()
