"""The C{[rules.NAME]} tables: named request rule sets that routes opt into
with C{rules = "NAME"}, read into L{RuleSetConfig}s.

A set's rules, in the order they are evaluated:

  1. C{[[rules.NAME.rule]]} tables, in file order, each with an C{action};
  2. the shorthand arrays, one per action, in this order: C{log},
     C{set_header}, C{allow}, C{deny}, C{tarpit} (each element a rule
     without C{action});
  3. the size limits C{max_headers}, C{max_header_bytes} (431) and
     C{max_body} (413), as deny rules.

Regexes are compiled and list files read here, so that a bad pattern or a
missing file refuses the config with its file and key.
"""

from __future__ import annotations

from collections.abc import Callable

from rproxy.config._headers import _field_value, _rewritable
from rproxy.config._pools import Timeouts
from rproxy.config._tls import _base, _path
from rproxy.config._validate import (
    TOKEN,
    Table,
    boolean,
    byte_size,
    child,
    header_name,
    ip_network,
    item,
    non_negative_int,
    one_of,
    positive_int,
    positive_number,
    show,
    string,
)
from rproxy.http.filters.rules import (
    ACTIONS,
    BODY_ACTIONS,
    OPERATORS,
    TEXT_SUBJECTS,
    Condition,
    RuleConfig,
    RuleSetConfig,
    compile_list,
    compile_regex,
    compile_rules,
    read_list,
)

__all__ = ["MATCH_KEYS", "RULE_SET_KEYS", "SHORTHANDS", "parse_rules"]

#: the shorthand arrays, in the order their rules are evaluated.
SHORTHANDS = ("log", "set_header", "allow", "deny", "tarpit")
#: the size limits of a set, each a deny rule after all the others.
_LIMITS = (
    ("max_headers", "header_count", 431),
    ("max_header_bytes", "header_bytes", 431),
    ("max_body", "body", 413),
)
#: the keys of a C{[rules.NAME]} table.
RULE_SET_KEYS = (
    "rule",
    *SHORTHANDS,
    *(key for key, _, _ in _LIMITS),
    "tarpit_max_held",
)

_SUFFIXES = {"": "equals", "_prefix": "prefix", "_contains": "contains"} | {
    "_regex": "regex",
    "_list": "list",
}
_NAMED_OPERATORS = (*OPERATORS, "present")
_NUMBERS = ("header_count_over", "header_bytes_over", "body_over")
#: the keys that say what a rule matches.
MATCH_KEYS = (
    *(subject + suffix for subject in TEXT_SUBJECTS for suffix in _SUFFIXES),
    "header",
    "cookie",
    *_NAMED_OPERATORS,
    "client",
    "client_list",
    *_NUMBERS,
    "traversal",
    "ignore_case",
)
#: the keys of one rule, each only for the action named.
_ACTION_KEYS = {"status": "deny", "seconds": "tarpit", "set": "set_header"}
_RULE_KEYS = ("name", "action", *_ACTION_KEYS, *MATCH_KEYS)


def parse_rules(
    top: Table, source: str, timeouts: Timeouts
) -> dict[str, RuleSetConfig | None]:
    """
    The C{[rules.NAME]} tables of the file C{source}, by name (problems
    reported to C{top}; a broken set is None, so that routes naming it are
    not reported too).  C{timeouts} are the global ones: a tarpit must let
    go of a request before the listener times it out.
    """
    return top.named(
        "rules",
        "rule sets",
        RULE_SET_KEYS,
        lambda t, name: _rule_set(t, name, source, timeouts),
    )


def _rule_set(
    table: Table, name: str, source: str, timeouts: Timeouts
) -> RuleSetConfig | None:
    found = len(table.problems.lines)
    reader = _RuleReader(table, name, _base(source), timeouts)
    rules: list[tuple[str, RuleConfig | None]] = []
    for index, entry in enumerate(_array(table, "rule")):
        key = item("rule", index)
        rules.append((key, reader.rule(key, entry, None)))
    for action in SHORTHANDS:
        for index, entry in enumerate(_array(table, action)):
            key = item(action, index)
            rules.append((key, reader.rule(key, entry, action)))
    for key, subject, status in _LIMITS:
        limit = table.get(
            key, positive_int if key == "max_headers" else byte_size, None
        )
        if limit is not None:
            condition = Condition(subject, "over", limit=limit)
            rules.append(
                (key, RuleConfig(f"{name}.{key}", "deny", (condition,), status))
            )
    first: dict[str, str] = {}
    for key, rule in rules:
        if rule is None:
            continue
        if rule.name in first:
            table.problems.add(
                child(f"{table.path}.{key}", "name"),
                f"{rule.name!r} is also the name of {first[rule.name]}; "
                "the rules of a set need names of their own",
            )
        first.setdefault(rule.name, key)
    held = table.get("tarpit_max_held", positive_int, 100)
    if len(table.problems.lines) != found:
        return None
    rule_set = RuleSetConfig(name, tuple(r for _, r in rules if r is not None), held)
    try:
        compile_rules(rule_set)
    except ValueError as error:
        table.problems.add(table.path, str(error))
        return None
    return rule_set


def _array(table: Table, key: str) -> list[object]:
    if key not in table:
        return []
    value = table.data[key]
    if not isinstance(value, list):
        how = f"[[{table.path}.rule]]" if key == "rule" else f"{key} = [{{ ... }}]"
        table.report(key, f"must be an array of tables, as {how}")
        return []
    return value


class _RuleReader:
    """Reads the rules of one set: their conditions and action keys."""

    def __init__(self, table: Table, name: str, base: str, timeouts: Timeouts):
        self.table = table
        self.name = name
        self.path = _path(base)
        self.timeouts = timeouts

    def rule(self, key: str, data: object, action: str | None) -> RuleConfig | None:
        """
        The rule at C{key} (C{"deny[2]"}); C{action} for a shorthand's
        element, None to read it from the table.
        """
        path = f"{self.table.path}.{key}"
        table = Table.open(self.table.problems, path, data, _RULE_KEYS)
        if table is None:
            return None
        found = len(table.problems.lines)
        if action is None:
            action = table.require("action", one_of(ACTIONS))
        elif "action" in table:
            table.report(
                "action",
                f"a {action} = [...] rule takes its action from the array; "
                "write action in a [[rules.NAME.rule]] table",
            )
        name = table.get("name", string, f"{self.name}.{key}")
        conditions = self.conditions(table)
        for action_key, needs in _ACTION_KEYS.items():
            if action_key in table and action is not None and action != needs:
                table.report(action_key, f"only for {needs} rules")
        status = table.get("status", _deny_status, 403)
        seconds = table.get("seconds", positive_number, 10.0)
        if action == "tarpit" and seconds >= self.timeouts.response:
            table.report(
                "seconds",
                f"must be shorter than timeouts.response ({self.timeouts.response:g}"
                " s): the listener answers 504 to a request held that long",
            )
        fields: tuple[tuple[str, str], ...] = ()
        if action == "set_header":
            fields = self.set_fields(table)
        body = any(condition.subject == "body" for condition in conditions)
        if body and action is not None and action not in BODY_ACTIONS:
            table.report(
                "body_over",
                f"a {action} rule cannot test the body size (a chunked body is "
                "counted after its head went upstream); only deny, tarpit and log",
            )
        if action is None or len(table.problems.lines) != found:
            return None
        return RuleConfig(name, action, conditions, status, seconds, fields)

    def set_fields(self, table: Table) -> tuple[tuple[str, str], ...]:
        raw = table.data.get("set")
        if not isinstance(raw, dict) or not raw:
            table.report(
                "set", 'missing: a set_header rule needs set = { "X-Name" = "value" }'
            )
            return ()
        fields = []
        for name, value in raw.items():
            try:
                fields.append((name, _field_value(value).decode("ascii")))
                _rewritable(name)
            except ValueError as e:
                table.problems.add(child(child(table.path, "set"), name), str(e))
        return tuple(fields)

    def conditions(self, table: Table) -> tuple[Condition, ...]:
        """The conditions of the rule C{table}, in a stable order."""
        fold = table.get("ignore_case", boolean, False)
        found: list[Condition] = []
        for subject in TEXT_SUBJECTS:
            for suffix, operator in _SUFFIXES.items():
                key = subject + suffix
                if key in table:
                    condition = self.text(table, key, subject, operator, fold)
                    if condition is not None:
                        found.append(condition)
        found.extend(self.named(table, fold))
        if "client" in table:
            networks = _values(table, "client", ip_network)
            if networks:
                found.append(Condition("client", "cidr", networks))
        if "client_list" in table:
            found.extend(self.client_list(table))
        for key in _NUMBERS:
            convert = non_negative_int if key == "header_count_over" else _size
            limit = table.get(key, convert, None)
            if limit is not None:
                found.append(Condition(key.removesuffix("_over"), "over", limit=limit))
        traversal = table.get("traversal", boolean, None)
        if traversal is not None:
            found.append(Condition("traversal", "is", flag=traversal))
        return tuple(found)

    def text(
        self, table: Table, key: str, subject: str, operator: str, fold: bool
    ) -> Condition | None:
        if operator == "list":
            return self.listed(table, key, subject, None)
        values = _values(table, key, string)
        if not values:
            return None
        if operator == "regex" and not _regexes(table, key, values):
            return None
        return Condition(subject, operator, values, ignore_case=fold)

    def listed(
        self, table: Table, key: str, subject: str, name: str | None
    ) -> Condition | None:
        path = table.get(key, self.path, None)
        if path is None:
            return None
        try:
            entries = read_list(path)
            compile_list(entries)
        except ValueError as error:
            table.report(key, str(error))
            return None
        return Condition(subject, "list", entries, name=name, source=path)

    def named(self, table: Table, fold: bool) -> list[Condition]:
        subjects = [subject for subject in ("header", "cookie") if subject in table]
        operators = [key for key in _NAMED_OPERATORS if key in table]
        if len(subjects) > 1:
            table.report(
                "cookie",
                "a rule tests one header or one cookie: write a rule per field",
            )
            return []
        if not subjects:
            for key in operators:
                table.report(key, "needs header = NAME or cookie = NAME")
            return []
        (subject,) = subjects
        name = table.get(subject, header_name if subject == "header" else _cookie, None)
        if name is None:
            return []
        if not operators:
            table.report(
                subject,
                f"says which {subject}, but nothing tests it: add one of "
                + ", ".join(_NAMED_OPERATORS),
            )
            return []
        found = []
        for operator in operators:
            if operator == "present":
                flag = table.get("present", boolean, None)
                if flag is not None:
                    found.append(Condition(subject, "present", name=name, flag=flag))
            elif operator == "list":
                listed = self.listed(table, "list", subject, name)
                if listed is not None:
                    found.append(listed)
            else:
                values = _values(table, operator, string)
                if values and (
                    operator != "regex" or _regexes(table, operator, values)
                ):
                    found.append(
                        Condition(
                            subject, operator, values, name=name, ignore_case=fold
                        )
                    )
        return found

    def client_list(self, table: Table) -> list[Condition]:
        path = table.get("client_list", self.path, None)
        if path is None:
            return []
        try:
            entries = read_list(path)
        except ValueError as error:
            table.report("client_list", str(error))
            return []
        bad = ", ".join(repr(entry) for entry in entries if not _is_network(entry))
        if bad:
            table.report("client_list", f"{path}: not IP addresses or networks: {bad}")
            return []
        return [Condition("client", "cidr", entries, source=path)]


def _values(
    table: Table, key: str, convert: Callable[[object], str]
) -> tuple[str, ...]:
    """A string or a non-empty array of them, each passed through C{convert}."""
    value = table.data[key]
    if isinstance(value, list):
        if not value:
            table.report(key, "is empty: give a value or an array of values")
        return table.array(key, convert)
    one = table.get(key, convert, None)
    return () if one is None else (one,)


def _regexes(table: Table, key: str, patterns: tuple[str, ...]) -> bool:
    ok = True
    for pattern in patterns:
        try:
            compile_regex(pattern)
        except ValueError as error:
            table.report(key, str(error))
            ok = False
    return ok


def _is_network(text: str) -> bool:
    try:
        ip_network(text)
    except ValueError:
        return False
    return True


def _cookie(value: object) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise ValueError(
            f"must be a cookie name (an RFC 9110 token), got {show(value)}"
        )
    return value


def _size(value: object) -> int:
    """A size in bytes that may be 0 (C{body_over = 0}: any body)."""
    if value == 0 and not isinstance(value, bool):
        return 0
    return byte_size(value)


def _deny_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"must be a status from 400 to 599, got {show(value)}")
    return value
