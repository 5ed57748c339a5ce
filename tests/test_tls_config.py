"""Tests for the TLS parts of the config (rproxy.config._tls, and their use
by rproxy.config and rproxy.config._listeners): TOML in, models or problems
naming the key and the file out.

Certificates are made with trustme and written next to the config file, in
a temporary directory, so relative paths are tested as users write them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from rproxy.config import (
    AcmeConfig,
    BackendTLSConfig,
    CertificateConfig,
    Config,
    ConfigError,
    ListenerTLSConfig,
    parse_config,
)

CA = trustme.CA()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The config directory: C{certs/} holds C{a.pem} + C{a.key} (example.com,
    www.example.com), C{api.pem} with its key inside (api.example.com),
    C{other.key} (nobody's key), C{ca.pem} and C{key-only.pem}.
    """
    directory = tmp_path_factory.mktemp("config")
    certs = directory / "certs"
    certs.mkdir()
    a = CA.issue_cert("example.com", "www.example.com")
    a.cert_chain_pems[0].write_to_path(str(certs / "a.pem"))
    a.private_key_pem.write_to_path(str(certs / "a.key"))
    CA.issue_cert("api.example.com").private_key_and_cert_chain_pem.write_to_path(
        str(certs / "api.pem")
    )
    CA.issue_cert("other.example.com").private_key_pem.write_to_path(
        str(certs / "other.key")
    )
    CA.issue_cert("x.example.com").private_key_pem.write_to_path(
        str(certs / "key-only.pem")
    )
    CA.cert_pem.write_to_path(str(certs / "ca.pem"))
    return directory


def parse(base: Path, text: str, config: str = "rproxy.toml") -> Config:
    """
    Parse the TOML C{text} as if read from C{base}/C{config}.
    """
    return parse_config(tomllib.loads(text), str(base / config))


def errors(base: Path, text: str) -> list[str]:
    """
    The problems reported for C{text}, without the C{source: } prefix.
    """
    source = str(base / "rproxy.toml")
    with pytest.raises(ConfigError) as info:
        parse(base, text)
    prefix = f"{source}: "
    assert all(line.startswith(prefix) for line in info.value.errors)
    return [line[len(prefix) :] for line in info.value.errors]


POOLS = """
[pools.web]
backends = ["10.0.0.1:8080"]
[pools.db]
backends = ["10.0.0.2:5432"]
"""

HTTPS = """
[[listeners]]
name = "https"
protocol = "http"
listen = "tcp:8443"
pool = "web"
"""

TCP = """
[[listeners]]
name = "pass"
listen = "tcp:9443"
"""

TLS_A = """
[listeners.tls]
certificates = [{ cert = "certs/a.pem", key = "certs/a.key" }]
"""

PLAIN_HTTP = """
[[listeners]]
name = "plain"
protocol = "http"
listen = "tcp:8080"
pool = "web"
"""

ACME = """
[acme]
directory = "https://acme.example/directory"
storage = "acme"
domains = ["example.com"]
"""


# Valid configs --------------------------------------------------------------


def test_the_readme_example_parses_into_its_models(base: Path) -> None:
    """An https listener with two certificates, HSTS and a redirect, an SNI
    routing tcp listener and a pool with verified TLS parse as written, paths
    made absolute against the config's directory."""
    config = parse(
        base,
        POOLS
        + """
[pools.api]
backends = ["10.0.0.5:443"]
tls = { verify = true, server_name = "api.internal", ca = "certs/ca.pem" }

[[listeners]]
name = "https"
protocol = "http"
listen = "tcp:443"
pool = "web"
[listeners.tls]
certificates = [
  { cert = "certs/a.pem", key = "certs/a.key" },
  { cert = "certs/api.pem" },
]
min_version = "1.2"
hsts = "max-age=31536000"
redirect_http_from = "tcp:80"

[[listeners]]
name = "tls-passthrough"
protocol = "tcp"
listen = "tcp:8443"
sni_routes = { "db.example.com" = "db", "*.example.com" = "web" }
pool = "web"
""",
    )
    https, passthrough = config.listeners
    certs = base / "certs"
    assert https.tls == ListenerTLSConfig(
        certificates=(
            CertificateConfig(str(certs / "a.pem"), str(certs / "a.key")),
            CertificateConfig(str(certs / "api.pem")),
        ),
        min_version="1.2",
        hsts="max-age=31536000",
        redirect_http_from="tcp:80",
    )
    assert https.sni_routes == ()
    assert passthrough.protocol == "tcp"
    assert passthrough.tls is None
    assert passthrough.pool == "web"
    assert passthrough.sni_routes == (
        ("db.example.com", "db"),
        ("*.example.com", "web"),
    )
    assert config.pool("api").tls == BackendTLSConfig(
        verify=True, server_name="api.internal", ca=str(certs / "ca.pem")
    )
    assert config.pool("web").tls is None
    assert config.acme is None


def test_relative_paths_resolve_against_the_config_directory(base: Path) -> None:
    """Paths are taken from the config file's directory, not the working
    directory, and normalised."""
    (base / "etc").mkdir(exist_ok=True)
    config = parse(
        base,
        POOLS
        + HTTPS
        + """
[listeners.tls]
certificates = [{ cert = "../certs/./a.pem", key = "../certs/a.key" }]
""",
        config="etc/rproxy.toml",
    )
    tls = config.listeners[0].tls
    assert tls is not None
    assert tls.certificates == (
        CertificateConfig(str(base / "certs" / "a.pem"), str(base / "certs" / "a.key")),
    )


def test_listener_tls_defaults(base: Path) -> None:
    """The profile defaults to "intermediate" and min_version to the
    profile's own (None), with no HSTS and no redirect; 1.3 may be asked
    for."""
    tls = parse(base, POOLS + HTTPS + TLS_A).listeners[0].tls
    assert tls is not None
    assert (tls.profile, tls.min_version, tls.hsts, tls.redirect_http_from) == (
        "intermediate",
        None,
        None,
        None,
    )
    tls13 = parse(base, POOLS + HTTPS + TLS_A + 'min_version = "1.3"\n')
    assert tls13.listeners[0].tls is not None
    assert tls13.listeners[0].tls.min_version == "1.3"


@pytest.mark.parametrize(
    ("lines", "profile", "min_version"),
    [
        ('profile = "modern"\n', "modern", None),
        ('profile = "old"\n', "old", None),
        ('profile = "old"\nmin_version = "1.2"\n', "old", "1.2"),
        ('profile = "old"\nmin_version = "1.1"\n', "old", "1.1"),
        ('profile = "intermediate"\nmin_version = "1.3"\n', "intermediate", "1.3"),
        ('profile = "modern"\nmin_version = "1.3"\n', "modern", "1.3"),
    ],
)
def test_profile_and_a_minimum_at_or_above_its_own(
    base: Path, lines: str, profile: str, min_version: str | None
) -> None:
    """Each profile may be named, with a min_version at or above the
    profile's own minimum (old 1.0, intermediate 1.2, modern 1.3)."""
    tls = parse(base, POOLS + HTTPS + TLS_A + lines).listeners[0].tls
    assert tls is not None
    assert (tls.profile, tls.min_version) == (profile, min_version)


def test_a_tcp_listener_takes_a_profile_too(base: Path) -> None:
    """The inline tls table of a tcp listener reads profile like an http
    listener's."""
    config = parse(
        base,
        POOLS
        + TCP
        + 'pool = "db"\n'
        + 'tls = { certificates = [{ cert = "certs/api.pem" }], profile = "modern" }\n',
    )
    assert config.listeners[0].tls is not None
    assert config.listeners[0].tls.profile == "modern"


def test_tcp_listener_may_terminate_tls(base: Path) -> None:
    """A tcp listener with a pool may have [listeners.tls]."""
    config = parse(base, POOLS + TCP + 'pool = "db"\n' + TLS_A)
    assert config.listeners[0].tls == ListenerTLSConfig(
        (
            CertificateConfig(
                str(base / "certs" / "a.pem"), str(base / "certs" / "a.key")
            ),
        )
    )


def test_tcp_listener_with_sni_routes_needs_no_pool(base: Path) -> None:
    """SNI routes alone are enough for a tcp listener."""
    config = parse(base, POOLS + TCP + 'sni_routes = { "db.example.com" = "db" }\n')
    (listener,) = config.listeners
    assert listener.pool is None
    assert listener.sni_routes == (("db.example.com", "db"),)


def test_sni_route_names_are_lowercased_without_trailing_dot(base: Path) -> None:
    """Route names are compared as SNI is: lowercase, no trailing dot."""
    config = parse(base, POOLS + TCP + 'sni_routes = { "DB.Example.COM." = "db" }\n')
    assert config.listeners[0].sni_routes == (("db.example.com", "db"),)


def test_pool_tls_defaults_to_verify_with_the_system_store(base: Path) -> None:
    """An empty pool tls table verifies, with no name, CA or client cert."""
    config = parse(base, POOLS + "[pools.web.tls]\n" + PLAIN_HTTP)
    assert config.pool("web").tls == BackendTLSConfig()


def test_pool_tls_client_certificate(base: Path) -> None:
    """A client certificate and its key are read and kept as absolute paths;
    server_name is lowercased."""
    config = parse(
        base,
        POOLS
        + """
[pools.web.tls]
server_name = "API.Internal"
cert = "certs/a.pem"
key = "certs/a.key"
"""
        + PLAIN_HTTP,
    )
    assert config.pool("web").tls == BackendTLSConfig(
        server_name="api.internal",
        cert=str(base / "certs" / "a.pem"),
        key=str(base / "certs" / "a.key"),
    )


def test_pool_tls_unverified(base: Path) -> None:
    """verify = false without a CA is accepted."""
    config = parse(base, POOLS + "[pools.web.tls]\nverify = false\n" + PLAIN_HTTP)
    assert config.pool("web").tls == BackendTLSConfig(verify=False)


# Listener TLS problems ------------------------------------------------------------


def test_mismatched_key_names_both_files(base: Path) -> None:
    """A key that is not its certificate's is reported at the certificate's
    entry, naming the certificate and the key file."""
    cert, key = base / "certs" / "a.pem", base / "certs" / "other.key"
    subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject
    assert errors(
        base,
        POOLS
        + HTTPS
        + """
[listeners.tls]
certificates = [
  { cert = "certs/api.pem" },
  { cert = "certs/a.pem", key = "certs/other.key" },
]
""",
    ) == [
        f"listeners[0].tls.certificates[1]: {cert} (key {key}): the private key "
        f"does not match the certificate ({subject.rfc4514_string()})"
    ]


def test_unreadable_certificate_names_the_file(base: Path) -> None:
    """A certificate file that cannot be read is reported with its path."""
    assert errors(
        base,
        POOLS
        + HTTPS
        + """
[listeners.tls]
certificates = [{ cert = "certs/missing.pem" }]
""",
    ) == [
        f"listeners[0].tls.certificates[0]: {base / 'certs' / 'missing.pem'}: "
        "cannot read: No such file or directory"
    ]


def test_certificate_file_without_key_names_the_file(base: Path) -> None:
    """A certificate without a key (in it or beside it) is reported."""
    assert errors(
        base,
        POOLS
        + HTTPS
        + """
[listeners.tls]
certificates = [{ cert = "certs/a.pem" }]
""",
    ) == [
        f"listeners[0].tls.certificates[0]: {base / 'certs' / 'a.pem'}: "
        "no PEM private key in it"
    ]


def test_certificate_entry_needs_cert(base: Path) -> None:
    """An entry without cert is reported as missing it."""
    assert errors(
        base,
        POOLS
        + HTTPS
        + """
[listeners.tls]
certificates = [{ key = "certs/a.key" }]
""",
    ) == ["listeners[0].tls.certificates[0].cert: missing required key"]


def test_missing_certificates_without_acme_is_refused(base: Path) -> None:
    """A TLS listener without certificates and no [acme] has nothing to
    serve."""
    assert errors(
        base, POOLS + HTTPS + '[listeners.tls]\nredirect_http_from = "tcp:8081"\n'
    ) == [
        "listeners[0].tls.certificates: missing: give at least one "
        "{ cert = ..., key = ... }, or an [acme] section to obtain one"
    ]


def test_missing_certificates_with_acme_is_allowed(base: Path) -> None:
    """With [acme] a TLS listener may have no certificate files."""
    config = parse(
        base,
        POOLS + HTTPS + '[listeners.tls]\nredirect_http_from = "tcp:8081"\n' + ACME,
    )
    tls = config.listeners[0].tls
    assert tls is not None
    assert tls.certificates == ()
    assert config.acme is not None


def test_unknown_min_version_is_refused_with_the_choices(base: Path) -> None:
    """min_version is a TLS version from 1.0 to 1.3; the message lists them."""
    assert errors(base, POOLS + HTTPS + TLS_A + 'min_version = "1.4"\n') == [
        "listeners[0].tls.min_version: must be one of '1.0', '1.1', '1.2', "
        "'1.3', got '1.4'; did you mean '1.3'?"
    ]


def test_unknown_profile_is_refused_with_a_suggestion(base: Path) -> None:
    """A misspelt profile is refused with the choices and the closest one,
    and no second problem about a min_version judged against the default."""
    lines = 'profile = "moderm"\nmin_version = "1.0"\n'
    assert errors(base, POOLS + HTTPS + TLS_A + lines) == [
        "listeners[0].tls.profile: must be one of 'modern', 'intermediate', "
        "'old', got 'moderm'; did you mean 'modern'?"
    ]
    (problem,) = errors(base, POOLS + HTTPS + TLS_A + "profile = 1\n")
    assert problem.startswith("listeners[0].tls.profile: must be one of ")


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (
            'min_version = "1.1"\n',
            "'1.1' is below what profile 'intermediate' accepts (TLS 1.2 and "
            "up): remove min_version, or use profile = 'old' for TLS 1.1",
        ),
        (
            'profile = "modern"\nmin_version = "1.2"\n',
            "'1.2' is below what profile 'modern' accepts (TLS 1.3 and up): "
            "remove min_version, or use profile = 'intermediate' for TLS 1.2",
        ),
        (
            'profile = "modern"\nmin_version = "1.0"\n',
            "'1.0' is below what profile 'modern' accepts (TLS 1.3 and up): "
            "remove min_version, or use profile = 'old' for TLS 1.0",
        ),
    ],
)
def test_min_version_below_the_profile_is_refused(
    base: Path, lines: str, problem: str
) -> None:
    """A min_version that would lower the profile's minimum contradicts it:
    refused, naming the key, both values and the profile that fits."""
    assert errors(base, POOLS + HTTPS + TLS_A + lines) == [
        f"listeners[0].tls.min_version: {problem}"
    ]


def test_listener_tls_model_refuses_a_contradiction() -> None:
    """The model itself refuses a min_version below its profile's, for
    configs built in code."""
    with pytest.raises(ValueError, match=r"^min_version '1\.2' is below what"):
        ListenerTLSConfig(profile="modern", min_version="1.2")
    with pytest.raises(ValueError):
        ListenerTLSConfig(profile="newest")


def test_http_only_tls_keys_are_refused_on_tcp(base: Path) -> None:
    """hsts and redirect_http_from make no sense on a tcp listener."""
    assert errors(
        base,
        POOLS
        + TCP
        + 'pool = "db"\n'
        + TLS_A
        + 'hsts = "max-age=1"\nredirect_http_from = "tcp:8081"\n',
    ) == [
        'listeners[0].tls.hsts: only for protocol = "http" listeners',
        'listeners[0].tls.redirect_http_from: only for protocol = "http" listeners',
    ]


def test_hsts_must_be_printable(base: Path) -> None:
    """An HSTS value that cannot be a header value is refused."""
    assert errors(base, POOLS + HTTPS + TLS_A + 'hsts = "max-age=1\\n"\n') == [
        "listeners[0].tls.hsts: must be printable ASCII, got 'max-age=1\\n'"
    ]


def test_redirect_must_be_an_endpoint(base: Path) -> None:
    """redirect_http_from is a server endpoint string."""
    (problem,) = errors(
        base, POOLS + HTTPS + TLS_A + 'redirect_http_from = "nonsense:80"\n'
    )
    assert problem.startswith(
        "listeners[0].tls.redirect_http_from: invalid endpoint 'nonsense:80'"
    )


def test_unknown_listener_tls_key_is_refused(base: Path) -> None:
    """A misspelt key in [listeners.tls] is reported with a suggestion."""
    assert errors(base, POOLS + HTTPS + TLS_A + 'min_versoin = "1.3"\n') == [
        "listeners[0].tls.min_versoin: unknown key, did you mean 'min_version'?"
    ]


# SNI routes -----------------------------------------------------------------------


def test_sni_routes_on_an_http_listener_are_refused(base: Path) -> None:
    """SNI routing is for tcp listeners only."""
    assert errors(
        base, POOLS + HTTPS + 'sni_routes = { "db.example.com" = "db" }\n'
    ) == ['listeners[0].sni_routes: only for protocol = "tcp" listeners']


def test_sni_route_to_an_unknown_pool_is_refused(base: Path) -> None:
    """Each route's pool must exist."""
    assert errors(
        base,
        POOLS
        + TCP
        + 'sni_routes = { "db.example.com" = "db", "a.example.com" = "nope" }\n',
    ) == ["listeners[0].sni_routes: 'a.example.com': no pool named 'nope'"]


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("bad name", '"bad name"'),
        ("-db.example.com", '"-db.example.com"'),
        ("db..example.com", '"db..example.com"'),
        ("*.*.example.com", '"*.*.example.com"'),
        ("db*.example.com", '"db*.example.com"'),
    ],
)
def test_sni_route_with_a_bad_name_is_refused(
    base: Path, written: str, key: str
) -> None:
    """A route name must be a DNS name, a wildcard only as a whole first
    label; the problem is reported under the name."""
    assert errors(
        base, POOLS + TCP + 'pool = "web"\nsni_routes = { "' + written + '" = "db" }\n'
    ) == [
        f"listeners[0].sni_routes.{key}: must be a DNS name ('example.com' or "
        f"'*.example.com'), got {written!r}"
    ]


def test_sni_routes_and_tls_on_one_listener_are_refused(base: Path) -> None:
    """A listener either decrypts or routes by SNI, not both."""
    assert errors(
        base,
        POOLS + TCP + 'sni_routes = { "db.example.com" = "db" }\n' + TLS_A,
    ) == [
        "listeners[0].sni_routes: a listener either terminates TLS "
        "([listeners.tls]) or routes TLS by SNI without decrypting it "
        "(sni_routes), not both"
    ]


def test_tcp_listener_without_pool_or_sni_routes_is_refused(base: Path) -> None:
    """A tcp listener with neither a pool nor SNI routes goes nowhere."""
    assert errors(base, POOLS + TCP) == ["listeners[0].pool: missing required key"]


# Pool TLS problems ----------------------------------------------------------------


def test_pool_ca_with_verify_false_is_refused(base: Path) -> None:
    """A CA file is of no use when nothing is verified."""
    assert errors(
        base,
        POOLS + '[pools.web.tls]\nverify = false\nca = "certs/ca.pem"\n' + PLAIN_HTTP,
    ) == ["pools.web.tls.ca: has no use with verify = false"]


def test_unknown_pool_tls_key_is_refused(base: Path) -> None:
    """A misspelt key in a pool's tls is reported with a suggestion."""
    assert errors(base, POOLS + "[pools.web.tls]\nverfy = true\n" + PLAIN_HTTP) == [
        "pools.web.tls.verfy: unknown key, did you mean 'verify'?"
    ]


def test_pool_client_key_without_cert_is_refused(base: Path) -> None:
    """A client key needs its certificate."""
    assert errors(
        base, POOLS + '[pools.web.tls]\nkey = "certs/a.key"\n' + PLAIN_HTTP
    ) == ["pools.web.tls.key: needs cert: a client key without its certificate"]


def test_pool_client_cert_with_wrong_key_names_the_files(base: Path) -> None:
    """A client certificate whose key does not match is reported at cert."""
    cert, key = base / "certs" / "a.pem", base / "certs" / "other.key"
    (problem,) = errors(
        base,
        POOLS
        + '[pools.web.tls]\ncert = "certs/a.pem"\nkey = "certs/other.key"\n'
        + PLAIN_HTTP,
    )
    assert problem.startswith(
        f"pools.web.tls.cert: {cert} (key {key}): the private key does not "
        "match the certificate"
    )


def test_pool_unreadable_ca_names_the_file(base: Path) -> None:
    """A CA file that cannot be read is reported with its path."""
    assert errors(
        base, POOLS + '[pools.web.tls]\nca = "certs/missing-ca.pem"\n' + PLAIN_HTTP
    ) == [
        f"pools.web.tls.ca: {base / 'certs' / 'missing-ca.pem'}: cannot read: "
        "No such file or directory"
    ]


def test_pool_ca_without_certificate_names_the_file(base: Path) -> None:
    """A CA file holding no certificate is reported with its path."""
    assert errors(
        base, POOLS + '[pools.web.tls]\nca = "certs/key-only.pem"\n' + PLAIN_HTTP
    ) == [
        f"pools.web.tls.ca: {base / 'certs' / 'key-only.pem'}: no PEM certificate in it"
    ]


def test_pool_server_name_must_be_a_dns_name(base: Path) -> None:
    """server_name is a DNS name."""
    assert errors(
        base, POOLS + '[pools.web.tls]\nserver_name = "not a name"\n' + PLAIN_HTTP
    ) == [
        "pools.web.tls.server_name: must be a DNS name ('example.com' or "
        "'*.example.com'), got 'not a name'"
    ]


# [acme] -----------------------------------------------------------------------------

TLS_WITH_REDIRECT = HTTPS + '[listeners.tls]\nredirect_http_from = "tcp:8081"\n'


def test_acme_full_example_parses(base: Path) -> None:
    """Every [acme] key parses into AcmeConfig, storage and ca resolved
    against the config's directory, domains lowercased."""
    config = parse(
        base,
        POOLS
        + TLS_WITH_REDIRECT
        + """
[acme]
directory = "https://acme-v02.api.letsencrypt.org/directory"
email = "ops@example.com"
storage = "state/acme"
domains = ["example.com", "WWW.Example.com"]
ca = "certs/ca.pem"
renew_before = 14
key_type = "rsa2048"
""",
    )
    assert config.acme == AcmeConfig(
        directory="https://acme-v02.api.letsencrypt.org/directory",
        storage=str(base / "state" / "acme"),
        domains=("example.com", "www.example.com"),
        email="ops@example.com",
        ca=str(base / "certs" / "ca.pem"),
        renew_before=14.0,
        key_type="rsa2048",
    )


def test_acme_defaults(base: Path) -> None:
    """Without the optional keys: no email, the system's CA, 30 days,
    ec256."""
    acme = parse(base, POOLS + TLS_WITH_REDIRECT + ACME).acme
    assert acme == AcmeConfig(
        directory="https://acme.example/directory",
        storage=str(base / "acme"),
        domains=("example.com",),
    )
    assert (acme.email, acme.ca, acme.renew_before, acme.key_type) == (
        None,
        None,
        30.0,
        "ec256",
    )


def test_acme_plain_http_listener_answers_challenges(base: Path) -> None:
    """A plain http listener (no redirect needed) plus a TLS listener is
    enough for [acme]."""
    config = parse(base, POOLS + PLAIN_HTTP + HTTPS + "[listeners.tls]\n" + ACME)
    assert config.acme is not None


def test_acme_wildcard_domain_is_refused(base: Path) -> None:
    """Wildcards need DNS-01, which rproxy does not do."""
    assert errors(
        base,
        POOLS
        + TLS_WITH_REDIRECT
        + ACME.replace('["example.com"]', '["example.com", "*.example.com"]'),
    ) == [
        "acme.domains: '*.example.com': wildcard names need DNS-01, and rproxy "
        "answers HTTP-01 only"
    ]


def test_acme_needs_a_plain_http_listener_or_redirect(base: Path) -> None:
    """Without a plain HTTP listener nothing can answer HTTP-01."""
    assert errors(base, POOLS + HTTPS + "[listeners.tls]\n" + ACME) == [
        "acme: HTTP-01 challenges need a plain HTTP listener (protocol = "
        '"http" without tls, or a listener\'s tls.redirect_http_from) on the '
        "port the ACME server connects to (80)"
    ]


def test_acme_needs_a_tls_listener(base: Path) -> None:
    """Certificates nobody serves are refused."""
    assert errors(base, POOLS + PLAIN_HTTP + ACME) == [
        "acme: no listener has [listeners.tls] to serve the certificates"
    ]


@pytest.mark.parametrize(
    "directory", ["ftp://acme.example/directory", "acme.example/directory", "https://"]
)
def test_acme_directory_must_be_an_http_url(base: Path, directory: str) -> None:
    """The directory is an http(s) URL with a host."""
    assert errors(
        base,
        POOLS
        + TLS_WITH_REDIRECT
        + ACME.replace('"https://acme.example/directory"', f'"{directory}"'),
    ) == [f"acme.directory: must be an http(s) URL, got {directory!r}"]


@pytest.mark.parametrize("email", ["ops.example.com", "mailto:ops@example.com"])
def test_acme_email_must_be_an_address(base: Path, email: str) -> None:
    """email is a bare address: no mailto:, and with an @."""
    assert errors(base, POOLS + TLS_WITH_REDIRECT + ACME + f'email = "{email}"\n') == [
        f"acme.email: must be an email address, got {email!r}"
    ]


@pytest.mark.parametrize("days", ["0", "-1", "-0.5"])
def test_acme_renew_before_must_be_positive(base: Path, days: str) -> None:
    """renew_before is a positive number of days."""
    assert errors(
        base, POOLS + TLS_WITH_REDIRECT + ACME + f"renew_before = {days}\n"
    ) == [f"acme.renew_before: must be a positive number of days, got {days}"]


def test_acme_key_type_must_be_known(base: Path) -> None:
    """Only the listed key types are accepted."""
    (problem,) = errors(base, POOLS + TLS_WITH_REDIRECT + ACME + 'key_type = "dsa"\n')
    assert problem.startswith(
        "acme.key_type: must be one of 'ec256', 'ec384', 'rsa2048', 'rsa4096', "
        "got 'dsa'"
    )


def test_acme_missing_ca_file_is_refused(base: Path) -> None:
    """A CA file for the ACME server that does not exist is named."""
    assert errors(
        base, POOLS + TLS_WITH_REDIRECT + ACME + 'ca = "certs/missing-ca.pem"\n'
    ) == [f"acme.ca: {base / 'certs' / 'missing-ca.pem'}: no such file"]


def test_acme_needs_directory_storage_and_domains(base: Path) -> None:
    """The three required keys are each reported when missing."""
    assert errors(base, POOLS + TLS_WITH_REDIRECT + "[acme]\n") == [
        "acme.directory: missing required key",
        "acme.storage: missing required key",
        "acme.domains: missing: name at least one domain",
    ]


def test_acme_empty_domains_is_refused(base: Path) -> None:
    """An [acme] section with domains = [] is a problem under acme.domains,
    not a config whose TLS listener has nothing to serve."""
    problems = errors(
        base,
        POOLS + TLS_WITH_REDIRECT + ACME.replace('["example.com"]', "[]"),
    )
    assert [p for p in problems if p.startswith("acme.domains: ")] != []
