"""The request rule sets of a running proxy: compiled from the config's
C{[rules.NAME]} on start and reload (L{build_rule_sets}, keeping the hit
counts of unchanged rules and each set's tarpit), put first on the routes
that name them (L{with_rules}), and found again for the metrics
(L{live_rule_sets}).

A reload swaps rule sets atomically: the new listener settings hold the new
sets, and each request follows the settings of the moment it began."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import evolve
from twisted.internet.interfaces import IReactorTime

from rproxy.http.filters.rules import RuleSet, RuleSetConfig, RuleStats, rule_sets_in
from rproxy.http.routing import Route

__all__ = ["build_rule_sets", "live_rule_sets", "rule_changes", "with_rules"]


def build_rule_sets(
    configs: Iterable[RuleSetConfig],
    previous: Mapping[str, RuleSet],
    clock: IReactorTime,
) -> dict[str, RuleSet]:
    """
    The rule sets of C{configs}, by name.  A set whose config did not change
    is the one in C{previous}, as it is; a changed one is compiled again,
    keeping the counts of the rules that stayed the same (by name) and its
    tarpit (so that the bound on held requests spans both versions).
    """
    built: dict[str, RuleSet] = {}
    for config in configs:
        old = previous.get(config.name)
        if old is not None and old.config == config:
            built[config.name] = old
            continue
        stats: dict[str, RuleStats] = {}
        if old is not None:
            kept = {rule.name: rule for rule in old.rules}
            for rule in config.rules:
                was = kept.get(rule.name)
                if was is not None and was.config == rule:
                    stats[rule.name] = was.stats
        built[config.name] = RuleSet(
            config,
            clock,
            stats=stats,
            tarpit=None if old is None else old.tarpit,
        )
    return built


def rule_changes(
    previous: Mapping[str, RuleSet], current: Mapping[str, RuleSet]
) -> list[str]:
    """
    What a reload changed in the rule sets, for its log line.
    """
    changes = [f"rules {name} removed" for name in previous if name not in current]
    for name, rule_set in current.items():
        old = previous.get(name)
        if old is None:
            changes.append(f"rules {name} added")
        elif old is not rule_set:
            changes.append(f"rules {name} changed")
    return changes


def with_rules(
    routes: Sequence[Route], rule_sets: Mapping[str, RuleSet]
) -> list[Route]:
    """
    C{routes}, each that names a rule set with that set's filter before its
    own filters (a request a rule refuses reaches none of them).
    """
    found = []
    for route in routes:
        if route.rules is not None:
            filters: tuple[Any, ...] = (rule_sets[route.rules].filter, *route.filters)
            route = evolve(route, filters=filters)
        found.append(route)
    return found


def live_rule_sets(listeners: Mapping[str, object]) -> list[RuleSet]:
    """
    The rule sets the routes of the listener services C{listeners} use now,
    each once.
    """
    found: dict[int, RuleSet] = {}
    for service in listeners.values():
        settings = getattr(getattr(service, "factory", None), "settings", None)
        for _, chain in getattr(settings, "chains", {}).values():
            for rule_set in rule_sets_in(chain.filters):
                found.setdefault(id(rule_set), rule_set)
    return list(found.values())
