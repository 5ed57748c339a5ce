"""One compiled rule (L{Rule}, with its L{RuleStats}) and the search for
the next rule a request matches (L{first_match}): the loop every request
on a route with rules runs, compiled with the rest of the hot path."""

from __future__ import annotations

from rproxy.http.errors import error_body
from rproxy.http.filters import PLAIN_TEXT, LocalReply
from rproxy.http.filters.rules._match import Check, Patterns, compile_condition
from rproxy.http.filters.rules._model import TERMINAL, RuleConfig
from rproxy.http.filters.rules._view import RequestView

__all__ = ["Rule", "RuleStats", "first_match"]


class RuleStats:
    """
    What one rule has done: its hits (kept across reloads while the rule
    stays the same).
    """

    def __init__(self) -> None:
        self.hits = 0


class Rule:
    """
    One compiled rule (see L{RuleConfig}).

    @ivar checks: its conditions but the body's size, all to pass.
    @ivar body_over: the body size it needs to be past, or None.
    """

    def __init__(
        self,
        config: RuleConfig,
        stats: RuleStats | None = None,
        patterns: Patterns | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.action = config.action
        self.terminal = config.action in TERMINAL
        self.stats = stats if stats is not None else RuleStats()
        self.seconds = config.seconds
        checks: list[Check] = []
        self.body_over: int | None = None
        for condition in config.conditions:
            if condition.subject == "body":
                self.body_over = condition.limit
            else:
                checks.append(compile_condition(condition, patterns))
        self.checks = tuple(checks)
        self.reply = LocalReply(config.status, PLAIN_TEXT, error_body(config.status))
        self.fields = tuple(
            (name.encode("ascii"), value.encode("latin-1"))
            for name, value in config.set_fields
        )
        self.remove = frozenset(name.lower() for name, _ in self.fields)


def first_match(rules: tuple[Rule, ...], start: int, view: RequestView) -> int:
    """
    The index of the first of C{rules} from C{start} on whose conditions
    (but the body's size) C{view} meets, or -1.
    """
    for index in range(start, len(rules)):
        for check in rules[index].checks:
            if not check(view):
                break
        else:
            return index
    return -1
