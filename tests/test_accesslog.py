"""The access log: rendering, writing, flushing and reopening after rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from rproxy.accesslog import (
    AccessLog,
    AccessLogService,
    access_events,
    render_combined,
    render_json,
)

TCP_EVENT = {
    "log_namespace": "rproxy.access",
    "log_time": 1795435200.25,  # 2026-11-23 12:00:00.250 UTC
    "client": "192.0.2.7",
    "listener": "db",
    "pool": "db",
    "backend": "127.0.0.1:5433",
    "status": "client reset",
    "bytes_in": 120,
    "bytes_out": 4096,
    "duration": 1.5,
    "protocol": "tcp",
}


def test_combined_renders_a_tcp_connection() -> None:
    """A TCP event reads as a combined line with a TCP request and its end."""
    assert render_combined(TCP_EVENT) == (
        '192.0.2.7 - - [23/Nov/2026:12:00:00 +0000] "TCP db" "client reset" 4096 '
        '"-" "-" pool=db backend=127.0.0.1:5433 bytes_in=120 upstream=- '
        "duration=1.500"
    )


def test_combined_renders_an_http_request() -> None:
    """An HTTP event is the classic combined line plus rproxy's fields."""
    event = dict(
        TCP_EVENT,
        method="GET",
        path="/a?b=1",
        version="HTTP/1.1",
        status=200,
        referer="https://example.com/",
        user_agent='curl/8 "x"',
        upstream_time=0.0123,
    )
    assert render_combined(event) == (
        '192.0.2.7 - - [23/Nov/2026:12:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 4096 '
        '"https://example.com/" "curl/8 \\x22x\\x22" pool=db '
        "backend=127.0.0.1:5433 bytes_in=120 upstream=0.012 duration=1.500"
    )


def test_control_characters_cannot_break_a_line() -> None:
    """Quoted fields escape newlines, so one event is one line."""
    line = render_combined(dict(TCP_EVENT, method="GET", path="/x\r\ninjected"))
    assert "\n" not in line and "\\x0d\\x0a" in line


def test_json_has_time_and_stable_keys() -> None:
    """JSON lines carry an ISO time and exactly the keys the event has."""
    record = json.loads(render_json(TCP_EVENT))
    assert record == {
        "time": "2026-11-23T12:00:00.250Z",
        "client": "192.0.2.7",
        "listener": "db",
        "protocol": "tcp",
        "status": "client reset",
        "bytes_in": 120,
        "bytes_out": 4096,
        "pool": "db",
        "backend": "127.0.0.1:5433",
        "duration": 1.5,
    }


def test_a_refusal_names_what_refused_it() -> None:
    """An event with refused_by ends its combined line with it, quoted, and
    has it in JSON."""
    event = dict(TCP_EVENT, status="refused", refused_by="max_connections_per_ip")
    assert render_combined(event).endswith(
        'duration=1.500 refused_by="max_connections_per_ip"'
    )
    assert json.loads(render_json(event))["refused_by"] == "max_connections_per_ip"
    assert "refused_by" not in render_combined(TCP_EVENT)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_writes_access_events_only_and_flushes_each_second(
    tmp_path: Path, clock: Clock
) -> None:
    """Access events are written and reach the file on the next flush; events
    of Twisted's global log (even in the access namespace) are not."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "json", clock)
    log.start()
    try:
        access_events.emit("x", **TCP_EVENT)
        Logger(namespace="rproxy.access").info("not through the access channel")
        assert path.read_text() == ""
        clock.advance(1.0)
        lines = path.read_text().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["backend"] == "127.0.0.1:5433"
    finally:
        log.stop()
    assert clock.getDelayedCalls() == []


def test_reopens_the_file_after_rotation(tmp_path: Path, clock: Clock) -> None:
    """After the file is moved away, the next flush starts a new file."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined", clock)
    log.start()
    try:
        access_events.emit("x", **TCP_EVENT)
        clock.advance(1.0)
        path.rename(tmp_path / "access.log.1")
        clock.advance(1.0)
        access_events.emit("x", **TCP_EVENT)
        clock.advance(1.0)
    finally:
        log.stop()
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 1
    assert len(path.read_text().splitlines()) == 1


def test_stopping_writes_out_what_is_buffered(tmp_path: Path, clock: Clock) -> None:
    """Lines emitted just before stop are not lost."""
    path = tmp_path / "access.log"
    service = AccessLogService(AccessLog(str(path), "combined", clock))
    service.startService()
    access_events.emit("x", **TCP_EVENT)
    service.stopService()
    assert path.read_text().count("\n") == 1


def test_an_unwritable_path_stops_startup_with_one_line(
    tmp_path: Path, clock: Clock
) -> None:
    """A log that cannot be opened refuses to start, naming the file."""
    path = tmp_path / "missing-dir" / "access.log"
    service = AccessLogService(AccessLog(str(path), "combined", clock))
    with pytest.raises(SystemExit) as raised:
        service.startService()
    assert str(raised.value) == (
        f"rproxy: cannot open the access log '{path}': No such file or directory"
    )


def test_no_observer_means_no_event_is_built() -> None:
    """With no access log, the channel reports itself inactive."""
    assert not access_events.active


def test_dash_writes_to_standard_output(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """path = "-" writes the lines to standard output."""
    log = AccessLog("-", "combined", clock)
    log.start()
    access_events.emit("x", **TCP_EVENT)
    log.stop()
    assert '"TCP db" "client reset"' in capsys.readouterr().out
