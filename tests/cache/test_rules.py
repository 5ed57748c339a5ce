"""The cache's rules as pure functions, a table per RFC section: directive
parsing (RFC 9111 §5.2, RFC 9213), HTTP-dates (RFC 9110 §5.6.7), storing
(§3), freshness lifetime (§4.2.1, §4.2.2), Age (§4.2.3), serving stale
(§4.2.4, RFC 5861) and request directives (§5.2.1), Vary (§4.1),
invalidation (§4.4), conditional requests (RFC 9110 §13), ranges (RFC 9110
§14) and Cache-Status (RFC 9211)."""

from __future__ import annotations

import pytest

from rproxy.cache.conditional import (
    entity_tags,
    evaluate,
    if_range_holds,
    merge_not_modified,
    revalidation_headers,
)
from rproxy.cache.control import (
    DELTA_MAX,
    delta_seconds,
    parse_cache_control,
    parse_targeted,
    response_policy,
)
from rproxy.cache.dates import format_date, parse_date
from rproxy.cache.freshness import (
    Use,
    age_value,
    corrected_initial_age,
    current_age,
    freshness_lifetime,
    judge,
    stale_if_error_window,
)
from rproxy.cache.invalidation import invalidated_keys, invalidates
from rproxy.cache.keys import cache_key, url_key
from rproxy.cache.ranges import UNSATISFIABLE, byte_range
from rproxy.cache.settings import CacheSettings
from rproxy.cache.status import CacheStatus
from rproxy.cache.storing import not_storable, stored_headers
from rproxy.cache.variants import normalise, request_variant, vary_names

NOW = 1_700_000_000.0
DATE = format_date(NOW)
SETTINGS = CacheSettings()


def fields(*pairs: str) -> list[tuple[bytes, bytes]]:
    """Fields from "Name: value" strings."""
    out = []
    for pair in pairs:
        name, _, value = pair.partition(":")
        out.append((name.strip().encode(), value.strip().encode()))
    return out


# RFC 9111 §5.2: Cache-Control -------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"max-age=60"], {b"max-age": b"60"}),
        ([b"Max-Age=60, PUBLIC"], {b"max-age": b"60", b"public": None}),
        ([b"max-age=1800, max-age=1"], {b"max-age": b"1800"}),  # first wins
        ([b"max-age=1800", b"max-age=1"], {b"max-age": b"1800"}),
        (
            [b'extension="max-age=3600", max-age=1'],
            {b"extension": b"max-age=3600", b"max-age": b"1"},
        ),
        ([b'max-age="3600"'], {b"max-age": b"3600"}),  # quoted is unquoted
        ([b'no-cache="a, b"'], {b"no-cache": b"a, b"}),
        ([b"max-age =3600"], {}),  # not a directive
        ([b"max-age= 3600"], {}),
        ([b"max-age='3600', public"], {b"max-age": b"'3600'", b"public": None}),
        ([b",, no-store ,"], {b"no-store": None}),
        ([b'x="a\\"b", private'], {b"x": b'a"b', b"private": None}),
    ],
)
def test_cache_control_parsing(
    values: list[bytes], expected: dict[bytes, bytes | None]
) -> None:
    """Names lower-cased, quoted arguments unquoted, malformed items skipped."""
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(
    ("argument", "seconds"),
    [
        (b"60", 60),
        (b"003600", 3600),
        (b"0", 0),
        (b"99999999999", DELTA_MAX),
        (b"3600.0", None),
        (b"-1", None),
        (b"a3600", None),
        (b"3600a", None),
        (b"", None),
        (None, None),
    ],
)
def test_delta_seconds(argument: bytes | None, seconds: int | None) -> None:
    """delta-seconds are digits only, capped at 2**31 (RFC 9111 §1.2.2)."""
    assert delta_seconds(argument) == seconds


# RFC 9213: targeted fields -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"max-age=3600"], {b"max-age": b"3600"}),
        ([b"foobar, max-age=3600"], {b"foobar": None, b"max-age": b"3600"}),
        ([b"max-age=99999999999"], {b"max-age": b"99999999999"}),
        ([b"private"], {b"private": None}),
        ([b"no-store, x=?0"], {b"no-store": None}),
        ([b'max-age="10000"'], None),  # wrong type
        ([b"max-age=10000, &&&&&"], None),  # not a dictionary
        ([b"MaX-aGe=3600"], None),  # keys are lower case
        ([b"max-age=1.5"], None),
        ([b""], None),
        ([b"max-age=10,"], None),
    ],
)
def test_targeted_field_parsing(
    values: list[bytes], expected: dict[bytes, bytes | None] | None
) -> None:
    """A targeted field is a Structured Field dictionary; an invalid one is ignored."""
    assert parse_targeted(values) == expected


def test_targeted_field_takes_precedence() -> None:
    """A valid CDN-Cache-Control replaces Cache-Control (RFC 9213 §2.1)."""
    headers = fields("Cache-Control: no-store", "CDN-Cache-Control: max-age=600")
    policy = response_policy(headers, SETTINGS.targets)
    assert policy.targeted and policy.seconds(b"max-age") == 600
    assert b"no-store" not in policy
    invalid = fields("Cache-Control: no-store", 'CDN-Cache-Control: max-age="1"')
    assert b"no-store" in response_policy(invalid, SETTINGS.targets)


# RFC 9110 §5.6.7: HTTP-dates ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "when"),
    [
        (b"Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        (b"Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        (b"Sun Nov  6 08:49:37 1994", 784111777.0),
        (b"SUN, 06 NOV 1994 08:49:37 gmt", 784111777.0),
        (b"Sun, 06 Nov 1994 08:49:37 UTC", None),
        (b"Sun, 06 Nov 1994 08:49:37 +0000", None),
        (b"0", None),
        (b"-1", None),
        (b"Sun, 06 Nov 1994 25:49:37 GMT", None),
    ],
)
def test_http_dates(text: bytes, when: float | None) -> None:
    """The three formats are read; anything else is not a date."""
    assert parse_date(text) == when


# RFC 9111 §3: storing ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "asked", "response", "why"),
    [
        ("GET", 200, [], ["Cache-Control: max-age=60"], None),
        ("GET", 200, [], [], None),  # heuristically cacheable
        ("GET", 201, [], [], "no-freshness"),
        ("GET", 201, [], ["Cache-Control: max-age=60"], None),
        ("GET", 302, [], ["Expires: " + DATE.decode()], None),
        ("GET", 302, [], ["Cache-Control: public"], None),
        ("POST", 200, [], ["Cache-Control: max-age=60"], "method"),
        ("HEAD", 200, [], ["Cache-Control: max-age=60"], "method"),
        ("GET", 206, [], ["Cache-Control: max-age=60"], "status"),
        ("GET", 304, [], ["Cache-Control: max-age=60"], "status"),
        ("GET", 200, [], ["Cache-Control: max-age=60, no-store"], "no-store"),
        ("GET", 200, [], ["Cache-Control: private"], "private"),
        ("GET", 200, [], ['Cache-Control: private="Set-Cookie", max-age=5'], None),
        (
            "GET",
            200,
            ["Cache-Control: no-store"],
            ["Cache-Control: max-age=60"],
            "request-no-store",
        ),
        (
            "GET",
            200,
            ["Authorization: Basic x"],
            ["Cache-Control: max-age=60"],
            "authorization",
        ),
        (
            "GET",
            200,
            ["Authorization: Basic x"],
            ["Cache-Control: max-age=60, public"],
            None,
        ),
        ("GET", 200, ["Authorization: Basic x"], ["Cache-Control: s-maxage=60"], None),
        (
            "GET",
            200,
            ["Authorization: Basic x"],
            ["Cache-Control: must-revalidate"],
            None,
        ),
        ("GET", 200, [], ["Cache-Control: max-age=60", "Vary: Foo, *"], "vary-star"),
        ("GET", 200, [], ["Cache-Control: no-store, must-understand, max-age=9"], None),
        (
            "GET",
            299,
            [],
            ["Cache-Control: must-understand, max-age=9"],
            "must-understand",
        ),
        (
            "GET",
            200,
            [],
            ["Cache-Control: no-store", "CDN-Cache-Control: max-age=60"],
            None,
        ),
        ("GET", 200, [], ["Set-Cookie: a=b", "Cache-Control: max-age=60"], None),
    ],
)
def test_storable(
    method: str, status: int, asked: list[str], response: list[str], why: str | None
) -> None:
    """What a shared cache may store, and why not."""
    request_fields = fields(*asked)
    response_fields = fields(*response)
    policy = response_policy(response_fields, SETTINGS.targets)
    directives = parse_cache_control(
        [v for n, v in request_fields if n.lower() == b"cache-control"]
    )
    assert (
        not_storable(
            method.encode(), status, request_fields, directives, response_fields,
            policy, SETTINGS,
        )
        == why
    )  # fmt: skip


def test_set_cookie_refused_when_configured() -> None:
    """set_cookie = "refuse" does not store a response that sets a cookie."""
    headers = fields("Set-Cookie: a=b", "Cache-Control: max-age=60")
    settings = CacheSettings(set_cookie="refuse")
    policy = response_policy(headers)
    assert not_storable(b"GET", 200, [], {}, headers, policy, settings) == "set-cookie"


@pytest.mark.parametrize(
    ("response", "settings", "kept"),
    [
        (
            ["A: 1", "Content-Length: 5", "Transfer-Encoding: chunked"],
            SETTINGS,
            [b"a", b"date"],
        ),
        (
            ['Cache-Control: no-cache="a"', "A: 1", "B: 2"],
            SETTINGS,
            [b"cache-control", b"b", b"date"],
        ),
        (
            ['Cache-Control: private="a, b"', "A: 1", "B: 2", "C: 3"],
            SETTINGS,
            [b"cache-control", b"c", b"date"],
        ),
        (["Set-Cookie: a=b", "Date: x"], SETTINGS, [b"set-cookie", b"date"]),
        (["Set-Cookie: a=b", "Date: x"], CacheSettings(set_cookie="strip"), [b"date"]),
    ],
)
def test_stored_headers(
    response: list[str], settings: CacheSettings, kept: list[bytes]
) -> None:
    """Framing fields and those no-cache / private name go; Date is added."""
    headers = fields(*response)
    stored = stored_headers(headers, response_policy(headers), settings, NOW)
    assert [n.lower() for n, _ in stored] == kept


# RFC 9111 §4.2.1, §4.2.2: freshness lifetime --------------------------------


def _date(offset: float) -> str:
    return format_date(NOW + offset).decode()


@pytest.mark.parametrize(
    ("status", "response", "settings", "lifetime"),
    [
        (200, ["Cache-Control: max-age=60"], SETTINGS, 60),
        (200, ["Cache-Control: max-age=60, s-maxage=5"], SETTINGS, 5),
        (200, ["Cache-Control: s-maxage=x, max-age=60"], SETTINGS, 0),
        (200, ["Cache-Control: max-age=a60"], SETTINGS, 0),  # invalid: stale
        (200, ["Cache-Control: max-age=60", "Expires: " + _date(600)], SETTINGS, 60),
        (200, ["Date: " + _date(0), "Expires: " + _date(600)], SETTINGS, 600),
        (200, ["Date: " + _date(0), "Expires: " + _date(-600)], SETTINGS, 0),
        (200, ["Date: " + _date(0), "Expires: 0"], SETTINGS, 0),  # invalid: expired
        (200, ["Expires: " + _date(300)], SETTINGS, 300),  # no Date: received time
        (200, ["Date: " + _date(0), "Last-Modified: " + _date(-1000)], SETTINGS, 100),
        (
            200,
            ["Date: " + _date(0), "Last-Modified: " + _date(-1000)],
            CacheSettings(heuristic_max=50),
            50,
        ),
        (201, ["Date: " + _date(0), "Last-Modified: " + _date(-1000)], SETTINGS, 0),
        (
            201,
            ["Cache-Control: public", "Last-Modified: " + _date(-1000)],
            SETTINGS,
            100,
        ),
        (200, [], SETTINGS, 0),
        (200, [], CacheSettings(default_ttl=30), 30),
        (404, [], CacheSettings(default_ttl=30), 30),
        (302, [], CacheSettings(default_ttl=30), 0),
        (
            200,
            ["Cache-Control: max-age=1", "CDN-Cache-Control: max-age=3600"],
            SETTINGS,
            3600,
        ),
        (200, ["CDN-Cache-Control: max-age=0", "Expires: " + _date(600)], SETTINGS, 0),
        (200, ["CDN-Cache-Control: no-cache", "Expires: " + _date(600)], SETTINGS, 0),
    ],
)
def test_freshness_lifetime(
    status: int, response: list[str], settings: CacheSettings, lifetime: float
) -> None:
    """s-maxage, then max-age, then Expires - Date, then a heuristic where allowed."""
    headers = fields(*response)
    policy = response_policy(headers, settings.targets)
    assert freshness_lifetime(status, headers, policy, settings, NOW) == lifetime


# RFC 9111 §4.2.3: Age ---------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "request_time", "response_time", "initial"),
    [
        ([], NOW, NOW, 0),
        (["Date: " + _date(-30)], NOW, NOW, 30),  # apparent age
        (["Age: 100"], NOW - 2, NOW, 102),  # Age plus the response delay
        (["Age: 100", "Date: " + _date(-300)], NOW, NOW, 300),
        (["Date: " + _date(30)], NOW, NOW, 0),  # a Date ahead: no negative age
        (["Age: abc"], NOW, NOW, 0),
        (["Age: -7200"], NOW, NOW, 0),
        (["Age: 7200, 0"], NOW, NOW, 7200),  # the first member
        (["Age: 7200", "Age: 0"], NOW, NOW, 7200),
    ],
)
def test_corrected_initial_age(
    response: list[str], request_time: float, response_time: float, initial: float
) -> None:
    """The corrected initial age: the larger of the apparent and the corrected Age."""
    assert (
        corrected_initial_age(fields(*response), request_time, response_time) == initial
    )


def test_current_age_adds_resident_time() -> None:
    """current_age = corrected_initial_age + resident_time."""
    headers = fields("Age: 10")
    assert current_age(headers, NOW, NOW, NOW + 50) == 60
    assert age_value(fields("Age: 5")) == 5


# RFC 9111 §4.2.4, §5.2.1, RFC 5861: what a request may do ------------------


@pytest.mark.parametrize(
    ("response", "asked", "lifetime", "age", "settings", "use"),
    [
        ("max-age=60", "", 60, 10, SETTINGS, Use.FRESH),
        ("max-age=60", "", 60, 60, SETTINGS, Use.VALIDATE),
        ("max-age=60, no-cache", "", 60, 0, SETTINGS, Use.VALIDATE),
        ('max-age=60, no-cache="a"', "", 60, 0, SETTINGS, Use.FRESH),
        ("max-age=60", "no-cache", 60, 0, SETTINGS, Use.VALIDATE),
        (
            "max-age=60",
            "no-cache",
            60,
            0,
            CacheSettings(client_directives=False),
            Use.FRESH,
        ),
        ("max-age=60", "max-age=5", 60, 10, SETTINGS, Use.VALIDATE),
        ("max-age=60", "max-age=50", 60, 10, SETTINGS, Use.FRESH),
        ("max-age=60", "min-fresh=55", 60, 10, SETTINGS, Use.VALIDATE),
        ("max-age=60", "max-stale", 60, 600, SETTINGS, Use.STALE),
        ("max-age=60", "max-stale=10", 60, 65, SETTINGS, Use.STALE),
        ("max-age=60", "max-stale=10", 60, 75, SETTINGS, Use.VALIDATE),
        ("max-age=60, must-revalidate", "max-stale", 60, 65, SETTINGS, Use.VALIDATE),
        ("s-maxage=60", "max-stale", 60, 65, SETTINGS, Use.VALIDATE),
        ("max-age=60, stale-while-revalidate=30", "", 60, 80, SETTINGS, Use.REFRESH),
        ("max-age=60, stale-while-revalidate=30", "", 60, 95, SETTINGS, Use.VALIDATE),
        ("s-maxage=60, stale-while-revalidate=30", "", 60, 80, SETTINGS, Use.REFRESH),
        (
            "max-age=60, proxy-revalidate, stale-while-revalidate=30",
            "",
            60,
            80,
            SETTINGS,
            Use.VALIDATE,
        ),
        (
            "max-age=60",
            "",
            60,
            80,
            CacheSettings(stale_while_revalidate=30),
            Use.REFRESH,
        ),
        (
            "s-maxage=60",
            "",
            60,
            80,
            CacheSettings(stale_while_revalidate=30),
            Use.VALIDATE,
        ),
    ],
)
def test_judge(
    response: str,
    asked: str,
    lifetime: float,
    age: float,
    settings: CacheSettings,
    use: Use,
) -> None:
    """Fresh, stale allowed, refresh in the background, or validate first."""
    policy = response_policy(fields("Cache-Control: " + response))
    directives = parse_cache_control([asked.encode()])
    assert judge(policy, lifetime, age, directives, settings).use is use


@pytest.mark.parametrize(
    ("response", "asked", "settings", "window"),
    [
        ("max-age=1, stale-if-error=60", "", SETTINGS, 60),
        ("max-age=1", "stale-if-error=30", SETTINGS, 30),
        ("max-age=1", "", CacheSettings(stale_if_error=10), 10),
        ("max-age=1", "", SETTINGS, 0),
        ("max-age=1, stale-if-error=60, must-revalidate", "", SETTINGS, 0),
        ("max-age=1, stale-if-error=60, no-cache", "", SETTINGS, 0),
        ("s-maxage=1", "", CacheSettings(stale_if_error=10), 0),
        ("s-maxage=1, stale-if-error=60", "", SETTINGS, 60),
    ],
)
def test_stale_if_error_window(
    response: str, asked: str, settings: CacheSettings, window: float
) -> None:
    """The response's window, else the request's, else the default."""
    policy = response_policy(fields("Cache-Control: " + response))
    directives = parse_cache_control([asked.encode()])
    assert stale_if_error_window(policy, directives, settings) == window


# RFC 9111 §4.1: Vary ---------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "names"),
    [
        (["Vary: Accept-Encoding"], (b"accept-encoding",)),
        (["Vary: Foo, BAR", "Vary: foo"], (b"foo", b"bar")),
        (["Vary: *"], None),
        (["Vary: , *"], None),
        (["Vary: Foo, *"], None),
        (["Vary: "], ()),
        ([], ()),
    ],
)
def test_vary_names(response: list[str], names: tuple[bytes, ...] | None) -> None:
    """Vary's names lower-cased once each; * anywhere means never matched."""
    assert vary_names(fields(*response)) == names


@pytest.mark.parametrize(
    ("name", "values", "normal"),
    [
        (b"accept-encoding", [b"gzip, br"], b"br,gzip"),
        (b"accept-encoding", [b"br", b"GZIP;q=0.5"], b"br,gzip"),
        (b"accept-encoding", [b"gzip;q=0, br"], b"br"),
        (b"accept-language", [b"EN-us , fr"], b"en-us,fr"),
        (b"foo", [b"A  b", b"C"], b"A b,C"),
        (b"foo", [], None),
    ],
)
def test_vary_normalisation(
    name: bytes, values: list[bytes], normal: bytes | None
) -> None:
    """Lines combined, list whitespace gone, case folded where caseless."""
    assert normalise(name, values) == normal


def test_request_variant_uses_every_named_field() -> None:
    """The variant holds the normalised value of each Vary field, None where absent."""
    headers = fields("Accept-Encoding: gzip", "X: 1")
    assert request_variant((b"accept-encoding", b"y"), headers) == (b"gzip", None)


# RFC 9111 §4.4: invalidation --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "yes"),
    [
        (b"POST", 200, True),
        (b"PUT", 201, True),
        (b"DELETE", 204, True),
        (b"PATCH", 302, True),
        (b"FROB", 200, True),  # unknown: unsafe
        (b"POST", 404, False),
        (b"POST", 500, False),
        (b"GET", 200, False),
        (b"OPTIONS", 200, False),
    ],
)
def test_invalidates(method: bytes, status: int, yes: bool) -> None:
    """Unsafe methods with a non-error status invalidate."""
    assert invalidates(method, status) is yes


def test_invalidated_keys_are_same_origin() -> None:
    """The target, plus same-origin Location and Content-Location."""
    key = b"http://example.com/a/b"
    headers = fields("Location: c", "Content-Location: https://example.com/d")
    assert invalidated_keys(key, headers) == [key, b"http://example.com/a/c"]
    headers = fields("Location: //EXAMPLE.com:80/x")
    assert invalidated_keys(key, headers) == [key, b"http://example.com/x"]


def test_keys_normalise_host_and_port() -> None:
    """The host is case-folded and a default port left out."""
    assert cache_key(b"http", b"Example.COM:80", b"/a?b") == b"http://example.com/a?b"
    assert cache_key(b"https", b"x:8443", b"/") == b"https://x:8443/"
    assert url_key("https://X.example:443/p") == b"https://x.example/p"
    assert url_key("/relative") is None


# RFC 9110 §13: conditional requests -----------------------------------------

STORED = fields('ETag: "v1"', "Last-Modified: " + _date(-100))


@pytest.mark.parametrize(
    ("method", "asked", "status"),
    [
        (b"GET", ['If-None-Match: "v1"'], 304),
        (b"GET", ['If-None-Match: W/"v1"'], 304),  # weak comparison
        (b"GET", ['If-None-Match: "x", "v1"'], 304),
        (b"GET", ["If-None-Match: *"], 304),
        (b"GET", ['If-None-Match: "x"'], None),
        (b"HEAD", ['If-None-Match: "v1"'], 304),
        (b"GET", ["If-Modified-Since: " + _date(-100)], 304),
        (b"GET", ["If-Modified-Since: " + _date(-200)], None),
        (b"GET", ['If-None-Match: "x"', "If-Modified-Since: " + _date(0)], None),
        (b"GET", ["If-Modified-Since: garbage"], None),
        (b"GET", ['If-Match: "v1"'], None),
        (b"GET", ['If-Match: W/"v1"'], 412),  # strong comparison
        (b"GET", ['If-Match: "x"'], 412),
        (b"GET", ["If-Unmodified-Since: " + _date(-200)], 412),
        (b"GET", ["If-Unmodified-Since: " + _date(0)], None),
        (b"GET", ['If-Match: "x"', 'If-None-Match: "v1"'], 412),
    ],
)
def test_preconditions(method: bytes, asked: list[str], status: int | None) -> None:
    """Preconditions are evaluated in RFC 9110 §13.2.2's order."""
    assert evaluate(method, fields(*asked), STORED) == status


def test_entity_tag_lists() -> None:
    """Entity-tags are read with their W/ prefix; * stands for any."""
    assert entity_tags([b'"a", W/"b" ,"c,d"']) == [b'"a"', b'W/"b"', b'"c,d"']
    assert entity_tags([b"*"]) is None


def test_revalidation_uses_stored_validators() -> None:
    """Revalidation sends the stored validators, not the client's."""
    client = fields("Accept: */*", 'If-None-Match: "mine"')
    sent = revalidation_headers(client, STORED)
    assert sent == [
        (b"Accept", b"*/*"),
        (b"If-None-Match", b'"v1"'),
        (b"If-Modified-Since", _date(-100).encode()),
    ]
    assert revalidation_headers(client, fields("X: 1")) is None


def test_304_fields_replace_stored_ones() -> None:
    """A 304's fields replace those of the same name; Content-Length is kept."""
    stored = fields(
        "Content-Length: 5", "X: 1", "X: 2", "Y: 1", "Cache-Control: max-age=1"
    )
    received = fields("X: 3", "Content-Length: 0", "Cache-Control: max-age=9")
    merged = merge_not_modified(stored, received)
    assert merged == fields(
        "Content-Length: 5", "Y: 1", "X: 3", "Cache-Control: max-age=9"
    )


@pytest.mark.parametrize(
    ("if_range", "holds"),
    [
        (None, True),
        ('"v1"', True),
        ('W/"v1"', False),
        ('"v2"', False),
        (_date(-100), True),
        (_date(-50), False),
    ],
)
def test_if_range(if_range: str | None, holds: bool) -> None:
    """If-Range needs a strong ETag match or the exact Last-Modified."""
    request = fields("If-Range: " + if_range) if if_range else []
    assert if_range_holds(request, STORED) is holds


# RFC 9110 §14: ranges ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "length", "span"),
    [
        (b"bytes=0-1", 10, (0, 1)),
        (b"bytes=1-", 10, (1, 9)),
        (b"bytes=-1", 10, (9, 9)),
        (b"bytes=-20", 10, (0, 9)),
        (b"bytes=5-100", 10, (5, 9)),
        (b"BYTES = 2-3", 10, (2, 3)),
        (b"bytes=10-", 10, UNSATISFIABLE),
        (b"bytes=-0", 10, UNSATISFIABLE),
        (b"bytes=3-2", 10, None),
        (b"bytes=0-1,3-4", 10, None),
        (b"items=0-1", 10, None),
        (b"bytes=a-b", 10, None),
        (b"bytes=0-1", 0, None),
    ],
)
def test_byte_range(value: bytes, length: int, span: object) -> None:
    """One satisfiable range; unsatisfiable; or ignored."""
    assert byte_range(value, length) == span


# RFC 9211: Cache-Status ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (CacheStatus(hit=True, ttl=53.7), b"rproxy; hit; ttl=53"),
        (CacheStatus(hit=True, ttl=-5.2), b"rproxy; hit; ttl=-6"),
        (
            CacheStatus(fwd="uri-miss", fwd_status=200, stored=True),
            b"rproxy; fwd=uri-miss; fwd-status=200; stored",
        ),
        (
            CacheStatus(fwd="miss", collapsed=True, detail="no-store"),
            b"rproxy; fwd=miss; collapsed; detail=no-store",
        ),
        (CacheStatus(fwd="stale", detail="a b"), b'rproxy; fwd=stale; detail="a b"'),
    ],
)
def test_cache_status(status: CacheStatus, text: bytes) -> None:
    """Cache-Status members as RFC 9211 writes them."""
    assert status.render("rproxy") == text
