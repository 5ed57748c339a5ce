"""A compiled rule set and its filter: L{RuleSet} runs a request head
through its rules (the first deny, allow or tarpit rule to match decides;
log and set_header rules act and let evaluation go on), L{RulesFilter}
puts it on a route, L{Tarpit} holds what tarpit rules catch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rproxy.http.filters import HTTPFilter, Step
from rproxy.http.filters.rules._match import Patterns
from rproxy.http.filters.rules._model import RuleSetConfig
from rproxy.http.filters.rules._rule import Rule, RuleStats, first_match
from rproxy.http.filters.rules._view import RequestView
from rproxy.http.framing import RequestHead

if TYPE_CHECKING:
    from rproxy.http.exchange import Exchange

__all__ = [
    "REFUSED_BY",
    "BodyRulesFilter",
    "Rule",
    "RuleSet",
    "RuleStats",
    "RulesFilter",
    "Tarpit",
    "compile_rules",
]

log = Logger(namespace="rproxy.rules")

#: the exchange note (and access event field) naming the rule that refused
#: a request.
REFUSED_BY = "refused_by"
#: the exchange note holding the body-size rules still counting a body.
_WATCH = "rules.body"
#: actions whose hits are logged (allow and set_header hits are counted).
_LOGGED = frozenset({"deny", "tarpit", "log"})

T = TypeVar("T")


class Tarpit:
    """
    The requests a rule set's tarpit rules hold: each for its rule's
    seconds, then its connection is dropped (no response).  At most
    C{max_held} at once: one more is dropped at once (C{overflows}; at the
    reactor's next turn).
    A request whose client left meanwhile is let go when its time is up.
    """

    def __init__(self, clock: IReactorTime, max_held: int) -> None:
        self.clock = clock
        self.max_held = max_held
        self.held = 0
        self.overflows = 0

    def hold(self, exchange: Exchange, seconds: float, result: T) -> Deferred[T]:
        """
        Hold C{exchange} (its hooks suspended on the Deferred returned,
        which fires with C{result} once the connection is dropped).
        """
        done: Deferred[T] = Deferred()
        held = self.held < self.max_held
        if held:
            self.held += 1
        else:
            self.overflows += 1
            seconds = 0.0  # dropped at the next turn, once the hook returned

        def release() -> None:
            if held:
                self.held -= 1
            _drop(exchange)
            done.callback(result)

        self.clock.callLater(seconds, release)
        return done


def _drop(exchange: Exchange) -> None:
    # The client's connection goes without an answer (it is reset); one
    # that ended meanwhile (the client left, a timeout) is left alone.
    if exchange.codec.exchange is exchange:
        exchange.codec.abort()


class _BodyWatch:
    """The body-size rules still counting one chunked request body."""

    __slots__ = ("rules", "seen")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.seen = 0


def compile_rules(
    config: RuleSetConfig,
    stats: Mapping[str, RuleStats] | None = None,
    patterns: Patterns | None = None,
) -> tuple[Rule, ...]:
    """
    The compiled rules of C{config}, their regexes and lists in one pattern
    bank per subject (of C{patterns}, empty, if given); C{stats} are those
    to keep, by rule name.

    @raise ValueError: if RE2 cannot compile the patterns of a subject.
    """
    stats = stats or {}
    if patterns is None:
        patterns = Patterns()
    for rule in config.rules:
        for condition in rule.conditions:
            patterns.reserve(condition)
    rules = tuple(Rule(rule, stats.get(rule.name), patterns) for rule in config.rules)
    patterns.compile()
    return rules


class RuleSet:
    """
    The compiled rules of one C{[rules.NAME]}, in order, with a filter
    (C{filter}) that runs them on the requests of the routes naming it.

    @param stats: the stats of rules kept from an earlier version of the
        set, by rule name (only those whose config is unchanged are
        passed).
    @param tarpit: the tarpit to share with an earlier version of the set,
        so that its bound holds across reloads.
    @raise ValueError: if RE2 cannot compile the set's patterns (each was
        checked when the config was read; together they may not fit).
    """

    def __init__(
        self,
        config: RuleSetConfig,
        clock: IReactorTime,
        *,
        stats: Mapping[str, RuleStats] | None = None,
        tarpit: Tarpit | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        #: the pattern banks of its rules' regexes and lists.
        self.patterns = Patterns()
        self.rules = compile_rules(config, stats, self.patterns)
        if tarpit is None:
            tarpit = Tarpit(clock, config.tarpit_max_held)
        tarpit.max_held = config.tarpit_max_held
        self.tarpit = tarpit
        body = any(rule.body_over is not None for rule in self.rules)
        self.filter: RulesFilter = (BodyRulesFilter if body else RulesFilter)(self)

    def check(self, exchange: Exchange, head: RequestHead) -> Step:
        """
        Run C{head} through the rules: a deny rule's answer, a tarpit's
        Deferred, or None to let the request on.  Body-size rules that
        cannot know a chunked body's size yet are left counting it.
        """
        rules = self.rules
        view = RequestView(exchange, head)
        index = first_match(rules, 0, view)
        if index < 0:
            return None  # the common case: no rule matches
        watching: list[Rule] | None = None
        while index >= 0:
            rule = rules[index]
            limit = rule.body_over
            if limit is None or (
                head.body != "chunked" and (head.content_length or 0) > limit
            ):
                action = rule.action
                self.hit(rule, exchange)
                if action == "set_header":
                    remove = rule.remove
                    head.headers = [
                        f for f in head.headers if f[0].lower() not in remove
                    ]
                    head.headers.extend(rule.fields)
                elif action == "deny":
                    return rule.reply
                elif action == "tarpit":
                    return self.tarpit.hold(exchange, rule.seconds, None)
                elif action == "allow":
                    break
            elif head.body == "chunked":
                # Its size is known only as the body streams.
                if watching is None:
                    watching = []
                watching.append(rule)
            index = first_match(rules, index + 1, view)
        if watching is not None:
            exchange.notes[_WATCH] = _BodyWatch(watching)
        return None

    def body(self, exchange: Exchange, data: bytes) -> bytes | Deferred[bytes]:
        """
        Count C{data} against the body-size rules watching C{exchange}'s
        body: past a deny rule's size the exchange fails with its status
        (413 for C{max_body}), past a tarpit's it is held then dropped.
        """
        watch = exchange.notes.get(_WATCH)
        if watch is None:
            return data
        watch.seen += len(data)
        for rule in list(watch.rules):
            if rule.body_over is None or watch.seen <= rule.body_over:
                continue
            watch.rules.remove(rule)
            self.hit(rule, exchange)
            if rule.action == "deny":
                exchange.fail(rule.config.status)
                return b""
            if rule.action == "tarpit":
                return self.tarpit.hold(exchange, rule.seconds, b"")
        return data

    def hit(self, rule: Rule, exchange: Exchange) -> None:
        """
        Count a hit of C{rule}, log it if it refuses or is a dry run, and
        name it on an exchange it refuses.
        """
        rule.stats.hits += 1
        action = rule.action
        if action not in _LOGGED:
            return
        if action != "log":
            exchange.notes[REFUSED_BY] = rule.name
        request = exchange.request
        log.info(
            "request rule {rule} ({action}) matched {method} {target} from {client}",
            rule=rule.name,
            rules=self.name,
            action=action,
            method=request.method.decode("latin-1") if request else "",
            target=request.target.decode("latin-1") if request else "",
            client=exchange.client,
            listener=exchange.settings.listener,
        )

    def __repr__(self) -> str:
        return f"<RuleSet {self.name} of {len(self.rules)} rules>"


class RulesFilter(HTTPFilter):
    """
    Runs a L{RuleSet} on each request head (see L{RuleSet.check}).
    """

    name = "rules"

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.name = f"rules:{rules.name}"

    def request_head(self, exchange: Exchange, head: RequestHead) -> Step:
        return self.rules.check(exchange, head)


class BodyRulesFilter(RulesFilter):
    """
    A L{RulesFilter} whose set has body-size rules: it also counts chunked
    request bodies as they stream, without holding any of them.
    """

    def request_body(self, exchange: Exchange, data: bytes) -> bytes | Deferred[bytes]:
        return self.rules.body(exchange, data)


def rule_sets_in(filters: Any) -> list[RuleSet]:
    """
    The rule sets of the rule filters among C{filters}.
    """
    return [one.rules for one in filters if isinstance(one, RulesFilter)]
