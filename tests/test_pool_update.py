"""update_pool: a live pool changed into what a new pool config says, keeping
the state of the backends that stay."""

from __future__ import annotations

import tomllib

from twisted.internet.task import Clock

from rproxy.backends import AdminState
from rproxy.balancing import LeastConnections, RoundRobin
from rproxy.config import PoolConfig, parse_config
from rproxy.policy import HashKey, PoolPolicy
from rproxy.service import build_pool
from rproxy.service._pool_update import update_pool


def pool_config(body: str) -> PoolConfig:
    text = f"""
[pools.p]
{body}

[[listeners]]
name = "l"
protocol = "http"
listen = "tcp:0"
pool = "p"
"""
    return parse_config(tomllib.loads(text), "test.toml").pool("p")


OLD_BODY = """
backends = [
  { address = "127.0.0.1:8001", name = "a" },
  { address = "127.0.0.1:8002", name = "b", weight = 2 },
  { address = "127.0.0.1:8003", name = "c" },
]
"""
OLD = pool_config(OLD_BODY)


def test_backends_that_stay_keep_their_objects_health_and_counters() -> None:
    pool = build_pool(OLD, Clock())
    a = pool.get("a")
    a.connections_total = 7
    pool.mark_down(a, "test")
    new = pool_config(
        """
backends = [
  { address = "127.0.0.1:8001", name = "a" },
  { address = "127.0.0.1:8002", name = "b", weight = 5 },
  { address = "127.0.0.1:8004", name = "d" },
]
"""
    )
    stale = update_pool(pool, OLD, new, None)
    assert [b.name for b in pool.backends] == ["a", "b", "d"]
    assert pool.get("a") is a
    assert a.connections_total == 7 and not a.healthy
    assert pool.get("b").weight == 5
    assert [b.name for b in stale] == ["c"]
    assert pool.get("d").address == "127.0.0.1:8004"


def test_a_backend_whose_address_changed_is_a_new_backend() -> None:
    pool = build_pool(OLD, Clock())
    a = pool.get("a")
    a.connections_total = 3
    new = pool_config(
        """
backends = [
  { address = "127.0.0.1:9001", name = "a" },
  { address = "127.0.0.1:8002", name = "b", weight = 2 },
  { address = "127.0.0.1:8003", name = "c" },
]
"""
    )
    stale = update_pool(pool, OLD, new, None)
    assert stale == [a]
    replaced = pool.get("a")
    assert replaced is not a
    assert (replaced.port, replaced.connections_total) == (9001, 0)


def test_only_settings_the_file_changed_are_applied() -> None:
    """
    A weight or admin state an operator set at run time stays when the file
    did not change that backend; pool settings follow the file.
    """
    pool = build_pool(OLD, Clock())
    b = pool.get("b")
    pool.set_weight(b, 9)
    pool.set_admin(b, AdminState.DISABLED, "operator")
    new = pool_config(
        """
balance = "least_conn"
connect_tries = 1
hash_key = "header:X-User"
health = { rise = 4, fall = 5 }
backends = [
  { address = "127.0.0.1:8001", name = "a", max_connections = 10 },
  { address = "127.0.0.1:8002", name = "b", weight = 2 },
  { address = "127.0.0.1:8003", name = "c", backup = true },
]
"""
    )
    version = pool.version
    assert isinstance(pool.balancer, RoundRobin)
    assert update_pool(pool, OLD, new, None) == []
    assert (b.weight, b.admin) == (9, AdminState.DISABLED)
    assert pool.get("a").max_connections == 10
    assert pool.get("c").backup
    assert isinstance(pool.balancer, LeastConnections)
    assert (pool.rise, pool.fall) == (4, 5)
    assert (pool.policy.connect_tries, pool.policy.hash_key) == (
        1,
        HashKey(b"x-user"),
    )
    assert pool.version > version


def test_changed_tls_settings_apply_to_every_backend() -> None:
    pool = build_pool(OLD, Clock())
    made: list[str] = []

    def tls_for(host: str) -> object:
        made.append(host)
        return object()

    new = pool_config(OLD_BODY + "tls = { verify = false }\n")
    stale = update_pool(pool, OLD, new, tls_for)  # type: ignore[arg-type]
    assert sorted(b.name for b in stale) == ["a", "b", "c"]
    assert all(b.tls is not None for b in pool.backends)
    assert made == ["127.0.0.1"] * 3


def test_build_pool_makes_the_policy_from_the_pool_and_the_global_timeouts() -> None:
    """The policy holds the pool's settings, its timeouts over [timeouts]."""
    text = """
[timeouts]
connect = 7
idle = 90
response = 20

[pools.p]
backends = ["127.0.0.1:8001"]
connect_tries = 2
hash_key = "header:X-User"
send_proxy = "v2"
panic_threshold = 0.25
timeouts = { connect = 1.5 }
keep_alive = { max_idle = 4, idle_timeout = 3 }

[[listeners]]
name = "l"
protocol = "http"
listen = "tcp:0"
pool = "p"
"""
    config = parse_config(tomllib.loads(text), "test.toml").pool("p")
    assert build_pool(config, Clock()).policy == PoolPolicy(
        connect_timeout=1.5,
        response_timeout=20.0,
        idle_timeout=90.0,
        connect_tries=2,
        keep_alive_max_idle=4,
        keep_alive_timeout=3.0,
        send_proxy="v2",
        hash_key=HashKey(b"x-user"),
        panic_threshold=0.25,
    )


def test_reload_replaces_the_policy_whole() -> None:
    """update_pool swaps in a new policy object; the old one is untouched,
    so what began under it keeps it."""
    pool = build_pool(OLD, Clock())
    before = pool.policy
    new = pool_config(
        OLD_BODY + 'send_proxy = "v1"\npanic_threshold = 0\ntimeouts = { idle = 5 }\n'
    )
    update_pool(pool, OLD, new, None)
    assert before == PoolPolicy()
    assert pool.policy == PoolPolicy(
        send_proxy="v1", panic_threshold=0.0, idle_timeout=5.0
    )
