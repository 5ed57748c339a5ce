"""The C{[limits.NAME]} tables: named rate limits that routes (and HTTP
listeners) apply with C{limit = ["NAME", ...]}."""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen, validators

from rproxy.config._validate import (
    Table,
    boolean,
    did_you_mean,
    non_negative_int,
    one_of,
    positive_int,
    quoted,
    show,
    string,
)
from rproxy.limits.gcra import Rate
from rproxy.limits.keys import check_key_part
from rproxy.limits.limiter import FAILS, MAX_KEYS, MODES
from rproxy.limits.store import RedisAddress

__all__ = ["LIMIT_KEYS", "LimitConfig", "parse_limit_names", "parse_limits"]

#: the keys of a C{[limits.NAME]} table.
LIMIT_KEYS = ("key", "rate", "burst", "mode", "store", "fail", "max_keys", "headers")


@frozen
class LimitConfig:
    """
    One named rate limit.

    @ivar key: what requests are counted under (L{rproxy.limits.keys}):
        key parts, a combination when there are several.
    @ivar rate: the rate each key keeps to.
    @ivar burst: how many requests beyond the rate may come at once (or be
        held, with C{mode = "delay"}).
    @ivar mode: C{"reject"} (429 over the rate) or C{"delay"} (held up to
        the burst, 429 beyond it).
    @ivar store: the Redis server the state is shared in, or None for this
        process's own.
    @ivar fail: with a store, what to do while it is unreachable: C{"open"}
        (decide locally) or C{"closed"} (answer 503).
    @ivar max_keys: the most keys held in memory (the least recently seen
        go first).
    @ivar headers: add the RateLimit fields to allowed responses too.
    """

    name: str
    rate: Rate
    burst: int = field(default=0, validator=validators.ge(0))
    key: tuple[str, ...] = ("client_ip",)
    mode: str = field(default="reject", validator=validators.in_(MODES))
    store: RedisAddress | None = None
    fail: str = field(default="open", validator=validators.in_(FAILS))
    max_keys: int = field(default=MAX_KEYS, validator=validators.ge(1))
    headers: bool = False


def _name(name: str) -> str | None:
    """
    What is wrong with C{name} as a limit's name (it goes in response
    fields), or None.
    """
    if all(" " <= c <= "~" for c in name) and name:
        return None
    return "a limit's name must be printable ASCII (it is sent in the RateLimit fields)"


def _key(value: object) -> tuple[str, ...]:
    parts = [value] if isinstance(value, str) else value
    if not isinstance(parts, list) or not parts:
        raise ValueError(
            "must be a key part ('client_ip', 'route', 'header:NAME') or a "
            f"non-empty array of them, got {show(value)}"
        )
    checked = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"key parts must be strings, got {show(part)}")
        checked.append(check_key_part(part))
    if len(set(checked)) != len(checked):
        raise ValueError(f"names a key part twice: {quoted(checked)}")
    return tuple(checked)


def _rate(value: object) -> Rate:
    if not isinstance(value, str):
        raise ValueError(f"must be a rate such as '20/s', got {show(value)}")
    return Rate.parse(value)


def _store(value: object) -> RedisAddress:
    return RedisAddress.parse(string(value))


def parse_limits(top: Table, response_timeout: float) -> dict[str, LimitConfig | None]:
    """
    The C{[limits.NAME]} tables, by name (problems reported to C{top}; a
    broken limit is None, so that routes naming it are not reported too).
    A limit that holds requests must let them go within
    C{response_timeout}, the time an exchange may wait on its filters.
    """
    return top.named(
        "limits",
        "limits",
        LIMIT_KEYS,
        lambda t, name: _limit(t, name, response_timeout),
    )


def _limit(table: Table, name: str, response_timeout: float) -> LimitConfig | None:
    found = len(table.problems.lines)
    if problem := _name(name):
        table.problems.add(table.path, problem)
    defaults = LimitConfig(name, Rate(1, 1))
    rate = table.require("rate", _rate)
    burst = table.get("burst", non_negative_int, defaults.burst)
    key = table.get("key", _key, defaults.key)
    mode = table.get("mode", one_of(MODES), defaults.mode)
    store = table.get("store", _store, None)
    fail = table.get("fail", one_of(FAILS), defaults.fail)
    if "fail" in table and "store" not in table:
        table.report("fail", "is only used with a store (what to do while it is down)")
    max_keys = table.get("max_keys", positive_int, defaults.max_keys)
    headers = table.get("headers", boolean, defaults.headers)
    if rate is not None and mode == "delay":
        longest = burst * rate.interval
        if longest >= response_timeout:
            table.report(
                "burst",
                f"mode = 'delay' would hold a request up to {longest:g} s "
                f"(burst / rate), but timeouts.response ({response_timeout:g} "
                "s) answers 504 sooner: lower the burst or raise the timeout",
            )
    if rate is None or len(table.problems.lines) != found:
        return None
    return LimitConfig(name, rate, burst, key, mode, store, fail, max_keys, headers)


def parse_limit_names(
    table: Table,
    limits: Mapping[str, LimitConfig | None],
    *,
    listener: bool,
) -> tuple[str, ...]:
    """
    The limits the C{limit} key of a route (or, with C{listener}, an HTTP
    listener) names: a name or an array of names of C{[limits.NAME]}
    tables.  A listener's limits run before routing, so they cannot count
    by C{route}.
    """
    if "limit" not in table:
        return ()
    value = table.data["limit"]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        table.report(
            "limit", f"must be a limit's name or an array of them, got {show(value)}"
        )
        return ()
    known = [name for name in names if name in limits]
    for name in names:
        if name not in limits:
            hint = did_you_mean(name, limits) or (
                f"limits are {quoted(limits)}"
                if limits
                else "there is no [limits.NAME]"
            )
            table.report("limit", f"no limit named {name!r}; {hint}")
    if len(set(names)) != len(names):
        table.report("limit", f"names a limit twice: {quoted(names)}")
    if listener:
        for name in known:
            limit = limits[name]
            if limit is not None and "route" in limit.key:
                table.report(
                    "limit",
                    f"limit {name!r} counts by route, but a listener's limits "
                    "run before a request is routed: put it on the routes",
                )
    return tuple(names)
