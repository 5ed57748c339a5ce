"""Each subject and operator of the request rules, through the HTTP codec:
method, normalised path, decoded query, header and cookie values, client
address, TLS server name, header count and size; equals, prefix, contains,
regex, list file, CIDR, presence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rproxy.http.filters.rules import compile_regex
from tests.rules.support import Rig, write


@pytest.fixture
def rig_for() -> Iterator[type[Rig]]:
    """Rigs made in a test are closed after it."""
    made: list[Rig] = []

    class Closing(Rig):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Closing
    for rig in made:
        rig.close()


def deny(rig_for: type[Rig], match: str, **kwargs: object) -> Rig:
    """A rig whose only rule denies what the match table C{match} says."""
    return rig_for(f"[rules.t]\ndeny = [{{ {match} }}]\n", **kwargs)  # type: ignore[arg-type]


def test_method_equals_any_of_a_list(rig_for: type[Rig]) -> None:
    """C{method = [...]} matches any of them, exactly (methods are
    case-sensitive)."""
    rig = deny(rig_for, 'method = ["TRACE", "TRACK"]')
    assert rig.verdict("TRACE") == 403
    assert rig.verdict("TRACK") == 403
    assert rig.verdict("trace") == "passed"
    assert rig.verdict("GET") == "passed"


def test_ignore_case(rig_for: type[Rig]) -> None:
    """C{ignore_case} makes equals, prefix and contains ignore ASCII case."""
    rig = deny(rig_for, 'method = "trace", ignore_case = true')
    assert rig.verdict("TRACE") == 403
    rig = deny(rig_for, 'path_prefix = "/ADMIN/", ignore_case = true')
    assert rig.verdict("GET", "/admin/x") == 403


@pytest.mark.parametrize(
    "target",
    [
        "/admin/users",
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/..%2fadmin/users",
        "//admin/users",
        "/./admin/users",
        "/%61dmin/users",
        "/public/..;/admin/users",
        "/admin/users?x=1",
    ],
)
def test_path_prefix_sees_the_normalised_path(rig_for: type[Rig], target: str) -> None:
    """A rule on a path prefix cannot be walked around by encodings, dot
    segments or repeated slashes."""
    rig = deny(rig_for, 'path_prefix = "/admin/"')
    assert rig.verdict("GET", target) == 403


@pytest.mark.parametrize(
    ("match", "target", "verdict"),
    [
        ('path = "/login"', "/login", 403),
        ('path = "/login"', "/login/", "passed"),
        ('path = "/login"', "/login?next=/", 403),
        ('path = ["/a", "/b"]', "/b", 403),
        ('path_prefix = ["/x/", "/y/"]', "/y/1", 403),
        ('path_contains = "wp-admin"', "/blog/wp-admin/x.php", 403),
        ('path_contains = "wp-admin"', "/blog/WP-ADMIN/x.php", "passed"),
        ("path_regex = '\\.php$'", "/index.php", 403),
        ("path_regex = '\\.php$'", "/index.php5", "passed"),
        ("path_regex = ['^/a$', '^/b$']", "/b", 403),
        ("path_regex = '(?i)\\.PHP$'", "/x.php", 403),
    ],
)
def test_path_operators(
    rig_for: type[Rig], match: str, target: str, verdict: int | str
) -> None:
    """equals, prefix, contains and regex on the path; an array is any of
    its values."""
    assert deny(rig_for, match).verdict("GET", target) == verdict


def test_traversal(rig_for: type[Rig]) -> None:
    """C{traversal = true} matches a path with dot segments once decoded;
    C{false} one without."""
    rig = deny(rig_for, "traversal = true")
    assert rig.verdict("GET", "/a/..%2f..%2fetc/passwd") == 403
    assert rig.verdict("GET", "/files/report%2Epdf") == "passed"
    rig = deny(rig_for, 'traversal = false, path_prefix = "/x"')
    assert rig.verdict("GET", "/x") == 403
    assert rig.verdict("GET", "/y/../x") == "passed"


@pytest.mark.parametrize(
    ("match", "target", "verdict"),
    [
        ("query_regex = '(?i)union\\s+select'", "/?id=1+UNION+SELECT+2", 403),
        ("query_regex = '(?i)union\\s+select'", "/?id=1%20union%0aselect", 403),
        ("query_regex = '(?i)union\\s+select'", "/?id=union", "passed"),
        ('query = "debug=1"', "/x?debug=1", 403),
        ('query = "debug=1"', "/x?debug=10", "passed"),
        ('query_contains = "<script"', "/?q=%3Cscript%3E", 403),
        ('query_prefix = "token="', "/?token=abc", 403),
        ("query_regex = '^$'", "/plain", 403),
        ("query_regex = '^$'", "/plain?x", "passed"),
    ],
)
def test_query_operators(
    rig_for: type[Rig], match: str, target: str, verdict: int | str
) -> None:
    """The query is matched decoded once (+ as a space); a regex that
    matches the empty text matches a request without a query."""
    assert deny(rig_for, match).verdict("GET", target) == verdict


def test_list_file_relative_to_the_config(rig_for: type[Rig], tmp_path: Path) -> None:
    """A list file, named relative to the config, matches a value that
    contains any of its entries, ignoring case; comments and blank lines
    are left out."""
    write(tmp_path, "bots.txt", "# scanners\n\nsqlmap\n  Nikto  \n")
    rig = deny(
        rig_for,
        'header = "User-Agent", list = "bots.txt"',
        source=str(tmp_path / "c.toml"),
    )
    assert rig.verdict(headers=[("User-Agent", "sqlmap/1.7.2#stable")]) == 403
    assert rig.verdict(headers=[("User-Agent", "Mozilla/5.00 (NIKTO/2.1.6)")]) == 403
    assert rig.verdict(headers=[("User-Agent", "Mozilla/5.0 Firefox/120")]) == "passed"
    assert rig.verdict(headers=[("User-Agent", "# scanners")]) == "passed"


def test_path_list(rig_for: type[Rig], tmp_path: Path) -> None:
    """C{path_list} is the same on the normalised path."""
    write(tmp_path, "paths.txt", "/wp-login.php\n/phpmyadmin\n")
    rig = deny(rig_for, 'path_list = "paths.txt"', source=str(tmp_path / "c.toml"))
    assert rig.verdict("GET", "/blog/%2e%2e/PhpMyAdmin/") == 403
    assert rig.verdict("GET", "/blog/") == "passed"


@pytest.mark.parametrize(
    ("match", "headers", "verdict"),
    [
        ('header = "X-Debug", equals = "1"', [("x-debug", "1")], 403),
        ('header = "X-Debug", equals = "1"', [("X-Debug", "10")], "passed"),
        (
            'header = "X-Debug", equals = "1"',
            [("X-Debug", "0"), ("X-Debug", "1")],
            403,
        ),
        (
            'header = "Referer", prefix = "http://evil."',
            [("Referer", "http://evil.x/")],
            403,
        ),
        (
            'header = "Accept", contains = "text/x-evil"',
            [("Accept", "a, text/x-evil")],
            403,
        ),
        (
            "header = 'Content-Type', regex = '(?i)multipart'",
            [("Content-Type", "MULTIPART/x")],
            403,
        ),
        ("header = 'X-Empty', regex = '^$'", [("X-Empty", "")], 403),
        ("header = 'X-Empty', regex = '^$'", [("X-Empty", "a")], "passed"),
        ('header = "User-Agent", present = false', [], 403),
        ('header = "User-Agent", present = false', [("User-Agent", "x")], "passed"),
        ('header = "X-Admin", present = true', [("X-Admin", "")], 403),
        ('header = "X-Admin", present = true', [], "passed"),
        (
            'header = "User-Agent", contains = "bot", equals = "evilbot"',
            [("User-Agent", "goodbot")],
            "passed",
        ),
    ],
)
def test_header_operators(
    rig_for: type[Rig],
    match: str,
    headers: list[tuple[str, str]],
    verdict: int | str,
) -> None:
    """A header is named in any case; any of its fields may match; several
    operators on it must all pass; C{present} tests that it is there."""
    assert deny(rig_for, match).verdict(headers=headers) == verdict


@pytest.mark.parametrize(
    ("match", "cookie", "verdict"),
    [
        ('cookie = "role", equals = "admin"', "a=1; role=admin; b=2", 403),
        ('cookie = "role", equals = "admin"', "a=1;role=user", "passed"),
        ('cookie = "role", equals = "admin"', "Role=admin", "passed"),
        ('cookie = "sid", present = false', "a=1", 403),
        ('cookie = "sid", present = false', "sid=", "passed"),
        ("cookie = 'q', regex = '(?i)union\\s+select'", "q=1 UNION SELECT", 403),
    ],
)
def test_cookie_operators(
    rig_for: type[Rig], match: str, cookie: str, verdict: int | str
) -> None:
    """Cookies are read from every Cookie field; names are case-sensitive,
    values compared as sent."""
    rig = deny(rig_for, match)
    assert rig.verdict(headers=[("Cookie", cookie)]) == verdict


def test_cookies_in_several_fields(rig_for: type[Rig]) -> None:
    """A cookie in a second Cookie field is seen too."""
    rig = deny(rig_for, 'cookie = "role", equals = "admin"')
    headers = [("Cookie", "a=1"), ("Cookie", "role=admin")]
    assert rig.verdict(headers=headers) == 403


def test_client_networks(rig_for: type[Rig]) -> None:
    """C{client} takes addresses and networks, IPv4 and IPv6; an
    IPv4-mapped IPv6 client counts as its IPv4 address."""
    rig = deny(rig_for, 'client = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]')
    for peer, verdict in [
        ("10.1.2.3", 403),
        ("192.0.2.7", 403),
        ("192.0.2.8", "passed"),
        ("::ffff:10.9.9.9", 403),
        ("2001:db8::1", 403),
        ("2001:db9::1", "passed"),
    ]:
        assert rig.verdict(client=rig.connect(peer)) == verdict, peer


def test_client_list_file(rig_for: type[Rig], tmp_path: Path) -> None:
    """C{client_list} reads networks from a file (comments allowed)."""
    write(tmp_path, "nets.txt", "# bad networks\n203.0.113.0/24\n2001:db8:bad::/48\n")
    rig = deny(rig_for, 'client_list = "nets.txt"', source=str(tmp_path / "c.toml"))
    assert rig.verdict(client=rig.connect("203.0.113.99")) == 403
    assert rig.verdict(client=rig.connect("2001:db8:bad:1::5")) == 403
    assert rig.verdict(client=rig.connect("203.0.114.1")) == "passed"


def test_client_networks_at_their_edges(rig_for: type[Rig]) -> None:
    """Every address inside a network matches, its neighbours outside do
    not, at any prefix length."""
    rig = deny(rig_for, 'client = ["192.168.1.128/25", "fd00::/8", "::1"]')
    for peer, verdict in [
        ("192.168.1.128", 403),
        ("192.168.1.255", 403),
        ("192.168.1.127", "passed"),
        ("fdff::1", 403),
        ("fe00::1", "passed"),
        ("::1", 403),
        ("::2", "passed"),
    ]:
        assert rig.verdict(client=rig.connect(peer)) == verdict, peer


def test_client_behind_a_trusted_proxy(rig_for: type[Rig]) -> None:
    """Behind a peer in trusted_proxies, the client a rule sees is the
    nearest untrusted address in X-Forwarded-For; from anyone else the
    header is not believed."""
    rig = deny(rig_for, 'client = "203.0.113.0/24"', trusted=["192.0.2.0/24"])
    forwarded = [("User-Agent", "x"), ("X-Forwarded-For", "203.0.113.5, 192.0.2.9")]
    assert rig.verdict(headers=forwarded, client=rig.connect("192.0.2.1")) == 403
    assert rig.verdict(headers=forwarded, client=rig.connect("198.51.100.1")) == (
        "passed"
    )


def test_server_name(rig_for: type[Rig]) -> None:
    """C{sni} is the name the client asked for in its TLS handshake,
    lowercase; without TLS or SNI it is empty."""
    rig = deny(rig_for, 'sni = "internal.example.com"')
    assert rig.verdict(client=rig.connect(server_name=b"Internal.Example.COM")) == 403
    assert rig.verdict(client=rig.connect(server_name=b"www.example.com")) == "passed"
    assert rig.verdict(client=rig.connect()) == "passed"
    rig = deny(rig_for, "sni_regex = '^$'")
    assert rig.verdict(client=rig.connect(server_name=None)) == 403
    assert rig.verdict(client=rig.connect()) == 403
    assert rig.verdict(client=rig.connect(server_name=b"a.example")) == "passed"


def test_header_count_and_size(rig_for: type[Rig]) -> None:
    """C{header_count_over} and C{header_bytes_over} match heads with more
    fields, or more bytes of fields (name, value and 4 each), than given."""
    rig = deny(rig_for, "header_count_over = 3")
    three = [("User-Agent", "x"), ("A", "1")]  # with Host: 3
    assert rig.verdict(headers=three) == "passed"
    assert rig.verdict(headers=[*three, ("B", "2")]) == 403
    rig = deny(rig_for, "header_bytes_over = 40")
    # Host: example.com is 4 + 11 + 4 = 19 bytes, X: aaa... 1 + 16 + 4 = 21.
    assert rig.verdict(headers=[("X", "a" * 16)]) == "passed"
    assert rig.verdict(headers=[("X", "a" * 17)]) == 403


def test_conditions_of_a_rule_all_match(rig_for: type[Rig]) -> None:
    """A rule's conditions must all pass: method and path together."""
    rig = deny(rig_for, 'method = "POST", path_prefix = "/admin/"')
    assert rig.verdict("POST", "/admin/x", body=b"a") == 403
    assert rig.verdict("GET", "/admin/x") == "passed"
    assert rig.verdict("POST", "/x", body=b"a") == "passed"


def test_a_catastrophic_pattern_stays_linear() -> None:
    """A pattern that backtracking engines take exponential time on is
    answered at once by RE2 (linear in the text)."""
    evil = compile_regex("^(a+)+$")
    assert not evil(b"a" * 100_000 + b"!")
    assert evil(b"a" * 100_000)


def test_regexes_match_bytes_as_latin_1() -> None:
    """Every byte is one character: '.' matches an invalid UTF-8 byte, and
    a byte escape matches that byte."""
    assert compile_regex("^a.b$")(b"a\xffb")
    assert compile_regex("\\xc0\\xae")(b"/\xc0\xae/")
    assert not compile_regex("^a.b$")(b"a\xc3\xa9b")  # two bytes, two characters


def test_client_is_the_proxy_headers_source(rig_for: type[Rig]) -> None:
    """Behind a trusted proxy sending PROXY headers, the client a rule sees
    is the header's source address, not the proxy's."""
    from rproxy.proxyprotocol.accept import ProxyHeaderFactory
    from rproxy.testing import HalfCloseTransport, connect

    rig = deny(rig_for, 'client = "203.0.113.0/24"')
    inner = rig.harness.factory
    front = ProxyHeaderFactory(
        inner, ["192.0.2.7"], rig.clock, connections=inner.connections
    )
    for source, verdict in [("203.0.113.9", 403), ("198.51.100.1", "passed")]:
        asked = len(rig.harness.endpoints.attempts)
        proto = front.buildProtocol(None)
        transport = connect(proto, HalfCloseTransport("192.0.2.7"))
        proto.dataReceived(
            f"PROXY TCP4 {source} 10.0.0.1 5555 80\r\n".encode()
            + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        if verdict == "passed":
            assert len(rig.harness.endpoints.attempts) == asked + 1
        else:
            assert transport.value().startswith(b"HTTP/1.1 403 ")
        transport.loseConnection()


def test_answers_are_remembered_within_a_bound(rig_for: type[Rig]) -> None:
    """Each pattern bank and the path memo remember at most MEMO_ENTRIES
    texts, however many distinct ones arrive, and a remembered answer is
    the same as a fresh one."""
    from rproxy.http.filters.rules import _view
    from rproxy.http.filters.rules._match import MEMO_ENTRIES

    rig = deny(rig_for, "path_regex = '/admin/'")
    (bank,) = rig.banks()
    for n in range(MEMO_ENTRIES + 50):
        assert rig.verdict("GET", f"/items/{n}") == "passed"
    assert bank.found.cache_info().currsize == MEMO_ENTRIES  # type: ignore[attr-defined]
    assert _view._normalised.cache_info().currsize <= MEMO_ENTRIES
    assert rig.verdict("GET", "/admin/") == 403
    assert rig.verdict("GET", "/admin/") == 403  # now from the memo
    assert rig.verdict("GET", "/items/7") == "passed"


def test_long_texts_are_searched_not_remembered(rig_for: type[Rig]) -> None:
    """A path or header longer than MEMO_TEXT is matched in full (a
    pattern near its end is found) and never held in a memo."""
    from rproxy.http.filters.rules._match import MEMO_TEXT

    rig = deny(rig_for, "path_regex = 'secret$'")
    (bank,) = rig.banks()
    before = bank.found.cache_info().currsize  # type: ignore[attr-defined]
    long_path = "/" + "a" * (MEMO_TEXT + 10) + "/secret"
    assert rig.verdict("GET", long_path) == 403
    assert rig.verdict("GET", long_path[:-1]) == "passed"
    assert bank.found.cache_info().currsize == before  # type: ignore[attr-defined]
