"""Request paths and queries as rules compare them: L{normalise_path} (one
percent-decoding, backslashes and repeated slashes as one separator, dot
segments removed as RFC 3986 section 5.2.4 says) and L{decode_query}.  Pure
functions on bytes; what is sent upstream is never changed by them.

Decoding is done once, and every escape is decoded, not only those of
unreserved characters that RFC 3986 section 6.2.2.2 allows: backends differ
in which escapes they decode, and a rule must see the path as the most
trusting of them would.  So C{%2F} and C{%5C} are separators here
(C{..%2f} is a dot segment) and C{%2e%2E} is C{..}.  An escape that decoding
once leaves behind (C{%252e} is C{%2e} once decoded) stays as it is: a
backend that decodes twice is broken, and decoding twice would change paths
that mean a literal C{%}; a rule that wants to refuse double encoding looks
for C{%2e}, C{%2f} or C{%5c} in the normalised path.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

__all__ = ["decode_query", "normalise_path", "split_target"]


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """
    The path and the query (without its C{?}; empty if none) of an
    origin-form request target.
    """
    path, _, query = target.partition(b"?")
    return path, query


def normalise_path(path: bytes) -> tuple[bytes, bool]:
    """
    C{path} (a request path, without the query) as rules see it, and
    whether it had dot segments.

    The path is decoded once, C{\\} read as C{/}, empty segments (C{//})
    merged, C{.} and C{..} segments removed (a C{..} at the root stays at
    the root; a final dot segment leaves a trailing C{/}).  A dot segment is
    also one with parameters (C{..;x}), as Tomcat reads them; a path that
    had one climbs or wanders, which no link produces.  Anything not
    starting with C{/} once decoded (the C{*} of C{OPTIONS *}) is returned
    decoded only.
    """
    # bytes.find, not "in": "in" tries the needle as an int first.
    if (
        path.find(b"/.") < 0
        and path.find(b"//") < 0
        and path.find(b"%") < 0
        and path.find(b"\\") < 0
    ):
        return path, False  # the common case: nothing to do
    decoded = unquote_to_bytes(path) if b"%" in path else path
    decoded = decoded.replace(b"\\", b"/")
    if decoded[:1] != b"/":
        return decoded, False
    out: list[bytes] = []
    dots = False
    segments = decoded.split(b"/")[1:]
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        bare = segment.partition(b";")[0] if b";" in segment else segment
        if bare == b"..":
            dots = True
            if out:
                out.pop()
        elif bare == b".":
            dots = True
        elif segment:
            out.append(segment)
            continue
        if index == last:
            out.append(b"")  # a final "/", "/." or "/.." leaves a trailing "/"
    return b"/" + b"/".join(out), dots


def decode_query(query: bytes) -> bytes:
    """
    A query string (after the C{?}) decoded once as a form would be:
    C{+} is a space, then escapes are decoded (so C{%2B} is C{+}).
    """
    if query.find(b"+") >= 0:
        query = query.replace(b"+", b" ")
    return unquote_to_bytes(query) if query.find(b"%") >= 0 else query
