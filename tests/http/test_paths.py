"""The path normaliser and query decoder the request rules match on: one
decoding, separators, dot segments (RFC 3986 section 5.2.4), and a table of
the encodings and traversal tricks that must not slip past a rule."""

from __future__ import annotations

import pytest

from rproxy.http.paths import decode_query, normalise_path, split_target

#: (raw path, normalised path, had dot segments)
TABLE = [
    # Nothing to do: returned as it is.
    (b"/", b"/", False),
    (b"/api/v1/users/42", b"/api/v1/users/42", False),
    (b"/a/b/", b"/a/b/", False),
    (b"*", b"*", False),
    # RFC 3986 section 5.2.4's own examples, made absolute.
    (b"/a/b/c/./../../g", b"/a/g", True),
    (b"/mid/content=5/../6", b"/mid/6", True),
    # Dot segments, plain.
    (b"/a/./b", b"/a/b", True),
    (b"/a/../b", b"/b", True),
    (b"/a/..", b"/", True),
    (b"/a/.", b"/a/", True),
    (b"/a/b/..", b"/a/", True),
    (b"/..", b"/", True),
    (b"/../../etc/passwd", b"/etc/passwd", True),
    (b"/a/b/../../../../etc/passwd", b"/etc/passwd", True),
    # Percent-encoded dots, any case.
    (b"/%2e%2e/etc/passwd", b"/etc/passwd", True),
    (b"/%2E%2E/etc/passwd", b"/etc/passwd", True),
    (b"/a/%2e%2E/b", b"/b", True),
    (b"/a/%2e./b", b"/b", True),
    (b"/a/.%2e/b", b"/b", True),
    (b"/a/%2e/b", b"/a/b", True),
    # Encoded separators are separators: ..%2f and ..%5c climb.
    (b"/a/..%2f..%2fetc/passwd", b"/etc/passwd", True),
    (b"/a/..%2F..%2Fetc/passwd", b"/etc/passwd", True),
    (b"/static/%2e%2e%2f%2e%2e%2fetc/passwd", b"/etc/passwd", True),
    (b"/a/..%5c..%5cwindows/win.ini", b"/windows/win.ini", True),
    # Backslashes are separators (IIS, Windows backends).
    (b"/a/..\\..\\windows\\win.ini", b"/windows/win.ini", True),
    (b"\\..\\etc", b"/etc", True),
    # Repeated slashes are one.
    (b"//etc/passwd", b"/etc/passwd", False),
    (b"/a//b///c", b"/a/b/c", False),
    (b"/a/.//../b", b"/b", True),
    # Path parameters on a dot segment (Tomcat reads /..;/ as /../).
    (b"/public/..;/admin", b"/admin", True),
    (b"/public/..;jsessionid=x/admin", b"/admin", True),
    (b"/a;x=1/b", b"/a;x=1/b", False),
    # Decoded once only: a double encoding stays an escape.
    (b"/%252e%252e/etc/passwd", b"/%2e%2e/etc/passwd", False),
    (b"/a/%252e%252e%252fb", b"/a/%2e%2e%2fb", False),
    (b"/100%2525", b"/100%25", False),
    # Other escapes are decoded too; invalid ones stay as they are.
    (b"/files/report%2Epdf", b"/files/report.pdf", False),
    (b"/%7Euser/%41", b"/~user/A", False),
    (b"/caf%C3%A9", "/café".encode(), False),
    (b"/a%00.php", b"/a\x00.php", False),
    (b"/50%/x%zz/%", b"/50%/x%zz/%", False),
    # Names that only start with a dot are no dot segments.
    (b"/.well-known/acme-challenge/x", b"/.well-known/acme-challenge/x", False),
    (b"/a/...", b"/a/...", False),
    (b"/a/.hidden/..x", b"/a/.hidden/..x", False),
    # Overlong UTF-8 is not a dot: it decodes to its bytes (a rule may
    # look for them).
    (b"/%c0%ae%c0%ae/etc", b"/\xc0\xae\xc0\xae/etc", False),
]


@pytest.mark.parametrize(("raw", "path", "dots"), TABLE)
def test_normalised_paths(raw: bytes, path: bytes, dots: bool) -> None:
    """Each encoding or trick in the table normalises to the path a backend
    that decodes and resolves it would serve, and says whether it had dot
    segments."""
    assert normalise_path(raw) == (path, dots)


@pytest.mark.parametrize(("raw", "path", "dots"), TABLE)
def test_normalising_twice_changes_nothing_more_than_one_decoding(
    raw: bytes, path: bytes, dots: bool
) -> None:
    """A normalised path without escapes is its own normal form: the
    resolution is complete in one pass."""
    if b"%" not in path:
        assert normalise_path(path) == (path, False)


def test_split_target() -> None:
    """The path is what comes before the first '?', the query after it."""
    assert split_target(b"/a?b=1?c") == (b"/a", b"b=1?c")
    assert split_target(b"/a") == (b"/a", b"")
    assert split_target(b"/a?") == (b"/a", b"")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"", b""),
        (b"id=1", b"id=1"),
        (b"id=1+UNION+SELECT+1", b"id=1 UNION SELECT 1"),
        (b"id=1%20union%20select", b"id=1 union select"),
        (b"a=%2B1", b"a=+1"),
        (b"q=%253Cscript", b"q=%3Cscript"),
        (b"q=%zz%", b"q=%zz%"),
        (b"q=%3Cscript%3E", b"q=<script>"),
    ],
)
def test_decoded_queries(raw: bytes, decoded: bytes) -> None:
    """A query is decoded once, as a form: '+' is a space, then escapes
    (so an encoded '+' stays a '+')."""
    assert decode_query(raw) == decoded
