"""The header rewriting keys a listener or a route may have:
C{set_request_headers}, C{remove_request_headers}, C{add_response_headers}
and C{remove_response_headers}, read into a L{HeaderRules}."""

from __future__ import annotations

from rproxy.config._validate import Table, child, header_name, quoted, show
from rproxy.http.filters.headers import UNREWRITABLE, HeaderRules

__all__ = ["HEADER_KEYS", "parse_header_rules"]

#: the keys this module reads.
HEADER_KEYS = (
    "set_request_headers",
    "remove_request_headers",
    "add_response_headers",
    "remove_response_headers",
)

_FORBIDDEN = tuple(sorted(name.decode() for name in UNREWRITABLE))


def _rewritable(value: object) -> bytes:
    name = header_name(value).lower()
    if name.encode() in UNREWRITABLE:
        raise ValueError(
            f"cannot rewrite {value!r}: it frames or routes the message; "
            f"the headers that cannot be rewritten are {quoted(_FORBIDDEN)}"
        )
    return name.encode("ascii")


def _field_value(value: object) -> bytes:
    if not isinstance(value, str) or not all(
        " " <= c <= "~" or c == "\t" for c in value
    ):
        raise ValueError(f"must be a string of printable ASCII, got {show(value)}")
    return value.strip().encode("ascii")


def _fields(table: Table, key: str) -> tuple[tuple[bytes, bytes], ...]:
    if key not in table.data:
        return ()
    raw = table.data[key]
    if not isinstance(raw, dict):
        table.report(key, f'must be a table, as {key} = {{ "X-Name" = "value" }}')
        return ()
    fields = []
    for name, value in raw.items():
        path = child(table.path, key)
        try:
            fields.append((_rewritable(name), _field_value(value)))
        except ValueError as e:
            table.problems.add(child(path, name), str(e))
    return tuple(fields)


def parse_header_rules(
    table: Table, *, remove_response: tuple[bytes, ...] | None = None
) -> HeaderRules:
    """
    The header rules of the listener or route C{table}.

    @param remove_response: the names to remove from responses, when the
        caller reads that key itself (a listener's older key, whose checks
        allow more names); read here otherwise.
    """
    if remove_response is None:
        remove_response = table.array("remove_response_headers", _rewritable)
    return HeaderRules(
        set_request=_fields(table, "set_request_headers"),
        remove_request=frozenset(table.array("remove_request_headers", _rewritable)),
        add_response=_fields(table, "add_response_headers"),
        remove_response=frozenset(remove_response),
    )
