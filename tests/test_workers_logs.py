"""Tests for a worker's log events, relayed by its supervisor."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from rproxy.workers import _logs
from rproxy.workers._control import ControlProtocol
from rproxy.workers._logs import ForwardLogs, log_message, relay


def event(**fields: Any) -> dict[str, Any]:
    return {
        "log_format": "backend {backend} is now {state}",
        "backend": "a",
        "state": "down",
        "log_level": LogLevel.warn,
        "log_namespace": "rproxy.backends",
        "log_time": 0.0,
        **fields,
    }


def test_an_event_becomes_its_level_namespace_and_text() -> None:
    """The message carries the formatted text, not the fields."""
    assert log_message(event()) == {
        "type": "log",
        "level": "warn",
        "namespace": "rproxy.backends",
        "text": "backend a is now down",
    }


def test_a_failure_keeps_its_traceback() -> None:
    """A log.failure event's traceback travels with its text."""
    try:
        raise ValueError("broken")
    except ValueError:
        failure = Failure()
    text = log_message(event(log_failure=failure))["text"]
    assert "ValueError: broken" in text and "Traceback" in text


def test_the_supervisor_logs_it_naming_the_worker() -> None:
    """relay emits the text at its level, prefixed with the worker's number."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        relay(2, log_message(event()))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    [relayed] = [
        e for e in seen if e.get("log_namespace") == _logs.worker_log.namespace
    ]
    assert relayed["log_level"] is LogLevel.warn
    assert relayed["worker"] == 2 and relayed["text"] == "backend a is now down"


def test_events_go_over_the_channel_or_else_to_standard_output(
    monkeypatch: Any,
) -> None:
    """With the channel connected an event is a message on it; without, a
    line on standard output naming the worker."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    forward = ForwardLogs(3)
    forward(event())
    assert "[worker 3] backend a is now down" in out.getvalue()
    channel = ControlProtocol(lambda m, f: None, lambda r: None)
    transport = StringTransport()
    channel.makeConnection(transport)
    forward.channel = channel
    forward(event(state="up"))
    assert b"backend a is now up" in transport.value()
    assert "now up" not in out.getvalue()
