"""A route's C{compress} key: C{true} for the defaults, or a table of
settings (see L{rproxy.http.filters.compress.compress_settings})."""

from __future__ import annotations

from typing import Any

from rproxy.config._validate import Table, child, show

__all__ = ["parse_compress"]


def parse_compress(table: Table) -> Any:
    """
    The compression settings of the route C{table}, or None (problems
    reported to it).
    """
    if "compress" not in table:
        return None
    value = table.data["compress"]
    if value is False:
        return None
    if value is not True and not isinstance(value, dict):
        table.report("compress", f"must be true, false or a table, got {show(value)}")
        return None
    from rproxy.http.filters.compress import compress_settings

    where = f"{table.problems.source}: {child(table.path, 'compress')}"
    try:
        return compress_settings({} if value is True else value, where)
    except ValueError as e:
        # Each line already names the file and the key.
        table.problems.lines.extend(getattr(e, "errors", None) or [f"{where}: {e}"])
        return None
