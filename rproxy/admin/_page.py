"""The status page: the JSON status (L{rproxy.admin._status}) rendered as one
HTML document a person reads in a browser.

Server-rendered, no JavaScript; it reloads itself every few seconds with a
C{<meta http-equiv="refresh">}.  Every value from the proxy is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

from rproxy.admin._status import Snapshot
from rproxy.stats import STATUS_CLASSES

__all__ = ["REFRESH_SECONDS", "render_page"]

#: how often the page reloads itself.
REFRESH_SECONDS = 5

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td.text, th.text { text-align: left; }
tr.up td.state { background: #d4f4d4; }
tr.down td.state { background: #f8d0d0; }
tr.draining td.state { background: #fbeec0; }
tr.disabled td.state { background: #ddd; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
"""

_LISTENER_COLUMNS = (
    "listener",
    "protocol",
    "address",
    "pools",
    "active",
    "connections",
    "conn/s",
    "requests",
    "req/s",
    *STATUS_CLASSES,
    "bytes in",
    "bytes out",
)

_BACKEND_COLUMNS = (
    "backend",
    "address",
    "state",
    "in state for",
    "reason",
    "weight",
    "active",
    "connections",
    "conn/s",
    "requests",
    "req/s",
    "2xx",
    "4xx",
    "5xx",
    "no response",
    "failures",
    "last check",
    "checked",
    "bytes in",
    "bytes out",
)

_TEXT_COLUMNS = frozenset(
    {
        "listener",
        "protocol",
        "address",
        "pools",
        "backend",
        "state",
        "reason",
        "last check",
    }
)


def duration(seconds: float | None) -> str:
    """
    C{seconds} as a person reads an age: C{42s}, C{3m 07s}, C{5h 02m},
    C{2d 04h}; C{-} for None.
    """
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(cells: Iterable[tuple[str, object]], css: str = "") -> str:
    cls = f' class="{escape(css)}"' if css else ""
    tds = "".join(
        f'<td class="{escape(column)}">{escape(str(value))}</td>'
        if column in ("text", "state")
        else f"<td>{escape(str(value))}</td>"
        for column, value in cells
    )
    return f"<tr{cls}>{tds}</tr>"


def _head(columns: Iterable[str]) -> str:
    cells = "".join(
        f'<th class="text">{escape(c)}</th>'
        if c in _TEXT_COLUMNS
        else f"<th>{escape(c)}</th>"
        for c in columns
    )
    return f"<tr>{cells}</tr>"


def _pools(listener: dict[str, Any]) -> str:
    """
    The pools a listener routes to, its default pool marked.
    """
    default = listener["pool"]
    return (
        ", ".join(
            f"{pool} (default)" if pool == default else pool
            for pool in listener["pools"]
        )
        or "-"
    )


def _listener_row(listener: dict[str, Any]) -> str:
    requests = listener["requests"]
    protocol = listener["protocol"] + (" (TLS)" if listener["tls"] else "")
    return _row(
        [
            ("text", listener["name"]),
            ("text", protocol),
            ("text", listener["address"] or listener["listen"]),
            ("text", _pools(listener)),
            ("", listener["active"]),
            ("", listener["connections_total"]),
            ("", _rate(listener["connections_per_second"])),
            ("", listener["requests_total"]),
            ("", _rate(listener["requests_per_second"])),
            *(("", requests[c]) for c in STATUS_CLASSES),
            ("", listener["bytes_in"]),
            ("", listener["bytes_out"]),
        ]
    )


def _last_check(backend: dict[str, Any]) -> tuple[str, str]:
    check = backend["last_check"]
    if check is None:
        return "none yet", "-"
    result = "passed" if check["ok"] else "failed"
    if check["duration"] is not None:
        result += f" in {check['duration'] * 1000:.0f} ms"
    return result, duration(check["age"]) + " ago"


def _queued(pool: dict[str, Any]) -> str:
    waiting = pool.get("queue", {}).get("waiting", 0)
    return f", {waiting} queued" if waiting else ""


def _backend_row(backend: dict[str, Any]) -> str:
    responses = backend["responses"]
    check, checked = _last_check(backend)
    state = backend["state"]
    return _row(
        [
            ("text", backend["name"]),
            ("text", backend["address"]),
            # An ejection is not a state: health and admin go on under it.
            ("state", f"{state}, ejected" if backend.get("ejected") else state),
            ("", duration(backend["state_age"])),
            ("text", backend["reason"]),
            ("", backend["weight"]),
            ("", backend["active"]),
            ("", backend["connections_total"]),
            ("", _rate(backend["connections_per_second"])),
            ("", backend["requests_total"]),
            ("", _rate(backend["requests_per_second"])),
            ("", responses["2xx"]),
            ("", responses["4xx"]),
            ("", responses["5xx"]),
            ("", responses["none"]),
            ("", backend["failures_total"]),
            ("text", check),
            ("", checked),
            ("", backend["bytes_in"]),
            ("", backend["bytes_out"]),
        ],
        css=state,
    )


def render_page(status: Snapshot) -> bytes:
    """
    The status page for C{status} (as L{rproxy.admin._status.snapshot}
    makes it), as UTF-8 HTML.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>rproxy status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>rproxy status</h1>",
        f"<p>Rates are per second over the last few seconds; this page "
        f"reloads every {REFRESH_SECONDS} s. Also as "
        '<a href="status.json">JSON</a> and '
        '<a href="metrics">Prometheus metrics</a>.</p>',
        "<h2>Listeners</h2>",
        '<table id="listeners">',
        _head(_LISTENER_COLUMNS),
        *(_listener_row(listener) for listener in status["listeners"]),
        "</table>",
        "<h2>Pools</h2>",
    ]
    for pool in status["pools"]:
        parts += [
            f'<table class="pool" id="pool-{escape(pool["name"])}">',
            f"<caption>pool {escape(pool['name'])} "
            f"({escape(pool['balancer'])}){_queued(pool)}</caption>",
            _head(_BACKEND_COLUMNS),
            *(_backend_row(backend) for backend in pool["backends"]),
            "</table>",
        ]
    parts += _workers(status.get("workers"))
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def _workers(workers: list[dict[str, Any]] | None) -> list[str]:
    """
    The table of worker processes (with C{workers = N}): the counts above
    are their sums.
    """
    if not workers:
        return []
    rows = [
        _row(
            [
                ("", w.get("worker")),
                ("", w.get("pid")),
                ("state", w.get("state")),
                ("", w.get("restarts")),
                ("", sum(x.get("active") or 0 for x in w.get("listeners", ()))),
                (
                    "",
                    sum(x.get("requests_total") or 0 for x in w.get("listeners", ())),
                ),
            ],
            css="up" if w.get("state") == "running" else "draining",
        )
        for w in workers
    ]
    return [
        "<h2>Workers</h2>",
        '<table id="workers">',
        _head(["worker", "pid", "state", "restarts", "active", "requests"]),
        *rows,
        "</table>",
    ]
