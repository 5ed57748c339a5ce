"""The shipped example rules (examples/rules/waf.toml) against the attack
classes the reverse-proxy articles name (SQL injection, XSS, path
traversal, scanner user agents) and against benign requests, through the
HTTP codec.

CAUGHT lists attacks the rules refuse, with the rule that does; MISSED lists
attacks they let through (kept here so that the gaps are stated, and a
better rule moves a case to CAUGHT); BENIGN lists requests that must pass.
The OWASP Core Rule Set's own tests need go-ftw, which cannot be built on
this machine: these tables are ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from twisted.internet.task import Clock

from rproxy.config import load_config
from rproxy.http.filters.rules import RuleSet
from rproxy.http.routing import Route
from rproxy.testing import HTTPHarness
from rproxy.testing._http import request_bytes

WAF = Path(__file__).resolve().parents[2] / "examples" / "rules" / "waf.toml"
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


class Case(NamedTuple):
    kind: str
    target: str
    user_agent: str = BROWSER
    method: str = "GET"


#: attacks the shipped rules refuse, and the rule that does.
CAUGHT = [
    # SQL injection in the query.
    (Case("sqli", "/item?id=1+UNION+SELECT+username,password+FROM+users"), "waf.sqli"),
    (Case("sqli", "/item?id=1%20union%20all%20select%201,2,3"), "waf.sqli"),
    (Case("sqli", "/item?id=1/**/UNION/**/SELECT/**/1"), "waf.sqli"),
    (Case("sqli", "/login?user=admin%27%20OR%20%271%27=%271"), "waf.sqli"),
    (Case("sqli", "/login?user=admin'+or+'a'='a"), "waf.sqli"),
    (Case("sqli", "/item?id=1+OR+1=1"), "waf.sqli"),
    (Case("sqli", "/item?id=1'--"), "waf.sqli"),
    (Case("sqli", "/item?id=1'%23"), "waf.sqli"),
    (Case("sqli", "/item?id=1+AND+SLEEP(5)"), "waf.sqli"),
    (Case("sqli", "/item?id=1;WAITFOR+DELAY+'0:0:5'"), "waf.sqli"),
    (Case("sqli", "/item?id=1;DROP+TABLE+users"), "waf.sqli"),
    (
        Case("sqli", "/item?id=(SELECT+table_name+FROM+information_schema.tables)"),
        "waf.sqli",
    ),
    (Case("sqli", "/item?id=1+AND+1=pg_sleep(3)"), "waf.sqli"),
    # XSS in the query and the path.
    (Case("xss", "/search?q=<script>alert(1)</script>"), "waf.xss"),
    (
        Case("xss", "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E"),
        "waf.xss",
    ),
    (Case("xss", "/search?q=%3Cimg%20src=x%20onerror=alert(1)%3E"), "waf.xss"),
    (Case("xss", "/search?q=%3Csvg/onload=alert(1)%3E"), "waf.xss"),
    (Case("xss", "/search?q=%3CScRiPt%3Ealert(1)%3C/sCrIpT%3E"), "waf.xss"),
    (Case("xss", "/go?url=javascript:alert(1)"), "waf.xss"),
    (Case("xss", "/go?url=JaVaScRiPt%3Aalert(1)"), "waf.xss"),
    (Case("xss", "/go?url=data:text/html;base64,PHNjcmlwdD4="), "waf.xss"),
    (Case("xss", "/search?q=%3Ciframe%20src=//evil%3E"), "waf.xss"),
    (Case("xss", "/search?q=%22%3E%3Cbody%20onload=alert(1)%3E"), "waf.xss"),
    (Case("xss", "/page/%3Cscript%3Ealert(1)%3C/script%3E"), "waf.xss-path"),
    # Path traversal, every spelling.
    (Case("traversal", "/static/../../etc/passwd"), "waf.traversal"),
    (Case("traversal", "/static/%2e%2e/%2e%2e/etc/passwd"), "waf.traversal"),
    (Case("traversal", "/static/%2E%2E/%2E%2E/etc/passwd"), "waf.traversal"),
    (Case("traversal", "/a/..%2f..%2fetc/passwd"), "waf.traversal"),
    (Case("traversal", "/a/%2e./%2e./etc/passwd"), "waf.traversal"),
    (Case("traversal", "/a/.%2e/.%2e/etc/passwd"), "waf.traversal"),
    (Case("traversal", "/a/..%5c..%5cwindows/win.ini"), "waf.traversal"),
    (Case("traversal", "/a/..\\..\\windows\\win.ini"), "waf.traversal"),
    (Case("traversal", "/public/..;/admin/"), "waf.traversal"),
    (Case("traversal", "/a/./b"), "waf.traversal"),
    (Case("traversal", "/%252e%252e/%252e%252e/etc/passwd"), "waf.double-encoding"),
    (Case("traversal", "/a/..%252f..%252fetc/passwd"), "waf.double-encoding"),
    (Case("traversal", "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd"), "waf.overlong-utf8"),
    (Case("traversal", "/a/..%c0%af..%c0%afetc/passwd"), "waf.overlong-utf8"),
    (
        Case("traversal", "/download.php?file=../../../etc/passwd"),
        "waf.query-traversal",
    ),
    (Case("traversal", "/download?path=..%2F..%2Fetc%2Fshadow"), "waf.query-traversal"),
    (Case("traversal", "/view?page=....//....//etc/passwd"), "waf.system-files"),
    (Case("traversal", "/view?file=/etc/passwd"), "waf.system-files"),
    (Case("traversal", "/view?file=C:%5Cwindows%5Cwin.ini"), "waf.system-files"),
    (Case("traversal", "/view?file=/proc/self/environ"), "waf.system-files"),
    (Case("traversal", "/image.php%00.jpg"), "waf.nul-path"),
    (Case("traversal", "/view?file=../x%00.png"), "waf.nul-query"),
    (Case("traversal", "/view?file=x%00.png"), "waf.nul-query"),
    (Case("traversal", "/.git/config"), "waf.sensitive-files"),
    (Case("traversal", "/app/.env"), "waf.sensitive-files"),
    (Case("traversal", "/.htpasswd"), "waf.sensitive-files"),
    (Case("traversal", "/%2egit/HEAD"), "waf.sensitive-files"),
    # Scanners that say who they are.
    (
        Case("scanner", "/", "sqlmap/1.7.2#stable (https://sqlmap.org)"),
        "waf.scanner-agent",
    ),
    (
        Case("scanner", "/", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)"),
        "waf.scanner-agent",
    ),
    (
        Case("scanner", "/", "Mozilla/5.0 (compatible; Nmap Scripting Engine)"),
        "waf.scanner-agent",
    ),
    (
        Case("scanner", "/", "masscan/1.3 (https://github.com/robertdavidgraham)"),
        "waf.scanner-agent",
    ),
    (Case("scanner", "/", "Mozilla/5.0 zgrab/0.x"), "waf.scanner-agent"),
    (
        Case(
            "scanner", "/", "Nuclei - Open-source project (github.com/projectdiscovery)"
        ),
        "waf.scanner-agent",
    ),
    (Case("scanner", "/", "gobuster/3.6"), "waf.scanner-agent"),
    (Case("scanner", "/", "Fuzz Faster U Fool v2.1.0"), "waf.scanner-agent"),
    (
        Case(
            "scanner",
            "/",
            "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
        ),
        "waf.scanner-agent",
    ),
    (
        Case(
            "scanner",
            "/",
            "Mozilla/4.0 (compatible; MSIE 8.0; Acunetix Web Vulnerability Scanner)",
        ),
        "waf.scanner-agent",
    ),
    (Case("scanner", "/", "Wfuzz/3.1.0"), "waf.scanner-agent"),
    (
        Case("scanner", "/", "Mozilla/5.0 (Windows NT 10.0) Commix/v3.8"),
        "waf.scanner-agent",
    ),
    # Methods for tracing.
    (Case("method", "/", method="TRACE"), "waf.methods"),
    (Case("method", "/", method="TRACK"), "waf.methods"),
]

#: attacks the shipped rules let through: the gaps, stated.
MISSED = [
    # A scanner that sends a browser's User-Agent (sqlmap --random-agent).
    Case("scanner", "/item?id=1"),
    # SQL injection without the keywords and shapes the rules look for.
    Case("sqli", "/item?id=1+||+2>1"),
    Case("sqli", "/item?id=-1+OR+2>1"),
    Case("sqli", "/item?id=1+AND+ascii(substr(user(),1,1))>64"),
    Case("sqli", "/item?id=1+AND+(SELECT+1)=1"),
    # Double encoding in the query is decoded once only.
    Case("xss", "/search?q=%253Cscript%253Ealert(1)%253C/script%253E"),
    # HTML entities are not decoded.
    Case("xss", "/search?q=%26%23x3C;script%26%23x3E;alert(1)"),
    # Injection in a header other than the User-Agent, or in a cookie.
    Case("sqli", "/", BROWSER + "' OR '1'='1"),
    # Traversal that stays inside the path after decoding (no dot
    # segment, no system file): ....// becomes ..../ in a path.
    Case("traversal", "/files/....//....//secret"),
]

#: requests the shipped rules must let through.
BENIGN = [
    Case("benign", "/"),
    Case("benign", "/api/v1/users/42?fields=name,email"),
    Case("benign", "/files/report%2Epdf"),
    Case("benign", "/search?q=o%27reilly+books"),
    Case("benign", "/search?q=rock+and+roll"),
    Case("benign", "/search?q=union+station+select+seats"),
    Case("benign", "/search?q=1%3D1"),
    Case("benign", "/search?q=script+writing+course"),
    Case("benign", "/go?next=https%3A%2F%2Fexample.com%2Fa%3Fb%3Dc"),
    Case("benign", "/signup?email=a%40example.com"),
    Case("benign", "/.well-known/acme-challenge/abc"),
    Case("benign", "/static/app.min.js"),
    Case("benign", "/caf%C3%A9/men%C3%BC"),
    Case("benign", "/docs/v1.2.3/...more"),
    Case("benign", "/", "curl/8.5.0"),
    Case(
        "benign",
        "/",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    Case("benign", "/", "python-requests/2.31.0"),
    Case("benign", "/form", BROWSER, "POST"),
]


@pytest.fixture
def harness() -> Iterator[tuple[HTTPHarness, RuleSet]]:
    clock = Clock()
    (config,) = load_config(WAF).rules
    rules = RuleSet(config, clock)
    made = HTTPHarness([Route("web", filters=[rules.filter])], clock=clock)
    yield made, rules
    made.close()


def outcome(harness: HTTPHarness, case: Case) -> str | None:
    """The rule that refused C{case}, or None if it reached a backend."""
    asked = len(harness.endpoints.attempts)
    body = b"a=1" if case.method == "POST" else b""
    harness.request(
        request_bytes(case.method, case.target, [("User-Agent", case.user_agent)], body)
    )
    if len(harness.endpoints.attempts) > asked:
        return None
    refused = harness.access[-1].get("refused_by")
    assert refused is not None, f"{case} neither passed nor was refused by a rule"
    return refused


@pytest.mark.parametrize(
    ("case", "rule"), CAUGHT, ids=lambda v: getattr(v, "target", v)
)
def test_caught(harness: tuple[HTTPHarness, RuleSet], case: Case, rule: str) -> None:
    """Each attack in CAUGHT is refused by the rule named."""
    assert outcome(harness[0], case) == rule


@pytest.mark.parametrize("case", MISSED, ids=lambda case: case.target)
def test_missed(harness: tuple[HTTPHarness, RuleSet], case: Case) -> None:
    """Each attack in MISSED goes through: the shipped rules' known gaps."""
    assert outcome(harness[0], case) is None


@pytest.mark.parametrize("case", BENIGN, ids=lambda case: case.target)
def test_benign(harness: tuple[HTTPHarness, RuleSet], case: Case) -> None:
    """Each benign request in BENIGN goes through."""
    assert outcome(harness[0], case) is None


def test_a_request_without_user_agent_is_only_logged(
    harness: tuple[HTTPHarness, RuleSet],
) -> None:
    """The dry-run rule for a missing User-Agent counts it and lets it on."""
    made, rules = harness
    made.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(made.endpoints.attempts) == 1
    (rule,) = [r for r in rules.rules if r.name == "waf.no-user-agent"]
    assert rule.stats.hits == 1


def test_every_class_is_covered() -> None:
    """The tables cover each attack class the articles name."""
    classes = {case.kind for case, _ in CAUGHT}
    assert {"sqli", "xss", "traversal", "scanner"} <= classes
