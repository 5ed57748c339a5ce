"""update_pool: a live pool changed into what a new pool config says, keeping
the state of the backends that stay."""

from __future__ import annotations

import tomllib

from twisted.internet.task import Clock

from rproxy.backends import AdminState
from rproxy.balancing import LeastConnections, RoundRobin
from rproxy.config import PoolConfig, parse_config
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
    assert (pool.rise, pool.fall, pool.connect_tries, pool.hash_key) == (
        4,
        5,
        1,
        "header:X-User",
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
