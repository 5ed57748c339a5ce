"""The request rules as the config describes them: L{Condition},
L{RuleConfig}, L{RuleSetConfig}.  Plain frozen data (patterns as text, list
files as their entries), compared on reload; L{rproxy.http.filters.rules}
compiles them."""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = [
    "ACTIONS",
    "BODY_ACTIONS",
    "NAMED_SUBJECTS",
    "NUMBER_SUBJECTS",
    "OPERATORS",
    "TERMINAL",
    "TEXT_SUBJECTS",
    "Condition",
    "RuleConfig",
    "RuleSetConfig",
]

#: what a rule that matches does.
ACTIONS = ("deny", "allow", "log", "tarpit", "set_header")
#: the actions that end the rule set's evaluation: the first of these to
#: match wins.  C{log} and C{set_header} rules act and evaluation goes on.
TERMINAL = frozenset({"deny", "allow", "tarpit"})
#: the actions a rule on a body's size may take (a chunked body is counted
#: while it streams, after the head went upstream).
BODY_ACTIONS = frozenset({"deny", "tarpit", "log"})

#: subjects whose text is compared: the method, the normalised path, the
#: decoded query, the TLS server name.
TEXT_SUBJECTS = ("method", "path", "query", "sni")
#: subjects named by a field: C{header = "User-Agent"}, C{cookie = "sid"}.
NAMED_SUBJECTS = ("header", "cookie")
#: subjects compared with a number (C{_over}: more than).
NUMBER_SUBJECTS = ("header_count", "header_bytes", "body")
#: how text is compared.
OPERATORS = ("equals", "prefix", "contains", "regex", "list")

_SUBJECTS = (*TEXT_SUBJECTS, *NAMED_SUBJECTS, *NUMBER_SUBJECTS, "client", "traversal")


@frozen
class Condition:
    """
    One test of a request; a rule matches when all of its conditions do.

    @ivar subject: what is tested: one of L{TEXT_SUBJECTS} or
        L{NAMED_SUBJECTS}, C{"client"} (the client's address),
        C{"traversal"} (the path had dot segments), or one of
        L{NUMBER_SUBJECTS}.
    @ivar operator: for text, one of L{OPERATORS}, or C{"present"} for a
        named subject; C{"cidr"} for the client; C{"over"} for numbers;
        C{"is"} for traversal.
    @ivar values: the strings compared with (any one matching is enough):
        values, patterns, a list file's entries, or networks.
    @ivar name: the field or cookie name of a named subject.
    @ivar limit: the number an C{"over"} condition's subject must exceed.
    @ivar flag: what C{"present"} and C{"is"} conditions want (true: the
        field is there / the path had dot segments).
    @ivar ignore_case: C{equals}, C{prefix} and C{contains} ignore ASCII
        case (a C{list} always does; a regex says so itself, C{(?i)}).
    @ivar source: the list file the values came from, for messages.
    """

    subject: str = field(validator=validators.in_(_SUBJECTS))
    operator: str
    values: tuple[str, ...] = ()
    name: str | None = None
    limit: int = 0
    flag: bool = True
    ignore_case: bool = False
    source: str | None = None


@frozen
class RuleConfig:
    """
    One rule: its conditions and what it does when they all match.

    @ivar name: given in the file, or its key path in the rule set
        (C{"api.deny[2]"}, C{"api.rule[0]"}, C{"api.max_body"}).
    @ivar status: the answer of a C{deny} rule.
    @ivar seconds: how long a C{tarpit} rule holds a request before
        dropping its connection.
    @ivar set_fields: the request fields a C{set_header} rule sets
        (replacing any of the same name).
    """

    name: str
    action: str = field(validator=validators.in_(ACTIONS))
    conditions: tuple[Condition, ...] = ()
    status: int = field(default=403, validator=[validators.ge(400), validators.le(599)])
    seconds: float = field(default=10.0, validator=validators.gt(0.0))
    set_fields: tuple[tuple[str, str], ...] = ()


@frozen
class RuleSetConfig:
    """
    A named rule set (C{[rules.NAME]}), its rules in evaluation order.

    @ivar tarpit_max_held: requests its C{tarpit} rules hold at once; one
        more is dropped at once.
    """

    name: str
    rules: tuple[RuleConfig, ...] = ()
    tarpit_max_held: int = field(default=100, validator=validators.gt(0))
