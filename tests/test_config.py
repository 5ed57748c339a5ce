"""Tests for rproxy.config: TOML files in, a validated frozen model out."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest
from zope.interface.verify import verifyObject

from rproxy.balancing import BALANCERS, make_balancer
from rproxy.cli import main
from rproxy.config import (
    BALANCE_NAMES,
    CHECK_KINDS,
    PROTOCOLS,
    BackendConfig,
    Config,
    ConfigError,
    HealthConfig,
    KeepAliveConfig,
    ListenerConfig,
    PoolConfig,
    Timeouts,
    load_config,
    parse_config,
)
from rproxy.config._admission import AdmissionConfig
from rproxy.http.filters.headers import HeaderRules
from rproxy.http.routing import Route
from rproxy.interfaces import IBalancer

EXAMPLE = Path(__file__).parent / "configs" / "example.toml"

POOL = """
[pools.db]
backends = ["127.0.0.1:5433"]
"""

POOL_BACKENDS = 'backends = ["127.0.0.1:5433"]'

LISTENER = """
[[listeners]]
name = "front"
listen = "tcp:6432"
pool = "db"
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "c.toml")


def errors(text: str) -> list[str]:
    """
    The problems C{parse_config} reports for the TOML C{text}.
    """
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


HTTP_POOLS = """
[pools.web]
backends = ["10.0.0.1:80"]
[pools.api]
backends = ["10.0.0.2:80"]
"""

HTTP_LISTENER = """
[[listeners]]
name = "public"
protocol = "http"
listen = "tcp:8080"
"""


def http_errors(keys: str, routes: str = "") -> list[str]:
    """
    The problems reported for an http listener with C{keys} and then
    C{routes} (its C{[[listeners.routes]]} tables), over pools C{web} and
    C{api}.
    """
    return errors(HTTP_POOLS + HTTP_LISTENER + keys + "\n" + routes)


def route(body: str) -> str:
    """One C{[[listeners.routes]]} table with C{body}."""
    return "[[listeners.routes]]\n" + body + "\n"


def pool_errors(pool_body: str, tail: str = "") -> list[str]:
    """
    The problems reported for a pool C{db} with C{pool_body}, then C{tail}
    (sub-tables of the pool), then one listener using it.
    """
    return errors("[pools.db]\n" + pool_body + "\n" + tail + LISTENER)


# Valid configs --------------------------------------------------------------


def test_example_file_parses_to_the_expected_model() -> None:
    """
    The documented example loads with shorthand backends, IPv6, hostnames,
    defaults filled in and pool timeouts merged over the global ones.
    """
    config = load_config(EXAMPLE)
    assert config == Config(
        source=str(EXAMPLE),
        pools=(
            PoolConfig(
                name="db",
                balance="least_conn",
                connect_tries=2,
                backends=(
                    BackendConfig(
                        "127.0.0.1:5433", "127.0.0.1", 5433, "127.0.0.1:5433"
                    ),
                    BackendConfig(
                        "127.0.0.1:5434",
                        "127.0.0.1",
                        5434,
                        "127.0.0.1:5434",
                        weight=3,
                        max_connections=100,
                    ),
                    BackendConfig(
                        "127.0.0.1:5435", "127.0.0.1", 5435, "spare", backup=True
                    ),
                    BackendConfig("[::1]:5436", "::1", 5436, "[::1]:5436"),
                    BackendConfig(
                        "db.internal:5437", "db.internal", 5437, "db.internal:5437"
                    ),
                ),
                health=HealthConfig(
                    check="tcp", interval=2.0, timeout=0.5, rise=1, fall=5, port=9000
                ),
                timeouts=Timeouts(connect=2.0, idle=600.0),
            ),
            PoolConfig(
                name="web",
                balance="hash",
                backends=(
                    BackendConfig("10.0.0.1:8080", "10.0.0.1", 8080, "10.0.0.1:8080"),
                ),
                health=HealthConfig(
                    check="http",
                    path="/healthz",
                    expect_status=(200, 299),
                    host="web.example",
                ),
                timeouts=Timeouts(connect=4.0, idle=600.0),
            ),
        ),
        listeners=(
            ListenerConfig(
                "postgres", "tcp:6432:interface=127.0.0.1", "db", protocol="tcp"
            ),
            ListenerConfig("web", "tcp:8080", "web"),
        ),
        timeouts=Timeouts(connect=4.0, idle=600.0),
        shutdown_grace=0.0,
    )


def test_minimal_config_gets_the_documented_defaults() -> None:
    """
    A pool with only backends and one listener gets every stated default.
    """
    config = parse(POOL + LISTENER)
    assert config.timeouts == Timeouts(connect=5.0, idle=300.0)
    assert config.shutdown_grace == 10.0
    assert config.pool("db") == PoolConfig(
        name="db",
        backends=(
            BackendConfig("127.0.0.1:5433", "127.0.0.1", 5433, "127.0.0.1:5433"),
        ),
        balance="round_robin",
        hash_key="client_ip",
        health=HealthConfig(
            check="tcp",
            interval=2.0,
            timeout=1.0,
            rise=2,
            fall=3,
            path="/",
            expect_status=(200, 399),
            host=None,
            port=None,
        ),
        timeouts=Timeouts(connect=5.0, idle=300.0),
        connect_tries=3,
        keep_alive=KeepAliveConfig(max_idle=256, idle_timeout=30.0),
    )
    assert config.listeners == (ListenerConfig("front", "tcp:6432", "db", "tcp"),)


def test_pool_timeouts_override_global_ones_key_by_key() -> None:
    """
    A key in [pools.X.timeouts] wins; a key missing there comes from
    [timeouts].
    """
    config = parse(
        POOL + "[pools.db.timeouts]\nidle = 30\n"
        "[timeouts]\nconnect = 7\nidle = 100\n" + LISTENER
    )
    assert config.pool("db").timeouts == Timeouts(connect=7.0, idle=30.0)
    assert config.timeouts == Timeouts(connect=7.0, idle=100.0)


def test_integers_are_accepted_where_seconds_are_expected() -> None:
    """
    C{interval = 2} reads as the float 2.0.
    """
    config = parse(POOL + "[pools.db.health]\ninterval = 2\n" + LISTENER)
    interval = config.pool("db").health.interval
    assert interval == 2.0
    assert isinstance(interval, float)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("200", (200, 200)), ("200-399", (200, 399)), (" 204 - 204 ", (204, 204))],
)
def test_expect_status_accepts_a_code_or_a_range(
    written: str, expected: tuple[int, int]
) -> None:
    """
    C{expect_status} is a string status, a string range, or (below) an integer.
    """
    config = parse(
        POOL + f'[pools.db.health]\nexpect_status = "{written}"\n' + LISTENER
    )
    assert config.pool("db").health.expect_status == expected


def test_expect_status_accepts_an_integer() -> None:
    """
    C{expect_status = 204} means exactly 204.
    """
    config = parse(POOL + "[pools.db.health]\nexpect_status = 204\n" + LISTENER)
    assert config.pool("db").health.expect_status == (204, 204)


def test_header_hash_key_is_accepted_on_a_pool() -> None:
    """
    C{hash_key = "header:X-User"} is valid where no tcp listener uses the pool.
    """
    config = parse(
        POOL + '[pools.api]\nbalance = "hash"\nhash_key = "header:X-User"\n'
        'backends = ["10.0.0.1:80"]\n' + LISTENER
    )
    assert config.pool("api").hash_key == "header:X-User"


def test_config_pool_raises_key_error_for_an_unknown_name() -> None:
    """
    C{Config.pool} finds pools by name and raises KeyError otherwise.
    """
    config = parse(POOL + LISTENER)
    assert config.pool("db").name == "db"
    with pytest.raises(KeyError):
        config.pool("nope")


def test_model_is_frozen() -> None:
    """
    Config objects cannot be changed after parsing.
    """
    config = parse(POOL + LISTENER)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.shutdown_grace = 1.0  # type: ignore[misc]


def test_model_validators_reject_bad_values_built_in_code() -> None:
    """
    Embedders building the model directly get the same rules, one at a time.
    """
    with pytest.raises(ValueError):
        PoolConfig(name="p", backends=(), balance="fastest")
    with pytest.raises(ValueError):
        Timeouts(connect=0)
    with pytest.raises(ValueError):
        HealthConfig(expect_status=(400, 200))
    with pytest.raises(ValueError):
        KeepAliveConfig(max_idle=-1)
    with pytest.raises(ValueError):
        KeepAliveConfig(idle_timeout=0)


def test_choice_constants_are_tuples() -> None:
    """
    The allowed names are exported as tuples, in documentation order.
    """
    assert PROTOCOLS == ("tcp", "http")
    assert BALANCE_NAMES == ("round_robin", "weighted", "least_conn", "random2", "hash")
    assert CHECK_KINDS == ("tcp", "http", "none")


# One kind of problem per test -----------------------------------------------


def test_wrong_type_is_reported() -> None:
    """
    A string where a number belongs is reported with the value as written.
    """
    assert pool_errors('backends = [{ address = "127.0.0.1:1", weight = "3" }]') == [
        "c.toml: pools.db.backends[0].weight: must be a positive integer, got '3'"
    ]


def test_boolean_is_not_an_integer() -> None:
    """
    C{weight = true} is an error although bool is an int in Python.
    """
    assert pool_errors('backends = [{ address = "127.0.0.1:1", weight = true }]') == [
        "c.toml: pools.db.backends[0].weight: must be a positive integer, got true"
    ]


def test_string_where_seconds_expected_is_reported() -> None:
    """
    C{connect = "5"} is not a number.
    """
    assert errors(POOL + '[timeouts]\nconnect = "5"\n' + LISTENER) == [
        "c.toml: timeouts.connect: must be a positive number, got '5'"
    ]


def test_non_positive_numbers_are_reported() -> None:
    """
    Weights, limits, tries, thresholds and durations must be above zero.
    """
    assert pool_errors(
        "connect_tries = 0\n"
        'backends = [{ address = "127.0.0.1:1", weight = -2, max_connections = 0 }]',
        "[pools.db.health]\ninterval = 0\nrise = 0\nfall = -1\n"
        "[pools.db.timeouts]\nidle = -1.5\n",
    ) == [
        "c.toml: pools.db.connect_tries: must be a positive integer, got 0",
        "c.toml: pools.db.backends[0].weight: must be a positive integer, got -2",
        "c.toml: pools.db.backends[0].max_connections: "
        "must be a positive integer, got 0",
        "c.toml: pools.db.health.interval: must be a positive number, got 0",
        "c.toml: pools.db.health.rise: must be a positive integer, got 0",
        "c.toml: pools.db.health.fall: must be a positive integer, got -1",
        "c.toml: pools.db.timeouts.idle: must be a positive number, got -1.5",
    ]


def test_health_timeout_must_be_positive() -> None:
    """
    A zero probe timeout is reported.
    """
    assert pool_errors(POOL_BACKENDS, "[pools.db.health]\ntimeout = 0\n") == [
        "c.toml: pools.db.health.timeout: must be a positive number, got 0"
    ]


def test_infinite_seconds_are_reported() -> None:
    """
    TOML's C{inf} and C{nan} are not durations.
    """
    assert pool_errors(POOL_BACKENDS, "[pools.db.health]\ninterval = inf\n") == [
        "c.toml: pools.db.health.interval: must be a positive number, got inf"
    ]


def test_negative_shutdown_grace_is_reported() -> None:
    """
    C{grace} may be zero but not negative.
    """
    assert errors(POOL + "[shutdown]\ngrace = -1\n" + LISTENER) == [
        "c.toml: shutdown.grace: must be a number >= 0, got -1"
    ]


def test_unknown_key_suggests_the_closest_known_key() -> None:
    """
    A misspelt key is reported with "did you mean".
    """
    assert pool_errors('balanse = "hash"\n' + POOL_BACKENDS) == [
        "c.toml: pools.db.balanse: unknown key, did you mean 'balance'?"
    ]


def test_unknown_key_lists_known_keys_when_none_is_close() -> None:
    """
    An unknown key with no close match lists the keys the table accepts.
    """
    assert pool_errors(POOL_BACKENDS, "[pools.db.timeouts]\nzzz = 1\n") == [
        "c.toml: pools.db.timeouts.zzz: unknown key; known keys are 'connect', "
        "'idle', 'request_head', 'request_body', 'keep_alive', 'response', 'tunnel', "
        "'client_hello', 'proxy_header'"
    ]


def test_unknown_keys_are_found_at_every_level() -> None:
    """
    Top-level, backend and listener tables are all checked for unknown keys.
    """
    assert errors(
        'listner = 1\n[pools.db]\nbackends = [{ address = "h:1", wieght = 2 }]\n'
        + LISTENER
        + 'poool = "db"\n'
    ) == [
        "c.toml: listner: unknown key, did you mean 'listeners'?",
        "c.toml: pools.db.backends[0].wieght: unknown key, did you mean 'weight'?",
        "c.toml: listeners[0].poool: unknown key, did you mean 'pool'?",
    ]


def test_unknown_balance_lists_the_allowed_names() -> None:
    """
    An unknown C{balance} names every strategy, and the closest one.
    """
    assert pool_errors('balance = "least_con"\n' + POOL_BACKENDS) == [
        "c.toml: pools.db.balance: must be one of 'round_robin', 'weighted', "
        "'least_conn', 'random2', 'hash', got 'least_con'; did you mean 'least_conn'?"
    ]


def test_unknown_check_kind_lists_the_allowed_kinds() -> None:
    """
    An unknown C{check} names every kind of health check.
    """
    assert pool_errors(POOL_BACKENDS, '[pools.db.health]\ncheck = "ping"\n') == [
        "c.toml: pools.db.health.check: must be one of 'tcp', 'http', 'none', "
        "got 'ping'"
    ]


def test_unknown_protocol_lists_the_allowed_protocols() -> None:
    """
    A listener protocol not supported is reported.
    """
    assert errors(POOL + LISTENER + 'protocol = "udp"\n') == [
        "c.toml: listeners[0].protocol: must be one of 'tcp', 'http', got 'udp'"
    ]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("localhost", "expected 'host:port', got 'localhost'"),
        ("::1:80", "write an IPv6 address as '[::1]:port'"),
        ("[::1]80", "expected '[ipv6]:port', got '[::1]80'"),
        ("h:0", "port must be 1-65535, got '0'"),
    ],
)
def test_bad_address_is_reported_with_parse_address_message(
    address: str, problem: str
) -> None:
    """
    A backend address that cannot be split into host and port is reported.
    """
    assert pool_errors(f'backends = ["127.0.0.1:1", "{address}"]') == [
        f"c.toml: pools.db.backends[1].address: {problem}"
    ]


def test_backend_must_be_an_address_or_a_table() -> None:
    """
    A backend written as a number is reported.
    """
    assert pool_errors("backends = [5433]") == [
        "c.toml: pools.db.backends[0]: must be an address string or a table, got 5433"
    ]


def test_backend_table_needs_an_address() -> None:
    """
    A backend table without C{address} is reported.
    """
    assert pool_errors('backends = [{ name = "a" }]') == [
        "c.toml: pools.db.backends[0].address: missing required key"
    ]


def test_duplicate_backend_names_are_reported() -> None:
    """
    Two backends with one name in a pool are reported, defaulted names too.
    """
    assert pool_errors(
        'backends = ["h:1", { address = "h:2", name = "h:1" }, "h:3", "h:3"]'
    ) == [
        "c.toml: pools.db.backends[1]: duplicate backend name 'h:1', also used "
        "by backends[0]; give one a distinct name",
        "c.toml: pools.db.backends[3]: duplicate backend name 'h:3', also used "
        "by backends[2]; give one a distinct name",
    ]


def test_pool_with_empty_backends_is_reported() -> None:
    """
    C{backends = []} is reported.
    """
    assert pool_errors("backends = []") == [
        "c.toml: pools.db.backends: is empty: a pool needs at least one backend"
    ]


def test_pool_without_backends_is_reported() -> None:
    """
    A pool with no C{backends} key is reported.
    """
    assert pool_errors('balance = "random2"') == [
        "c.toml: pools.db.backends: missing: a pool needs at least one backend"
    ]


def test_backends_must_be_an_array() -> None:
    """
    C{backends = "h:1"} is not an array.
    """
    assert pool_errors('backends = "h:1"') == [
        "c.toml: pools.db.backends: must be an array, got 'h:1'"
    ]


def test_missing_listeners_are_reported() -> None:
    """
    A config with no listener is reported.
    """
    assert errors(POOL) == [
        "c.toml: listeners: missing: define at least one [[listeners]]"
    ]


def test_empty_listeners_are_reported() -> None:
    """
    C{listeners = []} is reported.
    """
    assert errors("listeners = []\n" + POOL) == [
        "c.toml: listeners: is empty: define at least one [[listeners]]"
    ]


def test_listener_must_be_a_table() -> None:
    """
    A listener written as a string is reported.
    """
    assert errors('listeners = ["tcp:80"]\n' + POOL) == [
        "c.toml: listeners[0]: must be a table, got 'tcp:80'"
    ]


def test_duplicate_listener_names_are_reported() -> None:
    """
    Two listeners with one name are reported.
    """
    second = LISTENER.replace("6432", "6433")
    assert errors(POOL + LISTENER + second) == [
        "c.toml: listeners[1].name: duplicate listener name 'front', also used by "
        "listeners[0]"
    ]


def test_listener_missing_required_keys_are_reported() -> None:
    """
    A listener without name, listen or pool reports each missing key.
    """
    assert errors(POOL + '[[listeners]]\nprotocol = "tcp"\n') == [
        "c.toml: listeners[0].name: missing required key",
        "c.toml: listeners[0].listen: missing required key",
        "c.toml: listeners[0].pool: missing required key",
    ]


def test_listener_naming_a_missing_pool_suggests_a_close_one() -> None:
    """
    A misspelt pool name is reported with "did you mean".
    """
    assert errors(POOL + LISTENER.replace('"db"', '"dbb"')) == [
        "c.toml: listeners[0].pool: no pool named 'dbb'; did you mean 'db'?"
    ]


def test_listener_naming_a_missing_pool_lists_the_pools() -> None:
    """
    With no close match, the pools that exist are listed.
    """
    assert errors(POOL + LISTENER.replace('"db"', '"zzz"')) == [
        "c.toml: listeners[0].pool: no pool named 'zzz'; pools are 'db'"
    ]


def test_listener_naming_a_broken_pool_reports_only_the_pool() -> None:
    """
    A pool with problems still exists: its listeners are not reported.
    """
    assert errors("[pools.db]\nbackends = []\n" + LISTENER) == [
        "c.toml: pools.db.backends: is empty: a pool needs at least one backend"
    ]


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("foo:1", "Unknown endpoint type: 'foo'"),
        ("tcp:abc", "invalid literal for int() with base 10: 'abc'"),
    ],
)
def test_listen_string_twisted_cannot_parse_is_reported(
    listen: str, problem: str
) -> None:
    """
    The exception text from serverFromString is reported.
    """
    assert errors(POOL + LISTENER.replace('"tcp:6432"', f'"{listen}"')) == [
        f"c.toml: listeners[0].listen: invalid endpoint {listen!r}: {problem}"
    ]


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ('"600"', "status codes must be 100-599, got '600'"),
        ("99", "status codes must be 100-599, got 99"),
        ('"200-700"', "status codes must be 100-599, got '200-700'"),
        ('"400-200"', "range start 400 is above its end 200"),
        ('"2xx"', "must be a status (200) or a range ('200-399'), got '2xx'"),
        ("true", "must be a status (200) or a range ('200-399'), got true"),
    ],
)
def test_bad_expect_status_is_reported(written: str, problem: str) -> None:
    """
    Statuses outside 100-599, inverted ranges and other forms are reported.
    """
    assert pool_errors(
        POOL_BACKENDS, f"[pools.db.health]\nexpect_status = {written}\n"
    ) == [f"c.toml: pools.db.health.expect_status: {problem}"]


@pytest.mark.parametrize("hash_key", ["cookie:id", "header:", "header:X User"])
def test_bad_hash_key_is_reported(hash_key: str) -> None:
    """
    C{hash_key} is C{client_ip} or C{header:} and a header name.
    """
    assert pool_errors(f'hash_key = "{hash_key}"\n' + POOL_BACKENDS) == [
        "c.toml: pools.db.hash_key: must be 'client_ip' or 'header:NAME' with "
        f"NAME a header name, got {hash_key!r}"
    ]


def test_tcp_listener_cannot_use_a_pool_hashing_on_a_header() -> None:
    """
    TCP has no headers, so a tcp listener on a header-hashed pool is reported.
    """
    assert pool_errors('hash_key = "header:X-User"\n' + POOL_BACKENDS) == [
        "c.toml: listeners[0].pool: pool 'db' hashes on 'header:X-User', but a "
        "tcp listener cannot see headers"
    ]


def test_health_port_out_of_range_is_reported() -> None:
    """
    A probe port must be 1-65535.
    """
    assert pool_errors(POOL_BACKENDS, "[pools.db.health]\nport = 70000\n") == [
        "c.toml: pools.db.health.port: must be a port number 1-65535, got 70000"
    ]


def test_health_path_must_start_with_a_slash() -> None:
    """
    An HTTP check path is absolute.
    """
    assert pool_errors(
        POOL_BACKENDS, '[pools.db.health]\ncheck = "http"\npath = "healthz"\n'
    ) == [
        "c.toml: pools.db.health.path: must be a path starting with '/', got 'healthz'"
    ]


def test_missing_pools_are_reported() -> None:
    """
    A config without [pools] is reported.
    """
    assert errors(LISTENER) == [
        "c.toml: pools: missing: define at least one pool, as [pools.NAME]",
        "c.toml: listeners[0].pool: no pool named 'db'",
    ]


def test_empty_pools_are_reported() -> None:
    """
    An empty [pools] table is reported.
    """
    assert errors("pools = {}\n" + LISTENER) == [
        "c.toml: pools: is empty: define at least one pool, as [pools.NAME]",
        "c.toml: listeners[0].pool: no pool named 'db'",
    ]


def test_sections_must_be_tables() -> None:
    """
    A pool, [timeouts] or [shutdown] written as a value is reported.
    """
    assert errors("timeouts = 5\nshutdown = true\n[pools]\ndb = 1\n" + LISTENER) == [
        "c.toml: timeouts: must be a table, got 5",
        "c.toml: shutdown: must be a table, got true",
        "c.toml: pools.db: must be a table, got 1",
    ]


def test_odd_pool_names_are_quoted_in_key_paths() -> None:
    """
    A pool name that is not a bare TOML key is quoted in the path.
    """
    assert errors('[pools."a.b"]\nbackends = [{ address = "h:1", weight = 0 }]\n') == [
        'c.toml: pools."a.b".backends[0].weight: must be a positive integer, got 0',
        "c.toml: listeners: missing: define at least one [[listeners]]",
    ]


def test_several_problems_are_reported_at_once() -> None:
    """
    Every problem in the file is reported, in file order, in one error.
    """
    assert errors(
        "[pools.db]\n"
        'balance = "fastest"\n'
        'backends = ["nohost", { address = "h:1", weight = 0 }]\n'
        "[pools.db.health]\nrise = 0\n"
        "[[listeners]]\n"
        'name = "front"\nlisten = "tcp:6432"\npool = "web"\n'
    ) == [
        "c.toml: pools.db.balance: must be one of 'round_robin', 'weighted', "
        "'least_conn', 'random2', 'hash', got 'fastest'",
        "c.toml: pools.db.backends[0].address: expected 'host:port', got 'nohost'",
        "c.toml: pools.db.backends[1].weight: must be a positive integer, got 0",
        "c.toml: pools.db.health.rise: must be a positive integer, got 0",
        "c.toml: listeners[0].pool: no pool named 'web'; pools are 'db'",
    ]


# Reading files --------------------------------------------------------------


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    """
    An unreadable file is one problem naming the file and the OS reason.
    """
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read: No such file or directory"]


def test_load_config_reports_broken_toml_with_line_and_column(
    tmp_path: Path,
) -> None:
    """
    A TOML syntax error is reported with tomllib's line and column.
    """
    path = tmp_path / "broken.toml"
    path.write_text("[pools.db]\nbalance = round_robin\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"{path}: invalid TOML: Invalid value (at line 2, column 11)"
    ]


def test_load_config_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """
    TOML is UTF-8; other bytes are reported as invalid TOML.
    """
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: invalid TOML: not UTF-8 (byte 11)"]


def test_load_config_names_the_file_in_validation_problems(tmp_path: Path) -> None:
    """
    Problems found after parsing name the file as given.
    """
    path = tmp_path / "c.toml"
    path.write_text(POOL)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [
        f"{path}: listeners: missing: define at least one [[listeners]]"
    ]


def test_config_error_str_is_the_problems_one_per_line() -> None:
    """
    C{str(ConfigError)} joins the problem lines with newlines.
    """
    error = ConfigError(["a.toml: x: bad", "a.toml: y: worse"])
    assert str(error) == "a.toml: x: bad\na.toml: y: worse"
    assert error.errors == ["a.toml: x: bad", "a.toml: y: worse"]


def test_access_log_is_off_unless_configured() -> None:
    """Without an [access_log] table no access log is written."""
    assert parse(POOL + LISTENER).access_log is None


def test_access_log_path_and_format() -> None:
    """[access_log] gives the file and the format, combined by default."""
    config = parse(POOL + LISTENER + '[access_log]\npath = "/var/log/rproxy.log"\n')
    assert config.access_log is not None
    assert (config.access_log.path, config.access_log.format) == (
        "/var/log/rproxy.log",
        "combined",
    )
    json_log = parse(
        POOL + LISTENER + '[access_log]\npath = "a.log"\nformat = "json"\n'
    )
    assert json_log.access_log is not None and json_log.access_log.format == "json"


def test_access_log_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A relative access log path is taken from the config file's directory,
    like every other path in it, whatever the working directory; an
    absolute path and C{"-"} (standard output) stay as they are.
    """
    monkeypatch.chdir(tmp_path)
    for path, expected in [
        ("logs/access.log", "/etc/rproxy/logs/access.log"),
        ("../access.log", "/etc/access.log"),
        ("/var/log/rproxy.log", "/var/log/rproxy.log"),
        ("-", "-"),
    ]:
        text = POOL + LISTENER + f'[access_log]\npath = "{path}"\n'
        config = parse_config(tomllib.loads(text), "/etc/rproxy/rproxy.toml")
        assert config.access_log is not None
        assert config.access_log.path == expected, path


def test_access_log_problems_are_reported() -> None:
    """A missing path and an unknown format are both named."""
    assert errors(POOL + LISTENER + '[access_log]\nformat = "xml"\n') == [
        "c.toml: access_log.path: missing required key",
        "c.toml: access_log.format: must be one of 'combined', 'json', got 'xml'",
    ]


# Backend keep-alive ----------------------------------------------------------


def test_pool_keep_alive_table_is_read() -> None:
    """
    C{[pools.NAME.keep_alive]} sets the pool's idle connection limits; an
    integer timeout reads as seconds, and C{max_idle = 0} is allowed.
    """
    config = parse(
        POOL + "[pools.db.keep_alive]\nmax_idle = 0\nidle_timeout = 4\n"
        '[pools.web]\nbackends = ["10.0.0.1:80"]\n'
        "[pools.web.keep_alive]\nmax_idle = 8\nidle_timeout = 2.5\n" + LISTENER
    )
    assert config.pool("db").keep_alive == KeepAliveConfig(max_idle=0, idle_timeout=4.0)
    assert isinstance(config.pool("db").keep_alive.idle_timeout, float)
    assert config.pool("web").keep_alive == KeepAliveConfig(
        max_idle=8, idle_timeout=2.5
    )


def test_pool_keep_alive_keys_default_one_by_one() -> None:
    """
    A pool without the table gets 256 idle connections for 30 s; a table
    with one key gets the default for the other.
    """
    config = parse(
        POOL + '[pools.web]\nbackends = ["10.0.0.1:80"]\n'
        "[pools.web.keep_alive]\nidle_timeout = 5\n"
        '[pools.api]\nbackends = ["10.0.0.2:80"]\n'
        "[pools.api.keep_alive]\nmax_idle = 4\n" + LISTENER
    )
    assert KeepAliveConfig() == KeepAliveConfig(max_idle=256, idle_timeout=30.0)
    assert config.pool("db").keep_alive == KeepAliveConfig()
    assert config.pool("web").keep_alive == KeepAliveConfig(idle_timeout=5.0)
    assert config.pool("api").keep_alive == KeepAliveConfig(max_idle=4)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("max_idle = -1", "max_idle: must be an integer >= 0, got -1"),
        ("max_idle = 1.5", "max_idle: must be an integer >= 0, got 1.5"),
        ("max_idle = true", "max_idle: must be an integer >= 0, got true"),
        ('max_idle = "8"', "max_idle: must be an integer >= 0, got '8'"),
        ("idle_timeout = 0", "idle_timeout: must be a positive number, got 0"),
        ("idle_timeout = -2.5", "idle_timeout: must be a positive number, got -2.5"),
        ("idle_timeout = false", "idle_timeout: must be a positive number, got false"),
        ('idle_timeout = "30"', "idle_timeout: must be a positive number, got '30'"),
        ("idle_timeout = inf", "idle_timeout: must be a positive number, got inf"),
    ],
)
def test_bad_keep_alive_value_is_reported(written: str, problem: str) -> None:
    """
    C{max_idle} is an integer >= 0 and C{idle_timeout} a finite number of
    seconds above zero; booleans are neither.
    """
    assert pool_errors(POOL_BACKENDS, f"[pools.db.keep_alive]\n{written}\n") == [
        f"c.toml: pools.db.keep_alive.{problem}"
    ]


def test_unknown_keep_alive_key_is_reported() -> None:
    """
    A misspelt key gets "did you mean"; one unlike any lists the known keys.
    """
    assert pool_errors(
        POOL_BACKENDS, "[pools.db.keep_alive]\nmax_idel = 2\nzzz = 1\n"
    ) == [
        "c.toml: pools.db.keep_alive.max_idel: unknown key, did you mean 'max_idle'?",
        "c.toml: pools.db.keep_alive.zzz: unknown key; known keys are 'max_idle', "
        "'idle_timeout'",
    ]


def test_keep_alive_must_be_a_table() -> None:
    """
    C{keep_alive = 5} on a pool is reported, not read as a limit.
    """
    assert pool_errors("keep_alive = 5\n" + POOL_BACKENDS) == [
        "c.toml: pools.db.keep_alive: must be a table, got 5"
    ]


def test_check_summary_does_not_count_keep_alive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    C{rproxy check} prints the same one-line summary with a keep_alive table.
    """
    path = tmp_path / "c.toml"
    path.write_text(
        POOL + "[pools.db.keep_alive]\nmax_idle = 0\nidle_timeout = 1\n" + LISTENER
    )
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok: 1 listener, 1 pool, 1 backend\n"


# HTTP listeners --------------------------------------------------------------


def test_http_listener_parses_to_the_documented_model() -> None:
    """
    Every HTTP key is read; the listener's pool becomes the last route, a
    default for requests no other route matches.
    """
    config = parse(
        HTTP_POOLS + HTTP_LISTENER + 'pool = "web"\n'
        'trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "::1"]\n'
        "x_forwarded = false\nforwarded = true\nvia = true\n"
        "preserve_host = false\n"
        'remove_response_headers = ["Server", "X-Powered-By"]\n'
        "max_body = 1048576\nmax_header_size = 8192\nmax_headers = 50\n"
        "max_target = 4096\n"
        + route(
            'host = "API.example.com."\npath_prefix = "/v1/"\n'
            'strip_prefix = true\npool = "api"'
        )
        + route('host = "*.example.com"\npool = "api"')
    )
    assert config.listeners == (
        ListenerConfig(
            "public",
            "tcp:8080",
            "web",
            "http",
            routes=(
                Route("api", "api.example.com", "/v1/", strip_prefix=True),
                Route("api", "*.example.com"),
                Route("web"),
            ),
            trusted_proxies=("10.0.0.0/8", "127.0.0.1", "::1"),
            x_forwarded=False,
            forwarded=True,
            via=True,
            preserve_host=False,
            remove_response_headers=("server", "x-powered-by"),
            max_body=1048576,
            max_header_size=8192,
            max_headers=50,
            max_target=4096,
        ),
    )


def test_http_listener_gets_the_documented_defaults() -> None:
    """
    An http listener with only a pool routes everything there and gets
    every stated default.
    """
    (listener,) = parse(HTTP_POOLS + HTTP_LISTENER + 'pool = "web"\n').listeners
    assert listener == ListenerConfig(
        "public", "tcp:8080", "web", "http", routes=(Route("web"),)
    )
    assert attrs.asdict(listener, recurse=False) == {
        "name": "public",
        "listen": "tcp:8080",
        "pool": "web",
        "protocol": "http",
        "routes": (Route("web"),),
        "tls": None,
        "sni_routes": (),
        "trusted_proxies": (),
        "accept_proxy": False,
        "admission": AdmissionConfig(),
        "x_forwarded": True,
        "forwarded": False,
        "via": False,
        "preserve_host": True,
        "remove_response_headers": (),
        "headers": HeaderRules(),
        "max_body": None,
        "min_body_rate": 500.0,
        "max_header_size": 16384,
        "max_headers": 100,
        "max_target": 8192,
        "limit": (),
        "http2": True,
        "h2c": False,
    }


def test_tcp_listener_gets_no_routes() -> None:
    """
    A tcp listener keeps its pool and has no routes.
    """
    (listener,) = parse(POOL + LISTENER).listeners
    assert (listener.pool, listener.routes) == ("db", ())


def test_http_listener_with_routes_needs_no_pool() -> None:
    """
    Without a pool the routes are exactly those written, in file order.
    """
    config = parse(
        HTTP_POOLS
        + HTTP_LISTENER
        + route('path_prefix = "/api/"\npool = "api"')
        + route('pool = "web"')
    )
    (listener,) = config.listeners
    assert listener.pool is None
    assert listener.routes == (Route("api", path_prefix="/api/"), Route("web"))


def test_http_listener_may_use_a_pool_hashing_on_a_header() -> None:
    """
    An http listener sees headers, so C{hash_key = "header:NAME"} is fine,
    for its pool and for its routes' pools.
    """
    config = parse(
        '[pools.web]\nbalance = "hash"\nhash_key = "header:X-User"\n'
        'backends = ["10.0.0.1:80"]\n'
        + HTTP_LISTENER
        + 'pool = "web"\n'
        + route('host = "a.example"\npool = "web"')
    )
    assert config.listeners[0].routes == (Route("web", "a.example"), Route("web"))


def test_equal_remove_response_headers_are_kept_once() -> None:
    """
    Header names are compared without case; each is kept once, lowercase.
    """
    (listener,) = parse(
        HTTP_POOLS
        + HTTP_LISTENER
        + 'pool = "web"\nremove_response_headers = ["Server", "SERVER", "Via"]\n'
    ).listeners
    assert listener.remove_response_headers == ("server", "via")


def test_http_timeouts_have_defaults_and_merge_per_pool() -> None:
    """
    The HTTP timeouts default as documented, and a pool overrides them key
    by key like connect and idle.
    """
    config = parse(
        POOL + "[pools.db.timeouts]\nresponse = 5\n"
        "[timeouts]\nrequest_head = 3\ntunnel = 60\n" + LISTENER
    )
    assert Timeouts() == Timeouts(
        connect=5.0,
        idle=300.0,
        request_head=10.0,
        keep_alive=60.0,
        response=60.0,
        tunnel=3600.0,
    )
    assert config.timeouts == Timeouts(request_head=3.0, tunnel=60.0)
    assert config.pool("db").timeouts == Timeouts(
        request_head=3.0, response=5.0, tunnel=60.0
    )


def test_listener_model_built_in_code_keeps_its_shape() -> None:
    """
    A tcp listener needs a pool and no routes; an http one needs routes, and
    its pool, if any, must be the last of them.
    """
    with pytest.raises(ValueError, match="a tcp listener needs a pool"):
        ListenerConfig("a", "tcp:1")
    with pytest.raises(ValueError, match="a tcp listener needs a pool"):
        ListenerConfig("a", "tcp:1", "web", routes=(Route("web"),))
    with pytest.raises(ValueError, match="at least one route"):
        ListenerConfig("a", "tcp:1", "web", "http")
    with pytest.raises(ValueError, match="pool must be its last route"):
        ListenerConfig("a", "tcp:1", "web", "http", routes=(Route("api"),))
    with pytest.raises(ValueError):
        ListenerConfig("a", "tcp:1", "web", "http", routes=(Route("web"),), max_body=0)


def test_http_timeouts_must_be_positive() -> None:
    """
    The new timeouts are durations like the others.
    """
    assert errors(
        POOL + "[timeouts]\nrequest_head = 0\nkeep_alive = -1\n"
        'response = "60"\ntunnel = inf\n' + LISTENER
    ) == [
        "c.toml: timeouts.request_head: must be a positive number, got 0",
        "c.toml: timeouts.keep_alive: must be a positive number, got -1",
        "c.toml: timeouts.response: must be a positive number, got '60'",
        "c.toml: timeouts.tunnel: must be a positive number, got inf",
    ]


def test_unknown_route_key_suggests_the_closest_known_key() -> None:
    """
    A misspelt key in a route is reported with "did you mean".
    """
    assert http_errors("", route('pool = "web"\npath_prefx = "/a/"')) == [
        "c.toml: listeners[0].routes[0].path_prefx: unknown key, "
        "did you mean 'path_prefix'?"
    ]


def test_route_without_a_pool_is_reported() -> None:
    """
    Every route names its pool.
    """
    assert http_errors('pool = "web"', route('host = "a.example"')) == [
        "c.toml: listeners[0].routes[0].pool: missing required key"
    ]


def test_route_naming_a_missing_pool_suggests_a_close_one() -> None:
    """
    A route's pool is checked like a listener's.
    """
    assert http_errors("", route('pool = "apii"') + route('pool = "zzz"')) == [
        "c.toml: listeners[0].routes[0].pool: no pool named 'apii'; "
        "did you mean 'api'?",
        "c.toml: listeners[0].routes[1].pool: no pool named 'zzz'; "
        "pools are 'web', 'api'",
    ]


def test_http_listener_naming_a_missing_pool_is_reported() -> None:
    """
    An http listener's own pool must exist too.
    """
    assert http_errors('pool = "wbe"') == [
        "c.toml: listeners[0].pool: no pool named 'wbe'; did you mean 'web'?"
    ]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            'host = "a b"',
            "host: must be a name ('api.example.com'), a wildcard "
            "('*.example.com') or an IP address, got 'a b'",
        ),
        (
            'host = "a.*.example"',
            "host: a wildcard must be the whole first label ('*.example.com'), "
            "got 'a.*.example'",
        ),
        ("host = 5", "host: must be a non-empty string, got 5"),
        (
            'path_prefix = "v1"',
            "path_prefix: must start with '/' and be printable ASCII without "
            "spaces, '?' or '#' (percent-encode the rest), got 'v1'",
        ),
        ("strip_prefix = true", "strip_prefix: needs a path_prefix"),
        (
            'path_prefix = "/a"\nstrip_prefix = 1',
            "strip_prefix: must be true or false, got 1",
        ),
    ],
)
def test_bad_route_is_reported_under_the_key_at_fault(keys: str, problem: str) -> None:
    """
    What L{Route} refuses is reported under the key it is about.
    """
    assert http_errors(
        'pool = "web"',
        route('host = "ok.example"\npool = "api"') + route(keys + '\npool = "api"'),
    ) == [f"c.toml: listeners[0].routes[1].{problem}"]


def test_bad_path_prefix_does_not_also_blame_strip_prefix() -> None:
    """
    C{strip_prefix} is only checked against a valid C{path_prefix}.
    """
    for prefix in ('"x"', "5"):
        (problem,) = http_errors(
            "", route(f'path_prefix = {prefix}\nstrip_prefix = true\npool = "api"')
        )
        assert problem.startswith("c.toml: listeners[0].routes[0].path_prefix: ")


def test_duplicate_routes_are_reported() -> None:
    """
    A second route with the same host (as normalised) and path_prefix would
    never be used.
    """
    assert http_errors(
        "",
        route('host = "a.example"\npath_prefix = "/v1/"\npool = "api"')
        + route('host = "A.Example."\npath_prefix = "/v1/"\npool = "web"')
        + route('host = "a.example"\npool = "web"')
        + route('pool = "web"')
        + route('pool = "api"'),
    ) == [
        "c.toml: listeners[0].routes[1]: same host and path_prefix as routes[0], "
        "so it would never be used",
        "c.toml: listeners[0].routes[4]: same host and path_prefix as routes[3], "
        "so it would never be used",
    ]


def test_pool_beside_a_default_route_is_reported() -> None:
    """
    A listener pool is the default route, so a route without host or
    path_prefix makes it useless.
    """
    assert http_errors(
        'pool = "web"',
        route('host = "a.example"\npool = "api"') + route('pool = "api"'),
    ) == [
        "c.toml: listeners[0].pool: routes[1] is already the default route (no "
        "host, no path_prefix), so this pool would never be used; drop one"
    ]


@pytest.mark.parametrize("keys", ["", "routes = []"])
def test_http_listener_without_pool_or_routes_is_reported(keys: str) -> None:
    """
    An http listener must send requests somewhere.
    """
    assert http_errors(keys) == [
        "c.toml: listeners[0].pool: missing: an http listener needs a pool, "
        "[[listeners.routes]] or both"
    ]


def test_routes_must_be_an_array_of_tables() -> None:
    """
    C{routes} written as a value, or with a value in it, is reported.
    """
    assert http_errors('pool = "web"\nroutes = "api"') == [
        "c.toml: listeners[0].routes: must be an array of tables, as "
        "[[listeners.routes]]"
    ]
    assert http_errors('pool = "web"\nroutes = ["api"]') == [
        "c.toml: listeners[0].routes[0]: must be a table, got 'api'"
    ]


def test_http_keys_on_a_tcp_listener_are_reported() -> None:
    """
    Each HTTP-only key on a tcp listener is named, whatever its value.
    """
    keys = (
        "x_forwarded = true\nforwarded = true\n"
        "via = true\npreserve_host = true\nremove_response_headers = []\n"
        "max_body = 0\nmax_header_size = 1\nmax_headers = 1\nmax_target = 1\n"
    )
    assert errors(POOL + LISTENER + keys + route('pool = "db"')) == [
        f'c.toml: listeners[0].{key}: only for protocol = "http" listeners'
        for key in (
            "routes",
            "x_forwarded",
            "forwarded",
            "via",
            "preserve_host",
            "remove_response_headers",
            "max_body",
            "max_header_size",
            "max_headers",
            "max_target",
        )
    ]


def test_bad_protocol_is_not_blamed_on_http_keys() -> None:
    """
    A listener with an unknown protocol is checked as http, so its HTTP keys
    are not reported as well.
    """
    assert errors(
        HTTP_POOLS
        + HTTP_LISTENER.replace('"http"', '"htp"')
        + 'pool = "web"\nvia = true\n'
    ) == [
        "c.toml: listeners[0].protocol: must be one of 'tcp', 'http', got 'htp'; "
        "did you mean 'http'?"
    ]


def test_bad_trusted_proxies_are_reported() -> None:
    """
    Each entry is an IP address or a network; host bits may be set.
    """
    assert http_errors(
        'pool = "web"\n'
        'trusted_proxies = ["10.0.0.1/8", "10.0.0.256", "fe80::/200", 10, "x"]'
    ) == [
        "c.toml: listeners[0].trusted_proxies[1]: must be an IP address or "
        "network ('10.0.0.0/8', '::1'), got '10.0.0.256'",
        "c.toml: listeners[0].trusted_proxies[2]: must be an IP address or "
        "network ('10.0.0.0/8', '::1'), got 'fe80::/200'",
        "c.toml: listeners[0].trusted_proxies[3]: must be an IP address or "
        "network ('10.0.0.0/8', '::1'), got 10",
        "c.toml: listeners[0].trusted_proxies[4]: must be an IP address or "
        "network ('10.0.0.0/8', '::1'), got 'x'",
    ]


def test_trusted_proxies_must_be_an_array() -> None:
    """
    A single network must still be written as an array.
    """
    assert http_errors('pool = "web"\ntrusted_proxies = "10.0.0.0/8"') == [
        "c.toml: listeners[0].trusted_proxies: must be an array, got '10.0.0.0/8'"
    ]


def test_bad_response_header_names_are_reported() -> None:
    """
    Names to remove are header names (tokens), and not the framing headers.
    """
    assert http_errors(
        'pool = "web"\nremove_response_headers = ["X Powered", "", 1, "Content-Length"]'
    ) == [
        "c.toml: listeners[0].remove_response_headers[0]: must be a header name "
        "(an RFC 9110 token), got 'X Powered'",
        "c.toml: listeners[0].remove_response_headers[1]: must be a header name "
        "(an RFC 9110 token), got ''",
        "c.toml: listeners[0].remove_response_headers[2]: must be a header name "
        "(an RFC 9110 token), got 1",
        "c.toml: listeners[0].remove_response_headers[3]: cannot remove "
        "'Content-Length': it frames the response body; the headers that "
        "cannot be removed are 'content-length', 'transfer-encoding'",
    ]


def test_non_positive_limits_are_reported() -> None:
    """
    Size and count limits are positive integers; C{max_body = 0} too is refused.
    """
    assert http_errors(
        'pool = "web"\nmax_body = 0\nmax_header_size = -1\nmax_headers = 1.5\n'
        "max_target = true"
    ) == [
        "c.toml: listeners[0].max_body: must be a positive integer, got 0",
        "c.toml: listeners[0].max_header_size: must be a positive integer, got -1",
        "c.toml: listeners[0].max_headers: must be a positive integer, got 1.5",
        "c.toml: listeners[0].max_target: must be a positive integer, got true",
    ]


def test_non_boolean_flags_are_reported() -> None:
    """
    The forwarding switches are true or false.
    """
    assert http_errors(
        'pool = "web"\nx_forwarded = "yes"\nforwarded = 1\nvia = "1.1 rproxy"\n'
        "preserve_host = 0"
    ) == [
        "c.toml: listeners[0].x_forwarded: must be true or false, got 'yes'",
        "c.toml: listeners[0].forwarded: must be true or false, got 1",
        "c.toml: listeners[0].via: must be true or false, got '1.1 rproxy'",
        "c.toml: listeners[0].preserve_host: must be true or false, got 0",
    ]


def test_sni_routes_to_a_pool_with_backend_tls_is_refused() -> None:
    """
    SNI routing passes the client's TLS through, so a route (or the default
    pool) whose pool would wrap it in TLS again is a config error.
    """
    text = """
[pools.web]
backends = ["127.0.0.1:1"]
tls = { verify = false }

[[listeners]]
name = "passthrough"
listen = "tcp:8443"
sni_routes = { "a.example.com" = "web" }
pool = "web"
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), "c.toml")
    assert caught.value.errors == [
        "c.toml: listeners[0].sni_routes: 'a.example.com' route's pool 'web' has "
        "tls, but SNI routing passes the client's own TLS through: the backends "
        "must terminate it",
        "c.toml: listeners[0].pool: the default route's pool 'web' has tls, but "
        "SNI routing passes the client's own TLS through: the backends must "
        "terminate it",
    ]


# PROXY protocol ---------------------------------------------------------------


def test_send_proxy_is_off_by_default_and_takes_a_version() -> None:
    """
    A pool sends no PROXY header unless C{send_proxy} names a version.
    """
    assert parse(POOL + LISTENER).pool("db").send_proxy is None
    config = parse(POOL + 'send_proxy = "v2"\n' + LISTENER)
    assert config.pool("db").send_proxy == "v2"


def test_bad_send_proxy_is_reported() -> None:
    """
    C{send_proxy} is "v1" or "v2".
    """
    assert errors(POOL + "send_proxy = true\n" + LISTENER) == [
        "c.toml: pools.db.send_proxy: must be one of 'v1', 'v2', got true"
    ]
    assert errors(POOL + 'send_proxy = "v3"\n' + LISTENER) == [
        "c.toml: pools.db.send_proxy: must be one of 'v1', 'v2', got 'v3'"
    ]


def test_accept_proxy_on_tcp_and_http_listeners() -> None:
    """
    Both kinds of listener take C{accept_proxy} with C{trusted_proxies}.
    """
    keys = 'accept_proxy = true\ntrusted_proxies = ["10.0.0.0/8"]\n'
    (tcp,) = parse(POOL + LISTENER + keys).listeners
    assert (tcp.accept_proxy, tcp.trusted_proxies) == (True, ("10.0.0.0/8",))
    (http,) = parse(HTTP_POOLS + HTTP_LISTENER + 'pool = "web"\n' + keys).listeners
    assert (http.accept_proxy, http.trusted_proxies) == (True, ("10.0.0.0/8",))
    assert parse(POOL + LISTENER).listeners[0].accept_proxy is False


def test_accept_proxy_without_trusted_proxies_is_an_error() -> None:
    """
    With no trusted proxy every connection would be refused: the error says
    so (and does not suggest trusting everyone).
    """
    assert errors(POOL + LISTENER + "accept_proxy = true\n") == [
        "c.toml: listeners[0].accept_proxy: needs trusted_proxies, the addresses "
        "of the proxies allowed to send PROXY headers: without them every "
        "connection would be refused"
    ]
    assert http_errors('pool = "web"\naccept_proxy = true\ntrusted_proxies = []') == [
        "c.toml: listeners[0].trusted_proxies: is empty, so with accept_proxy "
        "every connection would be refused; list the proxies that send PROXY "
        "headers"
    ]


def test_accept_proxy_from_anyone_must_be_spelled_out() -> None:
    """
    Trusting every address is allowed when written as networks.
    """
    keys = 'accept_proxy = true\ntrusted_proxies = ["0.0.0.0/0", "::/0"]\n'
    assert parse(POOL + LISTENER + keys).listeners[0].accept_proxy


def test_trusted_proxies_on_a_tcp_listener_needs_accept_proxy() -> None:
    """
    A tcp listener reads no forwarding headers, so its C{trusted_proxies}
    only mean something with C{accept_proxy}.
    """
    assert errors(POOL + LISTENER + 'trusted_proxies = ["10.0.0.1"]\n') == [
        "c.toml: listeners[0].trusted_proxies: on a tcp listener, only used "
        "with accept_proxy = true (a tcp listener reads no forwarding headers)"
    ]


def test_bad_accept_proxy_is_reported() -> None:
    """
    C{accept_proxy} is a boolean.
    """
    assert errors(POOL + LISTENER + 'accept_proxy = "yes"\n') == [
        "c.toml: listeners[0].accept_proxy: must be true or false, got 'yes'"
    ]


def test_listener_model_refuses_accept_proxy_without_trusted_proxies() -> None:
    """
    The model itself refuses what the file check reports.
    """
    with pytest.raises(ValueError, match="accept_proxy needs trusted_proxies"):
        ListenerConfig("a", "tcp:1", "db", accept_proxy=True)


def test_proxy_header_timeout() -> None:
    """
    C{[timeouts] proxy_header} is how long a PROXY header may take; 5 s by
    default.
    """
    assert parse(POOL + LISTENER).timeouts.proxy_header == 5.0
    config = parse(POOL + LISTENER + "[timeouts]\nproxy_header = 2\n")
    assert config.timeouts.proxy_header == 2.0


# Panic threshold --------------------------------------------------------------


def test_panic_threshold_is_half_by_default_and_a_fraction() -> None:
    """
    C{panic_threshold} is a fraction of the pool's backends, 0.5 unless set;
    0 and 1 are allowed.
    """
    assert parse(POOL + LISTENER).pool("db").panic_threshold == 0.5
    for text, value in (("0.25", 0.25), ("0", 0.0), ("1", 1.0)):
        config = parse(POOL + f"panic_threshold = {text}\n" + LISTENER)
        assert config.pool("db").panic_threshold == value


def test_bad_panic_threshold_is_reported_with_file_key_and_value() -> None:
    """
    A threshold outside 0-1, or not a number, is refused; a percentage gets
    the fraction to write instead.
    """
    assert errors(POOL + "panic_threshold = 50\n" + LISTENER) == [
        "c.toml: pools.db.panic_threshold: must be a fraction from 0 to 1, "
        "got 50; for 50% write 0.5"
    ]
    assert errors(POOL + "panic_threshold = -0.1\n" + LISTENER) == [
        "c.toml: pools.db.panic_threshold: must be a fraction from 0 to 1 "
        "(0.5: half), got -0.1"
    ]
    assert errors(POOL + 'panic_threshold = "50%"\n' + LISTENER) == [
        "c.toml: pools.db.panic_threshold: must be a fraction from 0 to 1 "
        "(0.5: half), got '50%'"
    ]
    assert errors(POOL + "panic_threshold = true\n" + LISTENER) == [
        "c.toml: pools.db.panic_threshold: must be a fraction from 0 to 1 "
        "(0.5: half), got true"
    ]
    assert errors(POOL + "panic_threshold = nan\n" + LISTENER) == [
        "c.toml: pools.db.panic_threshold: must be a fraction from 0 to 1 "
        "(0.5: half), got nan"
    ]


def test_every_balance_name_the_config_accepts_makes_a_balancer() -> None:
    """
    The config's strategy names are the balancers' own table: each one
    parses and makes its balancer.
    """
    for name in BALANCE_NAMES:
        config = parse(POOL + f'balance = "{name}"\n' + LISTENER)
        assert verifyObject(IBalancer, make_balancer(config.pool("db").balance))
    assert set(BALANCE_NAMES) == set(BALANCERS)
