"""Request rules, a small WAF, as a filter: named rule sets
(C{[rules.NAME]}) that routes opt into with C{rules = "NAME"}.

A rule is a set of conditions on the request head (method, normalised path,
decoded query, header and cookie values, client address, TLS server name,
header count and size, body size) and an action: C{deny} (answer a
status), C{allow} (stop here, let it on), C{tarpit} (hold it, then drop the
connection), C{log} (a dry run: count and log it) or C{set_header} (set
request fields).  The first deny, allow or tarpit rule to match decides;
log and set_header rules act and evaluation goes on.  Each rule counts its
hits; each refusal names its rule in the access event (C{refused_by}).

L{RuleSetConfig} and its parts are the config's model; L{RuleSet} compiles
one and carries its filter (C{RuleSet(config, clock).filter}).
"""

from rproxy.http.filters.rules._engine import (
    REFUSED_BY,
    BodyRulesFilter,
    Rule,
    RuleSet,
    RulesFilter,
    RuleStats,
    Tarpit,
    compile_rules,
    rule_sets_in,
)
from rproxy.http.filters.rules._match import (
    compile_condition,
    compile_list,
    compile_regex,
    read_list,
)
from rproxy.http.filters.rules._model import (
    ACTIONS,
    BODY_ACTIONS,
    NAMED_SUBJECTS,
    NUMBER_SUBJECTS,
    OPERATORS,
    TERMINAL,
    TEXT_SUBJECTS,
    Condition,
    RuleConfig,
    RuleSetConfig,
)
from rproxy.http.filters.rules._view import RequestView

__all__ = [
    "ACTIONS",
    "BODY_ACTIONS",
    "NAMED_SUBJECTS",
    "NUMBER_SUBJECTS",
    "OPERATORS",
    "REFUSED_BY",
    "TERMINAL",
    "TEXT_SUBJECTS",
    "BodyRulesFilter",
    "Condition",
    "RequestView",
    "Rule",
    "RuleConfig",
    "RuleSet",
    "RuleSetConfig",
    "RuleStats",
    "RulesFilter",
    "Tarpit",
    "compile_condition",
    "compile_list",
    "compile_regex",
    "compile_rules",
    "read_list",
    "rule_sets_in",
]
