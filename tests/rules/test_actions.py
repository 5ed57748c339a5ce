"""What request rules do when they match, through the HTTP codec on a Clock:
deny, allow, log (a dry run), tarpit, set_header; first match wins; body
size limits on Content-Length and on a chunked body as it streams; hit
counts, log events and the access event's refused_by."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from rproxy.http.filters import HTTPFilter, IHTTPFilter
from rproxy.http.filters.rules import BodyRulesFilter, RulesFilter
from rproxy.http.framing import ResponseHead
from tests.rules.support import Rig

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def rig(rigs: list[Rig], text: str, **kwargs: Any) -> Rig:
    made = Rig(text, **kwargs)
    rigs.append(made)
    return made


def test_filters_provide_the_interface(rigs: list[Rig]) -> None:
    """A rule set's filter is an IHTTPFilter named after the set; one with
    body-size rules also counts request bodies."""
    plain = rig(rigs, "[rules.t]\ndeny = [{ method = 'TRACE' }]\n").rules.filter
    body = rig(rigs, "[rules.t]\nmax_body = 10\n").rules.filter
    verifyObject(IHTTPFilter, plain)
    assert (type(plain), plain.name) == (RulesFilter, "rules:t")
    assert type(body) is BodyRulesFilter


def test_deny_answers_its_status_and_keeps_the_connection(rigs: list[Rig]) -> None:
    """A deny rule answers 403 (or its status) in plain text without asking
    a backend; the connection stays open for the next request."""
    r = rig(
        rigs, "[rules.t]\ndeny = [{ path = '/a' }, { path = '/b', status = 451 }]\n"
    )
    client = r.send("GET", "/a")
    response = client.response()
    assert (response.status, response.body) == (403, b"403 Error\n")
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    assert not client.closed
    assert r.harness.endpoints.attempts == []
    assert r.verdict("GET", "/b") == 451
    r.send("GET", "/c", client=client)
    r.harness.backend_responds(OK)
    assert client.responses()[-1].status == 200


def test_deny_of_a_head_request_has_no_body(rigs: list[Rig]) -> None:
    """A HEAD request denied gets the head only."""
    r = rig(rigs, "[rules.t]\ndeny = [{ path = '/a' }]\n")
    client = r.send("HEAD", "/a")
    response = client.response(head=True)
    assert (response.status, response.body) == (403, b"")


def test_first_match_wins(rigs: list[Rig]) -> None:
    """The first deny, allow or tarpit rule that matches decides: an allow
    before a deny lets the request through, a deny before it refuses it."""
    allow_first = """[rules.t]
[[rules.t.rule]]
action = "allow"
client = "10.0.0.0/8"
[[rules.t.rule]]
action = "deny"
path_prefix = "/admin/"
"""
    r = rig(rigs, allow_first)
    assert r.verdict("GET", "/admin/x", client=r.connect("10.1.1.1")) == "passed"
    assert r.verdict("GET", "/admin/x", client=r.connect("192.0.2.1")) == 403
    deny_first = """[rules.t]
[[rules.t.rule]]
action = "deny"
path_prefix = "/admin/"
[[rules.t.rule]]
action = "allow"
client = "10.0.0.0/8"
"""
    r = rig(rigs, deny_first)
    assert r.verdict("GET", "/admin/x", client=r.connect("10.1.1.1")) == 403
    assert r.hits() == {"t.rule[0]": 1, "t.rule[1]": 0}


def test_shorthand_order(rigs: list[Rig]) -> None:
    """Shorthand arrays are evaluated after the rule tables, as log,
    set_header, allow, deny, tarpit: an allow shorthand exempts a client
    from the deny shorthand whatever their order in the file."""
    r = rig(
        rigs,
        """[rules.t]
deny = [{ path_prefix = "/" }]
allow = [{ client = "10.0.0.0/8" }]
""",
    )
    assert r.verdict(client=r.connect("10.0.0.1")) == "passed"
    assert r.verdict(client=r.connect("192.0.2.1")) == 403
    assert [rule.name for rule in r.rules.rules] == ["t.allow[0]", "t.deny[0]"]


def test_log_rules_are_a_dry_run(rigs: list[Rig]) -> None:
    """A log rule counts and logs its hits and acts on nothing: the request
    goes on through the later rules (here to a deny) or to the backend."""
    r = rig(
        rigs,
        """[rules.t]
log = [{ name = "would-block", path_prefix = "/x" }]
deny = [{ path = "/x/deny" }]
""",
    )
    assert r.verdict("GET", "/x/ok") == "passed"
    assert r.verdict("GET", "/x/deny") == 403
    assert r.hits() == {"would-block": 2, "t.deny[0]": 1}
    (first, _, third) = r.logged
    assert (first["rule"], first["action"], first["target"]) == (
        "would-block",
        "log",
        "/x/ok",
    )
    assert (third["rule"], third["action"]) == ("t.deny[0]", "deny")
    assert (first["rules"], first["client"], first["method"]) == (
        "t",
        "192.0.2.7",
        "GET",
    )
    refused = [event.get("refused_by") for event in r.access]
    assert refused == ["t.deny[0]"]  # the passed request has no event yet


def test_refusals_name_their_rule_in_the_access_event(rigs: list[Rig]) -> None:
    """The access event of a refused request names the rule; one let
    through names none."""
    r = rig(rigs, "[rules.t]\ndeny = [{ name = 'no-trace', method = 'TRACE' }]\n")
    r.send("TRACE", "/")
    assert r.refused_by() == "no-trace"
    assert r.access[-1]["status"] == 403
    r.send("GET", "/")
    r.harness.backend_responds(OK)
    assert r.access[-1]["status"] == 200
    assert r.refused_by() is None


def test_allow_hits_are_counted_not_logged(rigs: list[Rig]) -> None:
    """An allow rule's hits count; they are not logged (they refuse
    nothing)."""
    r = rig(rigs, "[rules.t]\nallow = [{ path = '/' }]\n")
    assert r.verdict() == "passed"
    assert r.hits() == {"t.allow[0]": 1}
    assert r.logged == []


def test_set_header_sets_request_fields_and_goes_on(rigs: list[Rig]) -> None:
    """A set_header rule replaces the client's fields of that name, and the
    rules after it still run."""
    r = rig(
        rigs,
        """[rules.t]
set_header = [{ header = "User-Agent", contains = "bot", set = { X-Suspect = "bot" } }]
deny = [{ path = "/deny" }]
""",
    )
    headers = [("User-Agent", "somebot/1"), ("x-suspect", "no")]
    assert r.verdict("GET", "/deny", headers=headers) == 403
    assert r.verdict("GET", "/ok", headers=headers) == "passed"
    attempt = r.harness.endpoints.last
    attempt.succeed()
    sent = attempt.received
    assert b"X-Suspect: bot\r\n" in sent
    assert b"x-suspect: no" not in sent.lower()
    assert r.hits() == {"t.set_header[0]": 2, "t.deny[0]": 1}


def test_tarpit_holds_then_drops(rigs: list[Rig]) -> None:
    """A tarpit rule holds the request for its seconds (no answer, no
    backend, the client not read) and then resets the connection."""
    r = rig(rigs, "[rules.t]\ntarpit = [{ path = '/wp-login.php', seconds = 5 }]\n")
    client = r.send("GET", "/wp-login.php")
    assert client.received == b""
    assert client.paused
    assert r.rules.tarpit.held == 1
    r.clock.advance(4.9)
    assert not client.closed
    r.clock.advance(0.1)
    assert client.transport.aborted and client.received == b""
    assert r.rules.tarpit.held == 0
    assert r.harness.endpoints.attempts == []
    assert r.access[-1]["status"] == "-"
    assert r.refused_by() == "t.tarpit[0]"
    assert r.logged[-1]["action"] == "tarpit"


def test_tarpit_holds_a_bounded_number(rigs: list[Rig]) -> None:
    """Past tarpit_max_held requests held at once, one more is dropped at
    once (an overflow); a held request whose client left is let go when
    its time is up."""
    r = rig(
        rigs,
        "[rules.t]\ntarpit_max_held = 2\ntarpit = [{ path = '/x', seconds = 5 }]\n",
    )
    first, second = r.send("GET", "/x"), r.send("GET", "/x")
    third = r.send("GET", "/x")
    r.clock.advance(0)
    assert third.transport.aborted
    assert (r.rules.tarpit.held, r.rules.tarpit.overflows) == (2, 1)
    first.close()
    assert r.rules.tarpit.held == 2  # until its five seconds are up
    r.clock.advance(5)
    assert second.transport.aborted
    assert (r.rules.tarpit.held, r.hits()) == (0, {"t.tarpit[0]": 3})
    assert [event["status"] for event in r.access] == ["-", 499, "-"]


def test_a_refused_request_reaches_no_later_filter(rigs: list[Rig]) -> None:
    """The rules run first on their route: a filter after them never sees
    a request they refuse; the listener's filters see the answer."""
    seen: list[str] = []

    class Later(HTTPFilter):
        def request_head(self, exchange: Any, head: Any) -> None:
            seen.append("later")

    class Outer(HTTPFilter):
        def response_head(self, exchange: Any, head: ResponseHead) -> None:
            seen.append(f"outer saw {head.status}")

    r = rig(
        rigs,
        "[rules.t]\ndeny = [{ path = '/no' }]\n",
        filters=[Later()],
        listener_filters=[Outer()],
    )
    assert r.verdict("GET", "/no") == 403
    assert seen == ["outer saw 403"]


def test_content_length_over_max_body_is_refused_unread(rigs: list[Rig]) -> None:
    """A Content-Length past max_body gets 413 at once: no backend, no body
    read, the connection closed."""
    r = rig(rigs, "[rules.t]\nmax_body = 100\n")
    client = r.send(
        raw=b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"x" * 10
    )
    assert client.response().status == 413
    assert client.closed
    assert r.harness.endpoints.attempts == []
    assert r.refused_by() == "t.max_body"
    assert r.verdict("POST", "/", body=b"x" * 100) == "passed"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_is_counted_as_it_streams(rigs: list[Rig]) -> None:
    """A chunked body streams to the backend while it is under max_body;
    the chunk that takes it past gets 413 and nothing more is sent on."""
    r = rig(rigs, "[rules.t]\nmax_body = 100\n")
    client = r.send(raw=CHUNKED + chunk(b"a" * 60))
    attempt = r.harness.endpoints.last
    attempt.succeed()
    assert attempt.received.endswith(b"a" * 60 + b"\r\n")  # streamed, not held
    client.send(chunk(b"b" * 40))
    assert b"b" * 40 in attempt.received
    client.send(chunk(b"c"))
    assert client.response().status == 413
    assert client.closed
    assert b"c" not in attempt.received.rpartition(b"b" * 40)[2]
    assert r.refused_by() == "t.max_body"
    assert r.hits() == {"t.max_body": 1}


def test_chunked_body_under_the_limit_passes(rigs: list[Rig]) -> None:
    """A chunked body that stays under max_body goes through whole."""
    r = rig(rigs, "[rules.t]\nmax_body = 100\n")
    client = r.send(raw=CHUNKED + chunk(b"a" * 100) + b"0\r\n\r\n")
    r.harness.backend_responds(OK)
    assert client.response().status == 200
    assert r.hits() == {"t.max_body": 0}


def test_body_rules_keep_their_order(rigs: list[Rig]) -> None:
    """A body-size rule before an allow still counts the body of a request
    the allow let on; one after it does not; a log body rule logs once."""
    r = rig(
        rigs,
        """[rules.t]
[[rules.t.rule]]
action = "log"
name = "big"
body_over = 10
[[rules.t.rule]]
action = "deny"
name = "huge"
path_prefix = "/up"
body_over = 50
status = 413
[[rules.t.rule]]
action = "allow"
path_prefix = "/"
[[rules.t.rule]]
action = "deny"
name = "never"
body_over = 20
""",
    )
    client = r.send(raw=CHUNKED + chunk(b"a" * 30))
    assert r.hits() == {"big": 1, "huge": 0, "t.rule[2]": 1, "never": 0}
    client.send(chunk(b"b" * 30))
    assert client.response().status == 413
    assert r.refused_by() == "huge"
    assert r.hits() == {"big": 1, "huge": 1, "t.rule[2]": 1, "never": 0}


def test_tarpit_on_body_size(rigs: list[Rig]) -> None:
    """A tarpit rule on the body size holds the request once past it,
    then drops it."""
    r = rig(rigs, "[rules.t]\ntarpit = [{ body_over = 10, seconds = 2 }]\n")
    client = r.send(raw=CHUNKED + chunk(b"a" * 11))
    assert client.paused and not client.closed
    r.clock.advance(2)
    assert client.transport.aborted
    assert r.refused_by() == "t.tarpit[0]"
    assert client.received == b""


def test_header_limits(rigs: list[Rig]) -> None:
    """max_headers and max_header_bytes answer 431."""
    r = rig(rigs, "[rules.t]\nmax_headers = 2\nmax_header_bytes = 100\n")
    assert r.verdict(headers=[("A", "1")]) == "passed"
    assert r.verdict(headers=[("A", "1"), ("B", "2")]) == 431
    assert r.refused_by() == "t.max_headers"
    assert r.verdict(headers=[("A", "x" * 80)]) == 431
    assert r.refused_by() == "t.max_header_bytes"


def test_access_log_lines_name_the_refusing_rule() -> None:
    """The combined and JSON access log lines carry refused_by when a rule
    refused the request, and nothing more when none did."""
    from rproxy.accesslog import render_combined, render_json

    event = {
        "client": "192.0.2.7",
        "method": "GET",
        "path": "/x",
        "version": "HTTP/1.1",
        "status": 403,
        "bytes_out": 10,
        "duration": 0.001,
        "refused_by": "waf.traversal",
    }
    assert render_combined(event).endswith(' refused_by="waf.traversal"')
    assert '"refused_by":"waf.traversal"' in render_json(event)
    del event["refused_by"]
    assert "refused_by" not in render_combined(event) + render_json(event)
