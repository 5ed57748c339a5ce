"""The C{[rules.NAME]} tables and a route's C{rules} key: the issue's
shorthand, rule tables, the evaluation order, names, list files read
relative to the config, and each mistake refused with its file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rproxy.config import ConfigError, parse_config
from rproxy.http.filters.rules import Condition, RuleConfig, RuleSetConfig
from tests.rules.support import BASE, parse, rules_config, write


def errors(text: str, source: str = "/etc/rproxy/c.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return info.value.errors


def test_the_issues_example(tmp_path: Path) -> None:
    """The shorthand of the issue: one array per action, a list file next
    to the config, max_body with a unit; rules are named by their key."""
    bots = write(tmp_path, "bad-bots.txt", "sqlmap\nnikto\n")
    found = rules_config(
        """
[rules.t]
deny = [
  { method = ["TRACE", "TRACK"] },
  { path_regex = '(?i)\\.\\./|%2e%2e' },
  { header = "User-Agent", list = "bad-bots.txt" },
  { query_regex = "(?i)union\\\\s+select" },
]
max_body = "10MiB"
""",
        str(tmp_path / "c.toml"),
    )
    assert found == RuleSetConfig(
        "t",
        (
            RuleConfig(
                "t.deny[0]",
                "deny",
                (Condition("method", "equals", ("TRACE", "TRACK")),),
            ),
            RuleConfig(
                "t.deny[1]",
                "deny",
                (Condition("path", "regex", ("(?i)\\.\\./|%2e%2e",)),),
            ),
            RuleConfig(
                "t.deny[2]",
                "deny",
                (
                    Condition(
                        "header",
                        "list",
                        ("sqlmap", "nikto"),
                        name="User-Agent",
                        source=bots,
                    ),
                ),
            ),
            RuleConfig(
                "t.deny[3]",
                "deny",
                (Condition("query", "regex", ("(?i)union\\s+select",)),),
            ),
            RuleConfig(
                "t.max_body", "deny", (Condition("body", "over", limit=10 << 20),), 413
            ),
        ),
    )


def test_rule_tables_with_every_action() -> None:
    """[[rules.NAME.rule]] tables come first, in file order, with their
    names, statuses, seconds and fields."""
    found = rules_config(
        """
[rules.t]
tarpit_max_held = 7
deny = [{ path = "/late" }]
[[rules.t.rule]]
name = "office"
action = "allow"
client = ["10.0.0.0/8", "::1"]
[[rules.t.rule]]
action = "deny"
status = 451
path_prefix = "/legal/"
[[rules.t.rule]]
action = "tarpit"
seconds = 2.5
path = "/wp-login.php"
[[rules.t.rule]]
action = "log"
header = "X-Debug"
present = true
[[rules.t.rule]]
action = "set_header"
cookie = "beta"
equals = "1"
set = { X-Beta = "yes" }
"""
    )
    assert found.tarpit_max_held == 7
    assert [(r.name, r.action) for r in found.rules] == [
        ("office", "allow"),
        ("t.rule[1]", "deny"),
        ("t.rule[2]", "tarpit"),
        ("t.rule[3]", "log"),
        ("t.rule[4]", "set_header"),
        ("t.deny[0]", "deny"),
    ]
    office, legal, tarpit, log, beta, _ = found.rules
    assert office.conditions == (Condition("client", "cidr", ("10.0.0.0/8", "::1")),)
    assert legal.status == 451
    assert tarpit.seconds == 2.5
    assert log.conditions == (Condition("header", "present", name="X-Debug"),)
    assert beta.set_fields == (("X-Beta", "yes"),)


def test_evaluation_order_of_the_shorthands() -> None:
    """Shorthands follow the rule tables as log, set_header, allow, deny,
    tarpit, then the size limits, whatever their order in the file."""
    found = rules_config(
        """
[rules.t]
max_body = 5
tarpit = [{ path = "/a" }]
deny = [{ path = "/b" }]
max_headers = 9
allow = [{ path = "/c" }]
set_header = [{ path = "/d", set = { X-A = "1" } }]
log = [{ path = "/e" }]
max_header_bytes = "1KiB"
[[rules.t.rule]]
action = "deny"
path = "/f"
"""
    )
    assert [r.name for r in found.rules] == [
        "t.rule[0]",
        "t.log[0]",
        "t.set_header[0]",
        "t.allow[0]",
        "t.deny[0]",
        "t.tarpit[0]",
        "t.max_headers",
        "t.max_header_bytes",
        "t.max_body",
    ]
    assert [r.status for r in found.rules[-3:]] == [431, 431, 413]


def test_a_route_names_its_rule_set() -> None:
    """The route key rules names a [rules.NAME]."""
    config = parse("[rules.t]\ndeny = [{ method = 'TRACE' }]\n")
    assert config.listeners[0].routes[0].rules == "t"


def test_an_empty_rule_set_has_no_rules() -> None:
    """[rules.t] alone is a set that lets everything through."""
    assert rules_config("[rules.t]\n") == RuleSetConfig("t")


def test_unknown_rule_set_named_by_a_route() -> None:
    """A route naming a rule set that does not exist is refused, with the
    sets there are."""
    assert errors("[rules.tt]\n") == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].rules: no rules set named "
        "'t'; did you mean 'tt'?"
    ]


def test_route_rules_without_any_rule_set() -> None:
    """Naming a rule set with no [rules] at all says so."""
    assert errors("") == [
        "/etc/rproxy/c.toml: listeners[0].routes[0].rules: no rules set named "
        "'t'; there is no [rules.NAME]"
    ]


def test_bad_regex_names_file_and_key() -> None:
    """A regex RE2 cannot compile (or a Perl feature it leaves out, which
    could not run in linear time) refuses the config under its key."""
    assert errors(
        "[rules.t]\ndeny = [{ path_regex = '(a' }, { query_regex = ['ok', '(?=x)'] }]\n"
    ) == [
        "/etc/rproxy/c.toml: rules.t.deny[0].path_regex: invalid regex '(a': "
        "missing ): (a",
        "/etc/rproxy/c.toml: rules.t.deny[1].query_regex: invalid regex '(?=x)': "
        "invalid perl operator: (?=",
    ]


def test_a_missing_list_file(tmp_path: Path) -> None:
    """A list file that cannot be read is reported with its path."""
    missing = tmp_path / "nope.txt"
    assert errors(
        "[rules.t]\ndeny = [{ header = 'User-Agent', list = 'nope.txt' }]\n",
        str(tmp_path / "c.toml"),
    ) == [
        f"{tmp_path / 'c.toml'}: rules.t.deny[0].list: cannot read {missing}: "
        "No such file or directory"
    ]


def test_a_client_list_with_bad_entries(tmp_path: Path) -> None:
    """Each entry of a client_list must be an address or network."""
    nets = write(tmp_path, "nets.txt", "10.0.0.0/8\nlocalhost\n300.1.1.1\n")
    assert errors(
        "[rules.t]\ndeny = [{ client_list = 'nets.txt' }]\n", str(tmp_path / "c.toml")
    ) == [
        f"{tmp_path / 'c.toml'}: rules.t.deny[0].client_list: {nets}: not IP "
        "addresses or networks: 'localhost', '300.1.1.1'"
    ]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            "deny = [{ pth = '/x' }]",
            "rules.t.deny[0].pth: unknown key, did you mean 'path'?",
        ),
        (
            "deny = [{ client = '10.0.0.300' }]",
            "rules.t.deny[0].client: must be an IP address or network ('10.0.0.0/8', "
            "'::1'), got '10.0.0.300'",
        ),
        (
            "deny = [{ path = [] }]",
            "rules.t.deny[0].path: is empty: give a value or an array of values",
        ),
        (
            "deny = [{ path = 3 }]",
            "rules.t.deny[0].path: must be a non-empty string, got 3",
        ),
        (
            "deny = [{ status = 302 }]",
            "rules.t.deny[0].status: must be a status from 400 to 599, got 302",
        ),
        ("allow = [{ status = 403 }]", "rules.t.allow[0].status: only for deny rules"),
        ("deny = [{ seconds = 3 }]", "rules.t.deny[0].seconds: only for tarpit rules"),
        (
            "tarpit = [{ seconds = 60 }]",
            "rules.t.tarpit[0].seconds: must be shorter than timeouts.response (60 s): "
            "the listener answers 504 to a request held that long",
        ),
        (
            "set_header = [{ path = '/' }]",
            "rules.t.set_header[0].set: missing: a set_header rule needs "
            'set = { "X-Name" = "value" }',
        ),
        (
            "set_header = [{ set = { Content-Length = '1' } }]",
            "rules.t.set_header[0].set.Content-Length: cannot rewrite "
            "'Content-Length': it frames or routes the message; the headers that "
            "cannot be rewritten are "
            "'connection', 'content-length', 'host', 'keep-alive', 'proxy-connection', "
            "'te', 'trailer', 'transfer-encoding', 'upgrade'",
        ),
        (
            "allow = [{ body_over = 10 }]",
            "rules.t.allow[0].body_over: a allow rule cannot test the body size (a "
            "chunked body is counted after its head went upstream); only deny, tarpit "
            "and log",
        ),
        (
            "deny = [{ header = 'X-A' }]",
            "rules.t.deny[0].header: says which header, but nothing tests it: add one "
            "of equals, prefix, contains, regex, list, present",
        ),
        (
            "deny = [{ contains = 'x' }]",
            "rules.t.deny[0].contains: needs header = NAME or cookie = NAME",
        ),
        (
            "deny = [{ header = 'A', cookie = 'b', equals = 'x' }]",
            "rules.t.deny[0].cookie: a rule tests one header or one cookie: "
            "write a rule per field",
        ),
        (
            "deny = [{ header = 'Bad Name', equals = 'x' }]",
            "rules.t.deny[0].header: must be a header name (an RFC 9110 token), got "
            "'Bad Name'",
        ),
        (
            "[[rules.t.rule]]\npath = '/'",
            "rules.t.rule[0].action: missing required key",
        ),
        (
            "[[rules.t.rule]]\naction = 'block'",
            "rules.t.rule[0].action: must be one of 'deny', 'allow', 'log', 'tarpit', "
            "'set_header', got 'block'",
        ),
        (
            "deny = [{ action = 'deny' }]",
            "rules.t.deny[0].action: a deny = [...] rule takes its action from the "
            "array; write action in a [[rules.NAME.rule]] table",
        ),
        (
            "deny = [{ name = 'a' }, { name = 'a' }]",
            "rules.t.deny[1].name: 'a' is also the name of deny[0]; the rules of a set "
            "need names of their own",
        ),
        (
            "deny = { path = '/' }",
            "rules.t.deny: must be an array of tables, as deny = [{ ... }]",
        ),
        (
            "tarpit_max_held = 0",
            "rules.t.tarpit_max_held: must be a positive integer, got 0",
        ),
        (
            "max_body = '10 parsecs'",
            "rules.t.max_body: must be a size in bytes: a positive integer or a string "
            "such as '512KiB', '256MiB' or '10GiB', got '10 parsecs'",
        ),
        (
            "deny = [{ traversal = 'yes' }]",
            "rules.t.deny[0].traversal: must be true or false, got 'yes'",
        ),
        (
            "ruels = 1",
            "rules.t.ruels: unknown key, did you mean 'rule'?",
        ),
    ],
)
def test_mistakes_name_file_and_key(table: str, problem: str) -> None:
    """Each mistake in a rule set is reported under its key."""
    assert errors(f"[rules.t]\n{table}\n") == [f"/etc/rproxy/c.toml: {problem}"]


def test_rules_must_be_a_table_of_tables() -> None:
    """C{rules = 3} is refused."""
    text = "rules = 3\n" + BASE.replace('rules = "t"\n', "")
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "/etc/rproxy/c.toml")
    assert info.value.errors == [
        "/etc/rproxy/c.toml: rules: must be a table of named rule sets, as [rules.NAME]"
    ]


def test_a_broken_set_is_not_reported_again_on_its_route() -> None:
    """A route naming a set with problems gets no problem of its own."""
    assert errors("[rules.t]\ndeny = [{ path_regex = '(' }]\n") == [
        "/etc/rproxy/c.toml: rules.t.deny[0].path_regex: invalid regex '(': "
        "missing ): ("
    ]


def test_shipped_example_loads() -> None:
    """examples/rules/waf.toml is a valid config."""
    from rproxy.config import load_config

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "rules" / "waf.toml")
    (waf,) = config.rules
    assert waf.name == "waf"
    assert len(waf.rules) > 10
